"""Which recipes a population trains: the recipe keys the population engine honours, as an allow-list.

Every key of the recipe is on one of three lists (``tests/test_population_support.py`` walks the schema and fails
on a key that is on none, so a key added to the recipe is trained alone until someone decides otherwise):

- ``PER_MEMBER``: each member trains with its own value, exactly as ``tricklab.train.train`` would (its seed,
  init, learning rate and schedule, weight decay, momentum/betas/eps, dropout rate, clipping threshold, early
  stopping, number of epochs, name);
- ``SHARED``: one value for the whole population — the data, the architecture, the optimizer's rule, the clipping
  rule, the device. Recipes that differ here go to different populations (``population_key``). Where the engine
  implements only some values of a shared key (``SHARED_VALUES``: the stacked architectures, the norms a stack
  can run), a recipe with another value is trained alone;
- ``TRAINED_ALONE``: keys the engine does not implement (user models and datasets, weight averaging and
  ensembles, augmentation, mixup, label smoothing, mixed precision, gradient accumulation, best checkpoints,
  evaluations inside an epoch). A recipe whose value of such a key — or of any key on neither of the first two
  lists — differs from the default is trained on its own (``population_unsupported`` names the key).

A dotted name ending in ``.*`` stands for every key of that section.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from tricklab.recipe import Recipe, recipe_to_dict
from tricklab.tricks.clipping import CLIPPERS

PER_MEMBER: tuple[str, ...] = (
    "name", "seed", "epochs", "init.*", "schedule.*", "early_stopping.*", "model.dropout",
    "optimizer.lr", "optimizer.weight_decay", "optimizer.decay", "optimizer.momentum", "optimizer.betas",
    "optimizer.eps", "clip.threshold",
)
"""Keys each member keeps as its own."""

SHARED: tuple[str, ...] = (
    "device", "data.name", "data.path", "data.scale", "data.val_fraction", "data.test_fraction", "data.batch_size",
    "data.size", "data.train_subset", "data.split_seed", "data.label_column", "data.variant", "model.name", "model.depth", "model.width", "model.activation", "model.norm",
    "optimizer.name", "clip.mode",
)
"""Keys a population shares (its members' recipes agree on them; ``population_key``)."""

SHARED_VALUES: dict[str, frozenset[str]] = {
    "model.name": frozenset({"mlp", "cnn", "cnn_flatten"}),   # resnet, inception: a forward pass of their own
    "model.norm": frozenset({"batch", "layer", "group", "none"}),   # weight norm reparametrises the weights
}
"""The values the engine implements of a shared key that has others (canonical registry names)."""

TRAINED_ALONE: tuple[str, ...] = (
    "model.python", "averaging.*", "data.python", "data.augment", "data.augment_shift", "data.augment_noise",
    "data.mixup", "loss.*", "precision", "accumulate", "checkpoint.*",
    "evals_per_epoch",   # the loop has the cadence (tricklab.train.loop); the population's learner does not set it
)
"""Keys the engine does not implement: a recipe that sets one (away from its default) is trained alone."""

ALLOWED = PER_MEMBER + SHARED


def covers(patterns: tuple[str, ...], key: str) -> bool:
    """Whether ``key`` (dotted) is one of ``patterns`` or in a section one of them names with ``.*``."""
    return any(key == p or (p.endswith(".*") and key.startswith(p[:-1])) for p in patterns)


def flat_recipe(recipe: Recipe) -> dict[str, Any]:
    """The recipe as dotted key → value (``{"model.width": 32, "optimizer.betas": [0.9, 0.999], ...}``)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, d: dict[str, Any]) -> None:
        for key, value in d.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                out[prefix + key] = value

    walk("", recipe_to_dict(recipe))
    return out


@functools.cache
def _defaults() -> dict[str, Any]:
    return flat_recipe(Recipe())


def population_unsupported(recipe: Recipe) -> str | None:
    """The first recipe key that keeps ``recipe`` out of a population (None when it can join one, as far as the
    recipe tells; ``StackedNet`` may still refuse an architecture with ``NotStackable``): a key off the
    allow-list set away from its default, or a shared key with a value the engine does not implement."""
    if recipe.optimizer.lr == "auto":   # each trial runs its own range test first (tricklab.train.lr_search)
        return "optimizer.lr"
    defaults = _defaults()
    for key, value in flat_recipe(recipe).items():
        if not covers(ALLOWED, key):
            if value != defaults.get(key):
                return key
        elif key in SHARED_VALUES and value not in SHARED_VALUES[key]:
            return key
    return None


def population_key(recipe: Recipe) -> str:
    """Recipes with equal keys can share one population: every key but the per-member ones."""
    shared = {key: value for key, value in flat_recipe(recipe).items() if not covers(PER_MEMBER, key)}
    mode = CLIPPERS.canonical(shared["clip.mode"])
    shared["clip.mode"] = "norm" if mode == "none" else mode   # none = norm with θ = ∞ (factor exactly 1)
    return json.dumps(shared, sort_keys=True)
