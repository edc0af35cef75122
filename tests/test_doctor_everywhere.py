"""The same broken model gives the same alarm in a plain PyTorch loop (tl.watch), in tricklab's Trainer
(DoctorCallback) and inside a real PyTorch Lightning Trainer (the Lightning DoctorCallback)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import load_data
from tricklab.diagnose.doctor import Doctor
from tricklab.diagnose.trainer_callback import DoctorCallback
from tricklab.diagnose.watch import watch
from tricklab.models import build_model
from tricklab.train import Trainer
from tricklab.tricks.init import init_model_
from tricklab.tricks.scaling import fit_scaler

EVERY, STEPS, BATCH = 5, 60, 64
PROBLEM_KINDS = {"vanishing_gradients", "saturation"}


def _data():
    s = load_data("synthetic", variant="teacher")
    scaler = fit_scaler("standard", s.x_train)
    return scaler.transform(s.x_train), s.y_train


def _broken_model(input_dim: int) -> nn.Module:
    """The lesson's counter-example: a deep sigmoid MLP with N(0,1) weights."""
    torch.manual_seed(0)
    model = build_model("mlp", (input_dim,), 10, depth=20, width=64, activation="sigmoid", norm="none")
    return init_model_(model, "normal")


def _plain_loop_kinds(x, y) -> set[str]:
    model = _broken_model(x.shape[1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = watch(model, opt, every=EVERY, doctor=Doctor())
    for step in range(STEPS):
        i = (step * BATCH) % (len(x) - BATCH)
        loss = F.cross_entropy(model(x[i:i + BATCH]), y[i:i + BATCH])
        opt.zero_grad()
        loss.backward()
        opt.step()
        w.step(loss)
    w.close()
    return {a.kind for a in w.alarms}


def _trainer_kinds(x, y) -> set[str]:
    model = _broken_model(x.shape[1])
    cb = DoctorCallback(every=EVERY)
    n = STEPS * BATCH // 2  # two epochs of STEPS/2 steps
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), (x[:n], y[:n]), None, epochs=2, batch_size=BATCH,
            callbacks=[cb]).fit()
    return {a.kind for a in cb.alarms}


def _lightning_kinds(x, y) -> set[str]:
    pytest.importorskip("lightning")
    import lightning.pytorch as pl

    from tricklab.integrations.lightning import DoctorCallback as LightningDoctor

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _broken_model(x.shape[1])

        def forward(self, inputs):
            return self.net(inputs)

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return F.cross_entropy(self(xb), yb)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH, shuffle=False)
    cb = LightningDoctor(every=EVERY)
    trainer = pl.Trainer(max_steps=STEPS, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(Module(), loader)
    return {a.kind for a in cb.alarms}


@pytest.mark.slow
def test_the_same_alarm_in_a_plain_loop_the_trainer_and_lightning():
    x, y = _data()
    plain = _plain_loop_kinds(x, y)
    ours = _trainer_kinds(x, y)
    lightning = _lightning_kinds(x, y)
    named = plain & PROBLEM_KINDS
    assert named, f"the plain loop named {plain}"
    assert named <= ours, (plain, ours)
    assert named <= lightning, (plain, lightning)


def test_a_healthy_model_gets_no_alarm_in_a_plain_loop():
    x, y = _data()
    torch.manual_seed(0)
    model = init_model_(build_model("mlp", (x.shape[1],), 10, depth=3, width=64), "he")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    w = watch(model, opt, every=EVERY, doctor=Doctor())
    for step in range(STEPS):
        i = (step * BATCH) % (len(x) - BATCH)
        loss = F.cross_entropy(model(x[i:i + BATCH]), y[i:i + BATCH])
        opt.zero_grad()
        loss.backward()
        opt.step()
        w.step(loss)
    w.close()
    assert [a.kind for a in w.alarms] == []
