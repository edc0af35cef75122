"""The core's end-to-end promises on real data (MNIST-1D generated locally): accuracy of the default recipe
and of its MLP variant, the LR range test's suggestion. Accuracy only — speed lives in bench/."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from tricklab.models.registry import DEFAULT_WIDTH, build_model
from tricklab.recipe import Recipe
from tricklab.train import train
from tricklab.train.run import build_recipe_model, prepare_data
from tricklab.tricks.lr_find import lr_find
from tricklab.tricks.optimizers import build_optimizer


@pytest.mark.slow
def test_default_recipe_reaches_95_percent_on_mnist1d(tmp_path):
    r = train(None, runs_root=tmp_path)
    assert r.status == "completed" and r.epochs == 15
    assert r.data["train"] == 3600 and r.data["test"] == 1000  # the paper's 4000/1000 split, 10% held out
    assert r.test_accuracy >= 0.95  # paper's CNN: 0.94
    assert r.alarms == []


@pytest.mark.slow
def test_mlp_variant_reaches_65_percent_on_mnist1d(tmp_path):
    r = train(None, overrides=["model.name=mlp"], runs_root=tmp_path)
    assert r.status == "completed"
    assert r.test_accuracy >= 0.65  # paper's MLP: 0.68


def test_width_default_depends_on_the_architecture():
    mlp = build_model("mlp", (1, 40), 10)
    cnn = build_model("cnn", (1, 40), 10)
    first_linear = next(m for m in mlp.modules() if isinstance(m, torch.nn.Linear))
    first_conv = next(m for m in cnn.modules() if isinstance(m, torch.nn.Conv1d))
    assert first_linear.out_features == DEFAULT_WIDTH["mlp"] == 256
    assert first_conv.out_channels == DEFAULT_WIDTH["cnn"] == 32


def test_lr_find_suggests_a_sensible_lr_on_mnist1d():
    recipe = Recipe()
    splits = prepare_data(recipe)
    model = build_recipe_model(recipe, splits, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            idx = torch.randint(0, len(splits.x_train), (64,), generator=gen)
            yield splits.x_train[idx], splits.y_train[idx]

    result = lr_find(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), itertools.islice(batches(), 200),
                     lambda params, lr: build_optimizer("adam", params, lr=lr), lr_min=1e-6, lr_max=10.0,
                     num_steps=100)
    assert 1e-4 <= result.suggestion <= 1.0
    assert len(result.lrs) == len(result.losses) > 10
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
