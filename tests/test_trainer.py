"""The Trainer and train(): events, determinism, divergence, early stopping, averaging, checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from tricklab.train import Callback, Trainer, train
from tricklab.train.checkpoint import LATEST, PREVIOUS, load_checkpoint

SMALL = ["data.name=synthetic", "model.name=mlp", "model.depth=2", "model.width=32", "epochs=4",
         "data.batch_size=32", "optimizer.lr=0.01"]


def _toy(n=256, d=8, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :c].argmax(1)).long()
    return x, y


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_begin(self, s): self.events.append("fit_begin")
    def on_epoch_begin(self, s): self.events.append("epoch_begin")
    def on_batch_begin(self, s): self.events.append("batch_begin")
    def on_before_optimizer_step(self, s):
        assert all(p.grad is not None for p in s.model.parameters())
        self.events.append("before_step")
    def on_batch_end(self, s): self.events.append("batch_end")
    def on_evaluate(self, s, split, m): self.events.append(f"evaluate:{split}")
    def on_epoch_end(self, s): self.events.append("epoch_end")
    def on_fit_end(self, s): self.events.append("fit_end")


def test_events_fire_in_order_and_a_flag_stops():
    x, y = _toy()
    model = nn.Linear(8, 3)
    rec = Recorder()

    class StopAfterOne(Callback):
        def on_epoch_end(self, s):
            s.stop = True

    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), (x, y), (x[:32], y[:32]), epochs=5,
                batch_size=128, callbacks=[rec, StopAfterOne()])
    state = t.fit()
    assert rec.events == ["fit_begin", "epoch_begin",
                          "batch_begin", "before_step", "batch_end",
                          "batch_begin", "before_step", "batch_end",
                          "evaluate:val", "epoch_end", "fit_end"]
    assert len(state.history) == 1 and state.step == 2


def test_training_learns_and_uses_the_schedule():
    x, y = _toy(512)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    seen = []

    class LR(Callback):
        def on_batch_begin(self, s):
            seen.append(s.optimizer.param_groups[0]["lr"])

    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=1.0), (x, y), (x, y), epochs=10, batch_size=64,
                lr_schedule=lambda step: 0.5 * 0.5 ** (step // 40), callbacks=[LR()])
    state = t.fit()
    assert seen[:41] == [0.5] * 40 + [0.25] and len(seen) == 80
    assert state.history[-1]["val_accuracy"] > 0.9


def test_nan_loss_is_diverged_with_its_step(tmp_path):
    x, y = _toy()
    x[100:] = float("nan")  # most examples are NaN: nearly every batch, whatever the order, has a NaN loss
    model = nn.Linear(8, 3)
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), (x, y), None, epochs=3, batch_size=16,
                checkpoint_dir=tmp_path)
    state = t.fit()
    assert state.status == "diverged"
    assert state.diverged_step is not None and 0 <= state.diverged_step < state.step
    assert not (tmp_path / LATEST).exists()  # no checkpoint of a diverged epoch was written


def test_train_is_deterministic(tmp_path):
    a = train(None, overrides=SMALL, runs_root=tmp_path / "a")
    b = train(None, overrides=SMALL, runs_root=tmp_path / "b")
    assert a.status == "completed"
    assert a.test_loss == b.test_loss and a.test_accuracy == b.test_accuracy

    def timeless(history):
        return [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in history]

    assert timeless(a.history) == timeless(b.history)
    c = train(None, overrides=SMALL + ["seed=1"], runs_root=tmp_path / "c")
    assert c.test_loss != a.test_loss


def test_run_directory_holds_recipe_metrics_checkpoint_result(tmp_path):
    r = train(None, overrides=SMALL, runs_root=tmp_path, store=tmp_path / "s.sqlite")
    d = tmp_path / r.run_id
    assert {"recipe.yaml", "metrics.json", "result.json", LATEST, PREVIOUS} <= {p.name for p in d.iterdir()}
    from tricklab.store import Store

    with Store(tmp_path / "s.sqlite") as s:
        row = s.get_run(r.run_id)
        assert row["status"] == "completed" and row["result"]["test_loss"] == r.test_loss
        assert len(s.metrics(r.run_id)["val_loss"]) == 4


def test_lr_far_too_high_diverges_and_keeps_the_last_good_checkpoint(tmp_path):
    r = train(None, overrides=SMALL + ["optimizer.name=sgd", "optimizer.lr=1e5", "schedule.name=constant",
                                       "model.norm=none"], runs_root=tmp_path)
    assert r.status == "diverged" and r.diverged_step is not None
    assert r.test_accuracy is None and r.test_loss is None
    assert any(a.kind == "nan_loss" and a.step == r.diverged_step for a in r.alarms)
    assert r.to_json()["test_loss"] is None


def test_early_stopping_restores_best_weights(tmp_path):
    # a tiny training set and a big model overfit quickly: validation loss rises, training stops early
    r = train(None, overrides=["data.name=synthetic", "data.variant=teacher", "data.train_subset=64", "model.name=mlp",
                               "model.width=256", "model.depth=3", "epochs=60", "early_stopping.patience=3",
                               "schedule.name=constant", "optimizer.lr=0.01", "optimizer.weight_decay=0"],
              runs_root=tmp_path)
    assert r.status == "stopped_early"
    best = min(r.history, key=lambda h: h["val_loss"])
    assert r.best_epoch == best["epoch"] and r.epochs == r.best_epoch + 3
    assert abs(r.val_loss - best["val_loss"]) < 1e-6  # the final model is the best epoch's model


def test_checkpoint_fallback_when_latest_is_damaged(tmp_path):
    train(None, overrides=SMALL, run_dir=tmp_path / "run")
    good = load_checkpoint(tmp_path / "run")
    assert good["epoch"] == 4
    (tmp_path / "run" / LATEST).write_bytes(b"\x00garbage")
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        older = load_checkpoint(tmp_path / "run")
    assert older["epoch"] == 3 and any("damaged checkpoint" in str(w.message) for w in caught)


def test_averaging_modes_run(tmp_path):
    for mode in ("ema", "swa"):
        r = train(None, overrides=SMALL + [f"averaging.mode={mode}", "averaging.decay=0.9"], runs_root=tmp_path)
        assert r.status == "completed" and r.test_accuracy > 0.5
    r = train(None, overrides=SMALL + ["averaging.mode=ensemble", "averaging.k=3"], runs_root=tmp_path)
    assert r.status == "completed" and r.steps == 3 * r.history[-1]["step"]
