"""Checkpoints without pickle (issue 19 item 4): safetensors + a JSON sidecar in its header; loading runs no code;
legacy ``.pt`` checkpoints resume and are rewritten; resume stays bit-exact."""

from __future__ import annotations

import json
import math
import shutil
import struct
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from tricklab.train import Trainer, train
from tricklab.train.checkpoint import (
    LATEST,
    LEGACY_LATEST,
    LEGACY_PREVIOUS,
    PREVIOUS,
    SIDECAR_KEY,
    decode,
    encode,
    load_checkpoint,
    read_checkpoint_file,
)

SMALL = ["data.name=synthetic", "model.name=mlp", "model.depth=1", "model.width=16", "epochs=3",
         "data.batch_size=64", "schedule.name=constant", "data.size=600"]
MARKER = "PWNED"


def _same(a, b):
    """Exact equality of nested payloads (tensors by dtype, shape and bits; NaN equal to NaN)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_a_payload_round_trips_exactly():
    """Int-keyed dicts (optimizer state), tuples (betas), NaN and inf floats (a diverged history), a dict whose key
    is one of the format's tags, tied and non-contiguous tensors, every dtype a training state holds."""
    w = torch.randn(4, 3)
    payload = {
        "epoch": 3, "step": 12, "lr_scale": 0.1 + 0.2, "stop": False, "stop_reason": "", "none": None,
        "history": [{"loss": float("nan"), "acc": float("inf"), "x": -0.0}],
        "optimizer": {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.randn(3)}},
                      "param_groups": [{"params": [0, 1], "betas": (0.9, 0.999), "lr": 3e-3, "foreach": None}]},
        "model": {"a.weight": w, "b.weight": w, "t": w.t(), "bn.num_batches_tracked": torch.tensor(7)},
        "rng": torch.get_rng_state(), "flags": torch.tensor([True, False]), "half": torch.randn(2).bfloat16(),
        "tricky": {"__tensor__": "not a reference"}, "empty": torch.zeros(0),
    }
    back = decode(encode(payload))
    assert _same(payload, back)
    assert back["model"]["t"].is_contiguous() and torch.equal(back["model"]["t"], w.t())


def test_the_file_is_plain_safetensors_with_the_sidecar_in_its_header(tmp_path):
    """No ``.pt`` file in a new run directory; any safetensors reader opens the checkpoint and its JSON sidecar."""
    run = tmp_path / "run"
    train(None, overrides=SMALL, run_dir=run)
    assert not list(run.rglob("*.pt")) and {LATEST, PREVIOUS} <= {p.name for p in run.iterdir()}
    with safe_open(str(run / LATEST), framework="pt") as f:
        sidecar = json.loads(f.metadata()[SIDECAR_KEY])
        names = set(f.keys())
    assert sidecar["format"] == 1 and sidecar["payload"]["epoch"] == 3
    model = sidecar["payload"]["model"]
    refs = {ref["__tensor__"] for ref in model.values()}
    assert refs <= names and len(refs) == len(model) and "body.layer1.weights.weight" in model


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _craft(path: Path, header: dict) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def test_crafted_checkpoints_never_run_code_and_are_refused(tmp_path, capsys):
    """A pickle under the new name, a legacy ``.pt`` pickle with a payload (refused by ``weights_only``), and
    crafted safetensors headers (a sidecar naming a tensor the file lacks, a header longer than the file, a
    sidecar of another format) are all damaged files: the run falls back or stops with exit code 2, no code runs."""
    from tricklab.cli.main import main

    marker = tmp_path / MARKER
    run = tmp_path / "run"
    train(None, overrides=SMALL, run_dir=run)
    torch.save({"epoch": 2, "step": 1, "model": _Payload(marker), "optimizer": {}}, run / LATEST)
    with pytest.raises(ValueError):
        decode((run / LATEST).read_bytes())
    crafted = {
        "missing-tensor": {"__metadata__": {SIDECAR_KEY: json.dumps(
            {"format": 1, "payload": {"epoch": 1, "step": 1, "model": {"__tensor__": "0"}, "optimizer": {}}})}},
        "other-format": {"__metadata__": {SIDECAR_KEY: json.dumps({"format": 99, "payload": {}})}},
        "no-sidecar": {"__metadata__": {"format": "pt"}},
    }
    for name, header in crafted.items():
        _craft(tmp_path / name, header)
        with pytest.raises(ValueError):
            read_checkpoint_file(tmp_path / name)
    (tmp_path / "too-long").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ValueError, match="more than the file holds"):
        read_checkpoint_file(tmp_path / "too-long")

    _craft(run / PREVIOUS, crafted["missing-tensor"])
    assert main(["train", "--resume", str(run), "--quiet", "--store", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: no loadable checkpoint") and LATEST in err and PREVIOUS in err
    assert "Traceback" not in err

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(run / "recipe.yaml", legacy)
    torch.save({"epoch": 2, "step": 1, "model": _Payload(marker), "optimizer": {}}, legacy / LEGACY_LATEST)
    with pytest.raises(Exception, match="no loadable checkpoint"):
        load_checkpoint(legacy)
    assert not marker.exists()
    torch.load(legacy / LEGACY_LATEST, weights_only=False)   # the control: the payload is live
    assert marker.exists()


def _toy(n=300, d=8, c=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x, x[:, :c].argmax(1)


def _trainer(tmp: Path | None, epochs: int) -> Trainer:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    x, y = _toy()
    return Trainer(model, opt, (x[:240], y[:240]), (x[240:], y[240:]), epochs=epochs, batch_size=32, seed=3,
                   checkpoint_dir=tmp)


def test_resume_is_bit_exact_and_legacy_checkpoints_are_rewritten(tmp_path):
    """Trained 2 epochs, resumed to 4 — from the new format, and from the same state saved as legacy pickles — ends
    bit for bit where 4 uninterrupted epochs end (dropout's RNG, AdamW's moments, batch norm's statistics); the
    legacy files are replaced by safetensors ones."""
    reference = _trainer(None, 4)
    expected = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in reference.fit().history]
    first = _trainer(tmp_path / "new", 2)
    first.fit()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for new, old in ((LATEST, LEGACY_LATEST), (PREVIOUS, LEGACY_PREVIOUS)):
        torch.save(read_checkpoint_file(tmp_path / "new" / new), legacy / old)
    for directory in (tmp_path / "new", legacy):
        resumed = _trainer(directory, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            state = resumed.fit(resume=True)
        assert [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in state.history] == expected
        for a, b in zip(resumed.model.state_dict().values(), reference.model.state_dict().values()):
            assert torch.equal(a, b)
        assert not list(directory.glob("*.pt")) and (directory / LATEST).is_file() and (directory / PREVIOUS).is_file()
    assert read_checkpoint_file(legacy / PREVIOUS)["epoch"] == 3
