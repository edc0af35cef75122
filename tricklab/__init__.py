"""tricklab — the training tricks of deep learning, first-class.

``import tricklab as tl``: ``tl.Recipe``, ``tl.train(recipe) -> RunResult``, ``tl.tricks.*`` (usable on any
``nn.Module``/optimizer), ``tl.load_recipe``, ``tl.Store``.
"""

from tricklab import tricks
from tricklab.errors import InputError, TricklabError
from tricklab.provenance import __version__
from tricklab.recipe import Recipe, load_recipe
from tricklab.store import Store
from tricklab.train import Callback, RunResult, Trainer, TrainState, train

__all__ = [
    "Callback",
    "InputError",
    "Recipe",
    "RunResult",
    "Store",
    "TrainState",
    "Trainer",
    "TricklabError",
    "__version__",
    "load_recipe",
    "train",
    "tricks",
]
