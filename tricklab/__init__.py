"""tricklab — the training tricks of deep learning, first-class.

``import tricklab as tl``: ``tl.Recipe``, ``tl.train(recipe) -> RunResult``, ``tl.tricks.*`` (usable on any
``nn.Module``/optimizer), ``tl.watch(model, optimizer)`` / ``tl.Doctor`` (the doctor in any loop),
``tl.load_study`` / ``tl.Study``, ``tl.load_recipe``, ``tl.Store``.

``import tricklab`` imports no torch (nor pydantic, numpy, rich): every public name but the errors and
``__version__`` is read lazily (``tricklab.lazy``, PEP 562), so ``tricklab --help`` starts at once and torch is
loaded by the first name that needs it. ``tl.train`` is the package ``tricklab.train`` itself, which is callable
(``tl.train(recipe)`` runs ``tricklab.train.run.train``; see ``tricklab/train/__init__.py``): no public name hides
a module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tricklab.errors import InputError, TricklabError
from tricklab.lazy import lazy_exports
from tricklab.provenance import __version__

if TYPE_CHECKING:   # for type checkers and editors; at run time the names below are read lazily
    from tricklab import train, tricks
    from tricklab.diagnose.doctor import Doctor
    from tricklab.diagnose.watch import watch
    from tricklab.recipe.io import load_recipe
    from tricklab.recipe.schema import Recipe
    from tricklab.store.sqlite import Store
    from tricklab.study.spec import StudySpec as Study
    from tricklab.study.spec import load_study
    from tricklab.train.events import Callback, TrainState
    from tricklab.train.run import RunResult
    from tricklab.train.trainer import Trainer

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

__getattr__, __dir__ = lazy_exports(__name__, {
    "Callback": "tricklab.train.events:Callback",
    "Doctor": "tricklab.diagnose.doctor:Doctor",
    "Recipe": "tricklab.recipe.schema:Recipe",
    "RunResult": "tricklab.train.run:RunResult",
    "Store": "tricklab.store.sqlite:Store",
    "Study": "tricklab.study.spec:StudySpec",
    "TrainState": "tricklab.train.events:TrainState",
    "Trainer": "tricklab.train.trainer:Trainer",
    "load_recipe": "tricklab.recipe.io:load_recipe",
    "load_study": "tricklab.study.spec:load_study",
    "train": "tricklab.train",            # the package, callable: tl.train(recipe) -> RunResult
    "tricks": "tricklab.tricks",
    "watch": "tricklab.diagnose.watch:watch",
})
