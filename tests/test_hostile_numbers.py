"""Hostile numbers and sizes (issue 14): numbers checked against what they become, and runs that cannot fit.

- Floats that are finite in float64 but ∞ or 0 (or another value past their bound) in the float32 the tensors
  hold, for every float field of the recipe, from ``--set`` and from a recipe file.
- Counts of epochs that overflow the conversion to steps; seeds and sizes beyond int64.
- Booleans where numbers belong (YAML's ``true``/``yes``/``on``), for every kind of numeric field.
- A model, data set or batch too big for the machine (``tricklab.train.preflight``), and batch norm on batches of
  one example.

Each case runs through the harness of ``tests/hostile.py``: exit 2, one short line naming the field, nothing
written. Preflight sees a machine of ``MEMORY`` bytes (patched), so which field a case blames does not depend on
the machine that runs the suite.
"""

from __future__ import annotations

import pytest

from tests.hostile import Case, check
from tricklab.errors import InputError
from tricklab.recipe import load_recipe, recipe_from_dict
from tricklab.recipe.schema import FLOAT32_TINY, as_float32
from tricklab.train import preflight as preflight_module
from tricklab.train.preflight import format_bytes, machine_memory, preflight

MEMORY = 16 * 2**30  # the machine preflight sees in these tests: 16 GiB, so a run may be estimated at 8 GiB


def sets(*pairs: str) -> list[str]:
    """``train --set A --set B ...``"""
    return ["train", *(arg for pair in pairs for arg in ("--set", pair))]


def recipe(text: str, *pairs: str) -> dict:
    """Keyword arguments of a case that trains the recipe file ``r.yaml`` holding ``text``."""
    return {"argv": ["train", "{tmp}/r.yaml", *(arg for pair in pairs for arg in ("--set", pair))],
            "files": {"r.yaml": text}}


SPIRALS = ("data.name=synthetic", "model.name=mlp")

CASES = [
    # -- floats that float32 cannot hold: too large (∞), too small (0 or a denormal), or past a bound once rounded
    Case("set-final-lr-1e308", sets("schedule.final_lr=1e308"), "schedule.final_lr"),
    Case("file-final-lr-1e308", field="schedule.final_lr", **recipe("schedule: {name: cosine, final_lr: 1.0e+308}\n")),
    Case("set-lr-1e300", sets("optimizer.lr=1e300"), "optimizer.lr"),
    Case("file-lr-1e-300", field="optimizer.lr", **recipe("optimizer: {lr: 1.0e-300}\n")),
    Case("set-weight-decay-denormal", sets("optimizer.weight_decay=1e-45"), "optimizer.weight_decay"),
    Case("file-eps-1e-50", field="optimizer.eps", **recipe("optimizer: {eps: 1.0e-50}\n")),
    Case("set-eps-1e300", sets("optimizer.eps=1e300"), "optimizer.eps"),
    Case("set-momentum-rounds-to-1", sets("optimizer.name=momentum", "optimizer.momentum=0.99999999"),
         "optimizer.momentum"),
    Case("file-beta2-rounds-to-1", field="optimizer.betas", **recipe("optimizer: {betas: [0.9, 0.9999999999]}\n")),
    Case("set-clip-threshold-1e39", sets("clip.mode=norm", "clip.threshold=1e39"), "clip.threshold"),
    Case("file-clip-threshold-1e-40", field="clip.threshold", **recipe("clip: {mode: value, threshold: 1.0e-40}\n")),
    Case("set-ema-decay-rounds-to-1", sets("averaging.mode=ema", "averaging.decay=0.999999999"), "averaging.decay"),
    Case("set-min-delta-1e39", sets("early_stopping.patience=3", "early_stopping.min_delta=1e39"),
         "early_stopping.min_delta"),
    Case("set-gamma-1e-39", sets("schedule.name=exponential", "schedule.gamma=1e-39"), "schedule.gamma"),
    Case("set-plateau-factor-rounds-to-1", sets("schedule.name=plateau", "schedule.factor=0.999999999"),
         "schedule.factor"),
    Case("set-dropout-rounds-to-1", sets("model.dropout=0.99999999"), "model.dropout"),
    Case("file-val-fraction-1e-40", field="data.val_fraction", **recipe("data: {val_fraction: 1.0e-40}\n")),
    # -- counts: epochs that become steps, seeds and sizes that become int64
    Case("set-warmup-1e308", sets("schedule.warmup_epochs=1e308"), "schedule.warmup_epochs"),
    Case("file-warmup-1e308", field="schedule.warmup_epochs", **recipe("schedule: {warmup_epochs: 1.0e+308}\n")),
    Case("set-step-size-1e30", sets("schedule.name=step", "schedule.step_size=" + "1" + "0" * 30),
         "schedule.step_size"),
    Case("set-plateau-patience-1e20", sets("schedule.name=plateau", "schedule.patience=" + "1" + "0" * 20),
         "schedule.patience"),
    Case("file-early-stopping-patience-2e19", field="early_stopping.patience",
         **recipe("early_stopping: {patience: 20000000000000000000}\n")),
    Case("set-split-seed-2-64", sets("data.split_seed=18446744073709551616"), "data.split_seed"),
    Case("set-train-subset-2-64", sets("data.train_subset=18446744073709551616"), "data.train_subset"),
    # -- booleans where numbers belong, one of each kind of numeric field
    Case("set-lr-true", sets("optimizer.lr=true"), "optimizer.lr"),
    Case("file-epochs-yes", field="epochs", **recipe("epochs: yes\n")),
    Case("set-batch-size-true", sets("data.batch_size=true"), "data.batch_size"),
    Case("file-depth-on", field="model.depth", **recipe("model: {depth: on}\n")),
    Case("set-width-false", sets("model.width=false"), "model.width"),
    Case("set-betas-with-a-bool", sets("optimizer.betas=[true, 0.9]"), "optimizer.betas"),
    Case("file-seed-true", field="seed", **recipe("seed: true\n")),
    Case("set-label-column-true", sets("data.label_column=true"), "data.label_column"),
    Case("set-warmup-yes", sets("schedule.warmup_epochs=yes"), "schedule.warmup_epochs"),
    Case("set-ensemble-k-true", sets("averaging.k=true"), "averaging.k"),
    Case("set-size-true", sets("data.size=true"), "data.size"),
    Case("file-clip-threshold-true", field="clip.threshold", **recipe("clip: {mode: norm, threshold: true}\n")),
    Case("set-early-stopping-patience-on", sets("early_stopping.patience=on"), "early_stopping.patience"),
    Case("set-dropout-false", sets("model.dropout=false"), "model.dropout"),
    # -- runs that cannot fit in memory (MEMORY: 16 GiB), refused before any data is made
    Case("mlp-width-65536", sets("model.name=mlp", "model.width=65536", "model.depth=100"), "model.width"),
    Case("mlp-depth-1000", sets("model.name=mlp", "model.width=2048", "model.depth=1000"), "model.depth"),
    Case("file-cnn-width-65536", field="model.width", **recipe("model: {name: cnn, width: 65536, depth: 8}\n")),
    Case("resnet-images-width-16384", sets("data.name=digits", "model.name=resnet", "model.width=16384"),
         "model.width"),
    Case("ensemble-of-100-wide-mlps", sets("model.name=mlp", "model.width=8192", "averaging.mode=ensemble",
                                          "averaging.k=100"), "model.width"),
    Case("synthetic-size-1e12", sets(*SPIRALS, "data.size=1000000000000"), "data.size"),
    Case("mnist1d-size-1e11", sets("data.size=100000000000"), "data.size"),
    Case("batch-of-a-million", sets("data.size=10000000", "data.batch_size=1000000"), "data.batch_size"),
    Case("csv-mlp-width-65536", sets("data.name=csv", "data.path={tmp}/d.csv", "model.name=mlp",
                                     "model.width=65536", "model.depth=100"), "model.width",
         files={"d.csv": "a,b,label\n1,2,0\n3,4,1\n"}),
    # -- batch norm on batches of one example
    Case("train-subset-1-batch-norm", sets(*SPIRALS, "data.train_subset=1"), "data.train_subset"),
    Case("batch-size-1-batch-norm-mlp", sets(*SPIRALS, "data.batch_size=1"), "data.batch_size"),
    Case("batch-size-1-cnn-pooled-to-one-position", sets("data.name=synthetic", "model.name=cnn",
                                                         "data.batch_size=1"), "data.batch_size"),
    Case("train-subset-1-resnet-vectors", sets("data.name=synthetic", "model.name=resnet", "data.train_subset=1"),
         "data.train_subset"),
    Case("csv-batch-size-1-mlp", sets("data.name=csv", "data.path={tmp}/d.csv", "model.name=mlp",
                                      "data.batch_size=1"), "data.batch_size",
         files={"d.csv": "a,b,label\n1,2,0\n3,4,1\n"}),
]


@pytest.fixture
def machine_of_16_gib(monkeypatch):
    monkeypatch.setattr(preflight_module, "machine_memory", lambda: MEMORY)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_numbers_exit_2_naming_the_field(case, tmp_path, monkeypatch, capsys, machine_of_16_gib):
    check(case, tmp_path, monkeypatch, capsys)


# -- ordinary tests of the rules ----------------------------------------------------------------------------------
def test_float32_rounding_matches_torch():
    torch = pytest.importorskip("torch")
    for value in (0.1, 1e-8, 0.99999999, 3.4028235e38, 3.5e38, 1e-40, 1e-46, -2.5e-39, 1e300):
        assert as_float32(value) == torch.tensor(value, dtype=torch.float32).item()
    assert FLOAT32_TINY == torch.finfo(torch.float32).tiny


@pytest.mark.parametrize("field, value", [("optimizer.eps", 1.2e-38), ("optimizer.momentum", 0.9999999),
                                          ("clip.threshold", 3.4e38), ("optimizer.weight_decay", 0.0),
                                          ("schedule.warmup_epochs", 100_000), ("schedule.final_lr", 1e6)])
def test_values_at_the_edge_of_float32_and_of_the_bounds_are_kept(field, value):
    section, key = field.split(".")
    rec = recipe_from_dict({section: {key: value}})
    assert getattr(getattr(rec, section), key) == value


def test_integers_and_numeric_text_are_still_numbers():
    """Refusing booleans must not refuse what pydantic rightly converts: 1 for a float, "0.1" from a YAML string."""
    rec = recipe_from_dict({"optimizer": {"lr": 1, "eps": "1e-8"}, "epochs": 3.0, "data": {"label_column": 2}})
    assert rec.optimizer.lr == 1.0 and rec.optimizer.eps == 1e-8 and rec.epochs == 3 and rec.data.label_column == 2


def test_a_warmup_longer_than_the_run_is_allowed():
    """A study that varies epochs with one warm-up must not be refused in its short arms (schema's docstring)."""
    rec = load_recipe(None, ["epochs=2", "schedule.warmup_epochs=5"])
    assert rec.schedule.warmup_epochs == 5


def test_preflight_passes_every_ordinary_recipe(machine_of_16_gib):
    for overrides in ([], ["model.name=mlp"], ["model.name=resnet", "model.depth=20"], ["model.name=inception"],
                      ["data.name=digits", "model.name=cnn"], ["data.name=synthetic", "data.variant=teacher"],
                      ["model.name=cnn", "data.batch_size=1"],  # mnist1d's CNN: batch norm sees 5+ positions
                      ["data.name=synthetic", "model.name=mlp", "model.norm=layer", "data.batch_size=1"],
                      ["averaging.mode=ensemble", "averaging.k=5"],
                      ["data.name=csv", "data.path=x.csv", "model.name=cnn", "data.batch_size=1"]):
        preflight(load_recipe(None, overrides))


def test_the_refusal_says_how_much_and_of_what(machine_of_16_gib):
    with pytest.raises(InputError) as err:
        preflight(load_recipe(None, ["model.name=mlp", "model.width=65536", "model.depth=100"]))
    message = str(err.value)
    assert "10.8 TiB" in message and "16.0 GiB" in message and "425,224,699,914 parameters" in message
    assert err.value.allowed == "a run estimated at up to 8.0 GiB: a smaller model.width"


def test_the_machine_memory_is_read():
    memory = machine_memory()
    assert memory is None or 2**26 < memory < 2**60
    assert format_bytes(512) == "512 B" and format_bytes(1.5 * 2**30) == "1.5 GiB"
