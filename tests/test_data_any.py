"""Any data (issue 19 item 1): the Trainer takes Datasets and DataLoaders (map-style and iterable, any collate,
workers) in the same seeded order as its tensor fast path; ``data.python`` names a user's datasets in a recipe."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from tests.conftest import last_json
from tricklab.cli.main import main
from tricklab.data.loader import DataBatches
from tricklab.train import Trainer, train
from tricklab.train.loop import batches_per_epoch, data_order_generator, epoch_order


def _toy(n=300, d=8, c=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x, x[:, :c].argmax(1)


X, Y = _toy()
TRAIN, VAL = (X[:240], Y[:240]), (X[240:], Y[240:])


def _fit(train_data, val_data, seed=3, epochs=3, **kwargs):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    trainer = Trainer(model, torch.optim.AdamW(model.parameters(), lr=0.01), train_data, val_data, epochs=epochs,
                      batch_size=32, seed=seed, **kwargs)
    state = trainer.fit()
    return [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in state.history], model


class Pairs(Dataset):
    """A map-style dataset that is not a TensorDataset: examples built one by one."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i].clone(), int(self.y[i])


def test_datasets_and_loaders_train_exactly_as_the_tensor_path():
    """Same seed, same batches: a TensorDataset, a map-style dataset of Python ints, a shuffling DataLoader (its
    order replaced by the run's) and a dataset read by 2 worker processes all give the tensor path's history and
    weights, bit for bit; a validation loader in batches of 7 agrees up to summation order."""
    reference, ref_model = _fit(TRAIN, VAL)
    for data, kwargs in ((TensorDataset(*TRAIN), {}), (Pairs(*TRAIN), {}),
                         (DataLoader(TensorDataset(*TRAIN), batch_size=32, shuffle=True), {}),
                         (TensorDataset(*TRAIN), {"num_workers": 2})):
        history, model = _fit(data, TensorDataset(*VAL), **kwargs)
        assert history == reference, (type(data).__name__, kwargs)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()))
    history, _ = _fit(TensorDataset(*TRAIN), DataLoader(TensorDataset(*VAL), batch_size=7))
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in reference]
    assert [h["val_loss"] for h in history] == pytest.approx([h["val_loss"] for h in reference], rel=1e-6)
    other, _ = _fit(TensorDataset(*TRAIN), None, seed=4)
    assert other[-1]["train_loss"] != reference[-1]["train_loss"]   # the seed orders the data


class Stream(IterableDataset):
    """An iterable dataset without a length that shuffles with torch's global generator (the run's)."""

    def __init__(self, x, y, bad_at=None):
        self.x, self.y, self.bad_at = x, y, bad_at

    def __iter__(self):
        for i in torch.randperm(len(self.x)).tolist():
            x = self.x[i].clone()
            if self.bad_at is not None and i == self.bad_at:
                x.fill_(float("inf"))
            yield x, self.y[i]


def _with_weights(examples):
    x = torch.stack([e[0] for e in examples])
    y = torch.tensor([int(e[1]) for e in examples])
    return x, y, torch.ones(len(y))   # a third item (sample weights) is ignored


def test_an_iterable_dataset_of_unknown_length_trains_deterministically_per_seed():
    """Batches until the stream ends (steps unknown beforehand), a custom collate returning (x, y, weights), the
    same history for the same seed, another for another seed."""
    a, _ = _fit(DataLoader(Stream(*TRAIN), batch_size=32, collate_fn=_with_weights), VAL)
    b, _ = _fit(DataLoader(Stream(*TRAIN), batch_size=32, collate_fn=_with_weights), VAL)
    assert a == b and a[-1]["step"] == 3 * math.ceil(240 / 32)
    torch.manual_seed(99)
    c, _ = _fit(Stream(*TRAIN), VAL, seed=3)  # a plain iterable dataset, batched by the Trainer
    assert c[-1]["step"] == a[-1]["step"]


def test_a_non_finite_loss_in_the_last_batch_of_an_unknown_length_epoch_is_caught():
    """The check at the end of an epoch whose length was unknown: the run is marked diverged at that step."""
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    bad = Stream(*TRAIN)
    rng = torch.get_rng_state()
    bad.bad_at = torch.randperm(240).tolist()[-1]   # the last example of the stream's first epoch (global RNG)
    torch.set_rng_state(rng)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(bad, batch_size=32), None,
                      epochs=2, batch_size=32, check_every=1000)
    state = trainer.fit()
    assert state.status == "diverged" and state.diverged_step == math.ceil(240 / 32) - 1


def test_a_batch_that_is_not_inputs_and_labels_is_refused_with_what_came():
    loader = DataLoader(TensorDataset(*TRAIN), batch_size=32, collate_fn=lambda ex: {"x": ex})
    with pytest.raises(TypeError, match="a batch must be \\(inputs, labels\\).*a dict"):
        _fit(loader, None)


@pytest.mark.parametrize("make", [lambda: TensorDataset(*TRAIN), lambda: Stream(*TRAIN)],
                         ids=["map-style", "iterable"])
def test_an_epoch_resumes_at_any_batch(make):
    """``epoch(e, start)`` = the epoch's batches from ``start`` on (map-style: sliced, nothing before it loaded;
    iterable: drawn and dropped), so a run can continue mid-epoch."""
    def batches(start):
        torch.manual_seed(5)
        source = DataBatches(make(), batch_size=32, order=lambda e, n: epoch_order(7, e, n),
                             seeds=lambda e: data_order_generator(7, e), steps=batches_per_epoch,
                             device=torch.device("cpu"))
        return [x for x, _ in source.epoch(2, start)]

    whole = batches(0)
    assert len(whole) == 8
    for start in (1, 5, 8):
        part = batches(start)
        assert len(part) == 8 - start and all(torch.equal(a, b) for a, b in zip(part, whole[start:]))


# -- data.python in a recipe ---------------------------------------------------------------------------------------
USER_DATA = """
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

def _xy(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 24, generator=g)
    return x, (x[:, 0, :8].sum(1) > 0).long()

class Signals(Dataset):
    classes = ["low", "high"]
    def __init__(self, n, seed):
        self.x, self.y = _xy(n, seed)
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return self.x[i], self.y[i]

def loaders():
    return {"train": DataLoader(Signals(400, 0), batch_size=32, shuffle=True, num_workers=0),
            "val": Signals(100, 1), "test": DataLoader(Signals(200, 2), batch_size=50)}

def pair():
    return TensorDataset(*_xy(300, 0)), TensorDataset(*_xy(60, 1))

class Plain(Dataset):   # no classes attribute, labels not in memory as a tensor
    def __len__(self):
        return 300
    def __getitem__(self, i):
        return torch.zeros(1, 24), i % 2

def no_classes():
    return {"train": Plain()}

def broken():
    return helper()

def helper():
    raise RuntimeError("the data is on another disk")
"""

BASE = ["model.name=mlp", "model.depth=1", "model.width=16", "epochs=2", "schedule.name=constant",
        "data.batch_size=32"]


@pytest.fixture
def user_data(tmp_path, monkeypatch):
    (tmp_path / "userdata_mod.py").write_text(textwrap.dedent(USER_DATA))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "userdata_mod", raising=False)
    return tmp_path


def test_a_recipe_trains_on_a_users_dataloader_through_data_python(user_data):
    """The factory's DataLoader (shuffled: ordered by the run's seed), a validation Dataset and a test loader:
    trained, validated and tested; the data summary names the factory; the same recipe gives the same run."""
    runs = [train(None, overrides=BASE + ["data.python=userdata_mod:loaders"], run_dir=user_data / f"r{i}")
            for i in range(2)]
    r = runs[0]
    assert r.status == "completed" and r.test_accuracy > 0.6 and r.val_loss is not None
    assert r.data["train"] == 400 and r.data["test"] == 200 and r.data["input_shape"] == [1, 24]
    assert r.data["classes"] == ["low", "high"] and r.steps == 2 * batches_per_epoch(400, 32)
    assert runs[1].test_loss == r.test_loss and runs[1].history[-1]["train_loss"] == r.history[-1]["train_loss"]
    (tuple_run,) = [train(None, overrides=BASE + ["data.python=userdata_mod:pair"], run_dir=user_data / "t")]
    assert tuple_run.status == "completed" and tuple_run.test_accuracy is None and tuple_run.val_loss is not None


@pytest.mark.parametrize("override, field, words", [
    ("data.python=userdata_mod:broken", "data.python", "RuntimeError: the data is on another disk"),
    ("data.python=userdata_mod:no_classes", "data.python", "the number of classes is unknown"),
    ("data.python=userdata_mod:missing", "data.python", "has no attribute 'missing'"),
    ("data.python=no_such_module_xyz:f", "data.python", "cannot import module"),
    ("data.python=userdata_mod", "data.python", "expected 'package.module:factory'"),
])
def test_a_bad_data_factory_exits_2_naming_the_field(user_data, capsys, override, field, words):
    rc = main(["train", "--set", override, *[a for o in BASE for a in ("--set", o)], "--store", "none",
               "--runs-dir", str(user_data / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {field}") and words in err and "Traceback" not in err, err
    if "broken" in override:
        assert "userdata_mod.py" in err and 'raise RuntimeError("the data is on another disk")' in err


def test_keys_of_built_in_datasets_are_refused_next_to_data_python(user_data, capsys):
    rc = main(["train", "--set", "data.python=userdata_mod:pair", "--set", "data.size=100", "--store", "none",
               "--quiet", "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: data.size") and "does not apply to a user's datasets" in err


def test_a_training_dataloader_with_another_batch_size_is_refused(user_data, capsys):
    rc = main(["train", "--set", "data.python=userdata_mod:loaders", "--set", "data.batch_size=64",
               "--set", "model.name=mlp", "--store", "none", "--quiet", "--runs-dir", str(user_data / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: data.batch_size") and "batches 32" in err


@pytest.mark.slow
def test_the_cli_trains_a_users_datasets(user_data, capsys):
    rc = main(["train", *[a for o in BASE + ["data.python=userdata_mod:loaders"] for a in ("--set", o)],
               "--store", "none", "--json", "--quiet", "--runs-dir", str(user_data / "runs")])
    out = last_json(capsys.readouterr().out)
    assert rc == 0 and out["status"] == "completed" and out["data"]["name"] == "userdata_mod:loaders"


def test_the_doctor_watches_a_run_on_a_users_datasets(user_data):
    """The doctor's like-for-like training-split check and validation noise need tensors; on a user's datasets it
    diagnoses from the rest (gradients, activations, losses) and counts the training examples from the dataset."""
    from tricklab.diagnose.trainer_callback import DoctorCallback

    doctor = DoctorCallback()
    r = train(None, overrides=BASE + ["data.python=userdata_mod:loaders"], run_dir=user_data / "d",
              callbacks=[doctor])
    assert r.status == "completed" and doctor.doctor is not None and doctor.doctor.ctx.num_examples == 400
