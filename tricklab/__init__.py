"""tricklab — the training tricks of deep learning, first-class.

``import tricklab as tl``: ``tl.Recipe``, ``tl.train(recipe) -> RunResult``, ``tl.tricks.*`` (usable on any
``nn.Module``/optimizer), ``tl.watch(model, optimizer)`` / ``tl.Doctor`` (the doctor in any loop),
``tl.load_study`` / ``tl.Study``, ``tl.load_recipe``, ``tl.Store``.
"""

from tricklab import tricks
from tricklab.diagnose.doctor import Doctor
from tricklab.diagnose.watch import watch
from tricklab.errors import InputError, TricklabError
from tricklab.provenance import __version__
from tricklab.recipe import Recipe, load_recipe
from tricklab.store import Store
from tricklab.study import StudySpec as Study
from tricklab.study import load_study
from tricklab.train import Callback, RunResult, Trainer, TrainState, train

__all__ = [
    "Callback",
    "Doctor",
    "InputError",
    "Recipe",
    "RunResult",
    "Store",
    "Study",
    "TrainState",
    "Trainer",
    "TricklabError",
    "__version__",
    "load_recipe",
    "load_study",
    "train",
    "tricks",
    "watch",
]
