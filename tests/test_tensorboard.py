"""TensorBoard export of the per-layer statistics: live from the Trainer, from a run directory, from the CLI.
The events are read back with TensorBoard's own reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("tensorboard")  # the optional extra; CI installs it (README's test command)

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from tests.conftest import last_json, run_cli  # noqa: E402
from tricklab.diagnose.trainer_callback import DoctorCallback  # noqa: E402
from tricklab.integrations.tensorboard import TensorBoardCallback, export_run  # noqa: E402
from tricklab.train import train  # noqa: E402

SMALL = ["data.name=digits", "model.name=mlp", "model.width=32", "model.depth=3", "epochs=2"]


def read(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return acc


def test_live_export_has_every_layer_statistic_and_the_epoch_metrics(tmp_path):
    doctor = DoctorCallback(every=5)
    result = train(overrides=SMALL, runs_root=tmp_path, store=None,
                   callbacks=[doctor, TensorBoardCallback(tmp_path / "tb")])
    tags = set(read(tmp_path / "tb").Tags()["scalars"])
    layers = [layer.name for layer in doctor.doctor.ctx.records[0].layers]
    assert layers == ["body.layer1.weights", "body.layer2.weights", "body.layer3.weights", "out"]
    for layer in layers:
        hidden = ("act_std", "frac_dead") if layer != "out" else ()       # the output layer has no activation
        for stat in ("grad_norm", "weight_norm", "update_ratio", *hidden):
            assert f"layers/{stat}/{layer}" in tags, (stat, layer)
    assert {"train/loss", "train/grad_norm", "epoch/val_accuracy", "epoch/train_loss"} <= tags
    acc = read(tmp_path / "tb")
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == [r.step for r in doctor.doctor.ctx.records][-len(steps):] and steps[0] == 0
    assert [e.step for e in acc.Scalars("epoch/val_accuracy")] == [h["step"] for h in result.history]
    grad = acc.Scalars("layers/grad_norm/out")[0].value
    assert grad == pytest.approx(doctor.doctor.ctx.records[0].layers[-1].grad_norm, rel=1e-6)


def test_a_run_directory_and_the_cli_export_the_same_records(tmp_path):
    proc = run_cli("doctor", "--set", "data.name=digits", "--set", "model.name=mlp", "--set", "epochs=1", "--json",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / last_json(proc.stdout)["run_dir"]
    logdir = export_run(run_dir)
    n_probes = len((run_dir / "probes.jsonl").read_text().splitlines())
    assert len(read(logdir).Scalars("train/loss")) == n_probes
    cli = run_cli("report", str(run_dir), "--tensorboard", str(tmp_path / "tb2"), "--json", cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert last_json(cli.stdout)["tensorboard"] == str(tmp_path / "tb2")
    assert len(read(tmp_path / "tb2").Scalars("train/loss")) == n_probes


def test_a_store_is_refused_with_exit_2(tmp_path):
    store = tmp_path / "x.sqlite"
    store.write_bytes(b"")
    proc = run_cli("report", str(store), "--tensorboard", str(tmp_path / "tb"), cwd=tmp_path)
    assert proc.returncode == 2 and "--tensorboard" in proc.stderr and "Traceback" not in proc.stderr


# -- logging while training, from the command line --------------------------------------------------------------
TINY = ["data.name=synthetic", "model.name=mlp", "model.depth=1", "model.width=16", "epochs=3"]


def test_train_tensorboard_logs_live_into_the_run_directory(tmp_path):
    done = run_cli("train", *TINY, "--tensorboard", "--json", "--runs-dir", str(tmp_path / "runs"), "--store", "none",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = Path(last_json(done.stdout)["run_dir"])
    run = run if run.is_absolute() else tmp_path / run
    acc = read(run / TensorBoardCallback.SUBDIR)
    tags = set(acc.Tags()["scalars"])
    assert {"epoch/val_accuracy", "epoch/train_loss", "train/loss_mean", "train/lr_step"} <= tags
    history = json.loads((run / "metrics.json").read_text())
    logged = [e.value for e in acc.Scalars("epoch/val_accuracy")]
    assert logged == pytest.approx([h["val_accuracy"] for h in history], rel=1e-6)   # one point per epoch
    steps = [e.step for e in acc.Scalars("train/loss_mean")]
    assert steps == sorted(steps) and steps[0] == 10                                   # every 10 steps


def test_study_tensorboard_gives_each_trial_its_own_log(tmp_path):
    spec = tmp_path / "tb.yaml"
    spec.write_text(yaml.safe_dump({"name": "tb", "base": {"data": {"name": "synthetic"}, "model": {
        "name": "mlp", "depth": 1, "width": 16}, "epochs": 2}, "factors": {"model.dropout": [0.0, 0.3]},
        "seeds": 1}))
    done = run_cli("study", str(spec), "--tensorboard", "--workers", "1", "--no-report", "--json", "--quiet",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    logs = sorted((tmp_path / "runs" / "tb").glob(f"*/seed-0-*/{TensorBoardCallback.SUBDIR}"))
    assert len(logs) == 2 and all("epoch/val_accuracy" in read(d).Tags()["scalars"] for d in logs)
    refused = run_cli("study", str(spec), "--tensorboard", "--executor", "population", "--json", cwd=tmp_path)
    assert refused.returncode == 2 and last_json(refused.stdout)["error"]["field"] == "--tensorboard"


def test_the_callback_needs_a_run_directory_or_a_logdir(tmp_path):
    import torch

    from tricklab.train.trainer import Trainer

    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    model = torch.nn.Linear(4, 2)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), (x, y), (x, y), epochs=1, batch_size=8,
                      callbacks=[TensorBoardCallback()])
    with pytest.raises(ValueError, match="run directory"):
        trainer.fit()
