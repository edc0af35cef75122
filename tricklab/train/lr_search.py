"""The learning-rate range test on a recipe: the recipe's model, optimizer and training data, nothing trained.

``tricks.lr_find`` is the test itself (Smith 2017); this module feeds it what a recipe describes — the model
built and initialised as a run of the recipe would build it (same seed), the recipe's optimizer with its
parameter groups, the training split in seeded random batches of the recipe's batch size — and writes what it
found beside a run (``lr_find.json`` and ``lr_find.png``, the loss against η with the suggestion marked). Used
by ``tricklab lr-find`` and by ``optimizer.lr: auto``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.fsutil import atomic_write, atomic_write_text
from tricklab.recipe.schema import Recipe
from tricklab.tricks.lr_find import LRFindResult, lr_find

LR_FIND_JSON = "lr_find.json"
LR_FIND_PNG = "lr_find.png"
LR_MIN, LR_MAX, STEPS = 1e-7, 10.0, 100
"""fastai's range (1e-7 to 10) and 100 steps: a few seconds for the built-in models on a CPU."""


ModelBuilder = Callable[[Recipe, Any, int], nn.Module]
OptimizerBuilder = Callable[[Recipe, nn.Module], torch.optim.Optimizer]


def find_lr(recipe: Recipe, splits: Any, build_model: ModelBuilder, build_optimizer: OptimizerBuilder, *,
            lr_min: float = LR_MIN, lr_max: float = LR_MAX, num_steps: int = STEPS) -> LRFindResult:
    """Run the range test for ``recipe`` on ``splits`` (``prepare_data(recipe)``) with the model and optimizer a
    run of the recipe builds (``build_model(recipe, splits, seed)``, ``build_optimizer(recipe, model)``: the
    run's ``build_recipe_model`` and ``build_recipe_optimizer``). The recipe's seed fixes the model's initial
    weights and the batches. Nothing is trained: the test restores the model it used."""
    model = build_model(recipe, splits, recipe.seed)

    def optimizer_factory(params: Any, lr: float) -> torch.optim.Optimizer:
        return build_optimizer(recipe.model_copy(update={"optimizer": recipe.optimizer.model_copy(
            update={"lr": lr})}), model)

    return lr_find(model, _loss, _batches(splits, recipe.data.batch_size, recipe.seed), optimizer_factory,
                   lr_min=lr_min, lr_max=lr_max, num_steps=num_steps)


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def _batches(splits: Any, batch_size: int, seed: int) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """Seeded random batches of the training split: tensors directly, a user's ``Dataset``/``DataLoader`` through
    a loader (cycled)."""
    if hasattr(splits, "x_train"):
        x, y = splits.x_train, splits.y_train
        gen = torch.Generator().manual_seed(seed)
        size = min(batch_size, len(x))

        def tensor_batch() -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.randperm(len(x), generator=gen)[:size].to(x.device)
            return x[idx], y[idx]

        return tensor_batch
    stream = _loader_batches(splits, batch_size, seed)
    return lambda: next(stream)


def _loader_batches(splits: Any, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from torch.utils.data import DataLoader

    data = splits.train_data()
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    while True:
        empty = True
        for x, y in loader:
            empty = False
            yield x.to(splits.device), y.to(splits.device)
        if empty:
            raise ValueError("lr_find: the training data holds no batch")


def write_lr_find(result: LRFindResult, out_dir: str | Path, *, title: str = "") -> dict[str, Any]:
    """``lr_find.json`` (the curve and the suggestion) and ``lr_find.png`` in ``out_dir``; returns the JSON."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"suggestion": result.suggestion, "diverged": result.diverged, "lrs": result.lrs,
               "losses": [v if v == v and abs(v) != float("inf") else None for v in result.losses],
               "raw_losses": [v if v == v and abs(v) != float("inf") else None for v in result.raw_losses]}
    atomic_write_text(out / LR_FIND_JSON, json.dumps(payload, indent=1) + "\n")
    png = result.png(title=title)
    atomic_write(out / LR_FIND_PNG, lambda f: f.write(png))
    return payload
