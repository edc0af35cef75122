"""The tricks themselves, one module each (``tl.tricks.clipping``, ``tl.tricks.schedules``, ...): usable on any
``nn.Module`` and optimizer, each with its formula and source in its docstring. Depends on torch only.

The modules are imported on first use, so ``import tricklab`` stays torch-free."""

from tricklab.lazy import lazy_exports

MODULES = ("accumulation", "activations", "augment", "averaging", "clipping", "early_stopping", "init", "lr_find",
           "monitor", "norm", "optimizers", "precision", "regularization", "scaling", "schedules", "soft_targets")
__all__ = list(MODULES)
__getattr__, __dir__ = lazy_exports(__name__, {name: f"{__name__}.{name}" for name in MODULES})
