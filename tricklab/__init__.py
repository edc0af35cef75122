"""tricklab — the training tricks of deep learning, first-class.

``import tricklab as tl``:

- runs: ``tl.Recipe``, ``tl.load_recipe``, ``tl.train(recipe) -> RunResult``, ``tl.Store``, ``tl.load_study`` /
  ``tl.Study``;
- the Trainer: ``tl.Trainer``, ``tl.Callback`` / ``tl.TrainState`` (epochs numbered from 1, as in the history and
  the CLI) and its trick callbacks ``tl.EarlyStoppingCallback``, ``tl.WeightAveraging``, ``tl.GradientClipping``,
  ``tl.PlateauSchedule``, ``tl.DoctorCallback``;
- the tricks on any ``nn.Module``/optimizer, in any loop: ``tl.EarlyStopping``, ``tl.EMA``, ``tl.SWA``,
  ``tl.Ensemble``, ``tl.lr_find``, ``tl.clip_gradients_`` / ``tl.global_grad_norm``, the schedules
  (``tl.constant``, ``tl.exponential``, ``tl.step_decay``, ``tl.cosine``, ``tl.warmup``, ``tl.one_cycle``,
  ``tl.Plateau``, ``tl.apply_lr``; every length in optimiser steps, ``tl.epochs_to_steps`` converts epochs),
  ``tl.watch(model, optimizer)`` / ``tl.Doctor`` (the doctor in any loop), and every module as ``tl.tricks.*``.

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
    from tricklab.diagnose.trainer_callback import DoctorCallback
    from tricklab.diagnose.watch import watch
    from tricklab.recipe.io import load_recipe
    from tricklab.recipe.schema import Recipe
    from tricklab.store.sqlite import Store
    from tricklab.study.spec import StudySpec as Study
    from tricklab.study.spec import load_study
    from tricklab.train.callbacks import EarlyStoppingCallback, GradientClipping, PlateauSchedule, WeightAveraging
    from tricklab.train.events import Callback, TrainState
    from tricklab.train.run import RunResult
    from tricklab.train.trainer import Trainer
    from tricklab.tricks.averaging import EMA, SWA, Ensemble
    from tricklab.tricks.clipping import clip_gradients_, global_grad_norm
    from tricklab.tricks.early_stopping import EarlyStopping
    from tricklab.tricks.lr_find import lr_find
    from tricklab.tricks.schedules import (
        Plateau,
        apply_lr,
        constant,
        cosine,
        epochs_to_steps,
        exponential,
        one_cycle,
        step_decay,
        warmup,
    )

_SCHEDULES = ("Plateau", "apply_lr", "constant", "cosine", "epochs_to_steps", "exponential", "one_cycle", "step_decay",
              "warmup")
_EXPORTS = {
    "Callback": "tricklab.train.events:Callback",
    "Doctor": "tricklab.diagnose.doctor:Doctor",
    "DoctorCallback": "tricklab.diagnose.trainer_callback:DoctorCallback",
    "EMA": "tricklab.tricks.averaging:EMA",
    "EarlyStopping": "tricklab.tricks.early_stopping:EarlyStopping",
    "EarlyStoppingCallback": "tricklab.train.callbacks:EarlyStoppingCallback",
    "Ensemble": "tricklab.tricks.averaging:Ensemble",
    "GradientClipping": "tricklab.train.callbacks:GradientClipping",
    "PlateauSchedule": "tricklab.train.callbacks:PlateauSchedule",
    "Recipe": "tricklab.recipe.schema:Recipe",
    "RunResult": "tricklab.train.run:RunResult",
    "SWA": "tricklab.tricks.averaging:SWA",
    "Store": "tricklab.store.sqlite:Store",
    "Study": "tricklab.study.spec:StudySpec",
    "TrainState": "tricklab.train.events:TrainState",
    "Trainer": "tricklab.train.trainer:Trainer",
    "WeightAveraging": "tricklab.train.callbacks:WeightAveraging",
    "clip_gradients_": "tricklab.tricks.clipping:clip_gradients_",
    "global_grad_norm": "tricklab.tricks.clipping:global_grad_norm",
    "load_recipe": "tricklab.recipe.io:load_recipe",
    "load_study": "tricklab.study.spec:load_study",
    "lr_find": "tricklab.tricks.lr_find:lr_find",
    "train": "tricklab.train",            # the package, callable: tl.train(recipe) -> RunResult
    "tricks": "tricklab.tricks",
    "watch": "tricklab.diagnose.watch:watch",
    **{name: f"tricklab.tricks.schedules:{name}" for name in _SCHEDULES},
}

__all__ = [
    "Callback",
    "Doctor",
    "DoctorCallback",
    "EMA",
    "EarlyStopping",
    "EarlyStoppingCallback",
    "Ensemble",
    "GradientClipping",
    "InputError",
    "Plateau",
    "PlateauSchedule",
    "Recipe",
    "RunResult",
    "SWA",
    "Store",
    "Study",
    "TrainState",
    "Trainer",
    "TricklabError",
    "WeightAveraging",
    "__version__",
    "apply_lr",
    "clip_gradients_",
    "constant",
    "cosine",
    "epochs_to_steps",
    "exponential",
    "global_grad_norm",
    "load_recipe",
    "load_study",
    "lr_find",
    "one_cycle",
    "step_decay",
    "train",
    "tricks",
    "warmup",
    "watch",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
