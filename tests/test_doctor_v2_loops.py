"""Every loop (issue 15 item 8): the same broken user model gives the same alarm in a plain loop (``tl.watch``),
tricklab's Trainer, a real PyTorch Lightning Trainer — automatic and manual optimization, gradient
accumulation, skipped batches, no validation loop — and a real Hugging Face ``transformers.Trainer``, which
also runs a tiny BERT built from a local ``BertConfig`` (no download)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.diagnose.doctor import Doctor
from tricklab.diagnose.trainer_callback import DoctorCallback
from tricklab.diagnose.watch import watch
from tricklab.train import Trainer

N_IN, CLASSES, N, BATCH, EVERY = 20, 10, 512, 32, 2


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, N_IN, generator=g)
    return x, (x @ torch.randn(N_IN, CLASSES, generator=g)).argmax(1)


class Net(nn.Module):
    """A user's MLP with functional ReLUs and their own init: Kaiming × ``scale`` (10: an exploding init)."""

    def __init__(self, scale: float = 10.0) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(N_IN, 64), nn.Linear(64, 64), nn.Linear(64, CLASSES)
        with torch.no_grad():
            for m in (self.fc1, self.fc2, self.out):
                nn.init.kaiming_normal_(m.weight)
                m.weight.mul_(scale)
                m.bias.zero_()

    def forward(self, x, labels=None):
        logits = self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))
        if labels is None:
            return logits
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


EXPECTED = ("exploding_init", 0, "fc1")       # kind, step, first bad layer


def first(alarms):
    a = next(a for a in alarms if a.kind == EXPECTED[0])
    return a.kind, a.step, a.layer.rsplit(".", 1)[-1]          # Lightning's module holds the net as ``net``


def test_plain_loop_and_trainer():
    x, y = data()
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    w = watch(model, opt, every=EVERY, doctor=Doctor(optimizer=opt))
    for i in range(0, 8 * BATCH, BATCH):
        loss = F.cross_entropy(model(x[i:i + BATCH]), y[i:i + BATCH])
        opt.zero_grad()
        loss.backward()
        opt.step()
        w.step(loss)
    w.close()
    assert first(w.alarms) == EXPECTED
    torch.manual_seed(0)
    model = Net()
    cb = DoctorCallback(every=EVERY)
    Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-3), (x, y), None, epochs=1, batch_size=BATCH,
            callbacks=[cb]).fit()
    assert first(cb.alarms) == EXPECTED


# -- Lightning, in every way it runs a step ----------------------------------------------------------------------
def lightning_run(mode: str, capsys=None):
    pytest.importorskip("lightning")
    import lightning.pytorch as pl

    from tricklab.integrations.lightning import DoctorCallback as LightningDoctor

    x, y = data()

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = Net()
            self.automatic_optimization = mode != "manual"

        def training_step(self, batch, batch_idx):
            if mode == "skip" and batch_idx % 3 == 1:
                return None                                   # Lightning skips this batch
            loss = F.cross_entropy(self.net(batch[0]), batch[1])
            if mode == "manual":
                opt = self.optimizers()
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
                return None
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            out = self.net(batch[0])
            self.log("val_loss", F.cross_entropy(out, batch[1]))
            self.log("val_acc", (out.argmax(1) == batch[1]).float().mean())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    torch.manual_seed(0)
    module = Module()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    val = None if mode == "noval" else torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:128], y[:128]),
                                                                   batch_size=64)
    cb = LightningDoctor(every=EVERY)
    seen: list[dict] = []

    class Logger(pl.loggers.Logger):
        name, version = "memory", "0"

        def log_metrics(self, metrics, step=None):
            seen.append(dict(metrics))

        def log_hyperparams(self, *args, **kwargs):
            pass

    trainer = pl.Trainer(max_epochs=2, callbacks=[cb], logger=Logger(), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
                         accumulate_grad_batches=2 if mode == "accumulate" else 1, num_sanity_val_steps=0,
                         limit_train_batches=8)
    trainer.fit(module, loader, val)
    return cb, seen, trainer


@pytest.mark.parametrize("mode", ["automatic", "manual", "accumulate", "skip", "noval"])
def test_lightning_names_it_in_every_way_a_step_runs(mode, capsys):
    cb, seen, trainer = lightning_run(mode)
    assert first(cb.alarms) == EXPECTED
    records = [a for a in cb.alarms]
    assert all(a.kind != "nan_loss" for a in records), [a.kind for a in records]   # the loss was read each time
    assert "tricklab doctor: [exploding_init @ step 0]" in capsys.readouterr().out
    assert any(m.get("doctor/exploding_init") == 0.0 for m in seen)              # the Lightning logger got it
    loss = cb.doctor.ctx.start_loss
    assert loss > 3 * 2.303                                                       # a per-batch loss, not ÷ 2


def test_lightning_accumulation_reads_the_loss_per_batch_as_written():
    plain, _, _ = lightning_run("automatic")
    accumulated, _, _ = lightning_run("accumulate")
    # the first probe's loss: the first batch's (automatic) vs the mean of the first two (accumulation); both
    # per batch, not divided by accumulate_grad_batches
    assert accumulated.doctor.ctx.start_loss == pytest.approx(plain.doctor.ctx.start_loss, rel=0.5)


# -- Hugging Face transformers -------------------------------------------------------------------------------------
def hf_trainer(model, train_set, eval_set=None, tmp_path=None, **kw):
    pytest.importorskip("transformers")
    from transformers import Trainer as HFTrainer
    from transformers import TrainingArguments

    from tricklab.integrations.transformers import DoctorCallback as HFDoctor

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=BATCH, num_train_epochs=1,
                             max_steps=kw.pop("max_steps", 10), learning_rate=kw.pop("lr", 1e-3), report_to=[],
                             save_strategy="no", logging_steps=2, use_cpu=True, remove_unused_columns=False,
                             eval_strategy="steps" if eval_set is not None else "no",
                             eval_steps=kw.pop("eval_steps", 5),
                             disable_tqdm=True, seed=0, **kw)
    cb = HFDoctor(every=EVERY)
    trainer = HFTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set, callbacks=[cb])
    trainer.train()
    return cb, trainer


class Rows(torch.utils.data.Dataset):
    def __init__(self, **columns):
        self.columns = columns

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}


def test_hugging_face_trainer_names_the_same_alarm(tmp_path, capsys):
    x, y = data()
    torch.manual_seed(0)
    cb, trainer = hf_trainer(Net(), Rows(x=x, labels=y), tmp_path=tmp_path)
    assert first(cb.alarms) == EXPECTED
    assert "tricklab doctor: [exploding_init @ step 0]" in capsys.readouterr().out
    assert any("doctor/exploding_init" in entry for entry in trainer.state.log_history)


def tiny_bert(initializer_range: float):
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=4,
                        initializer_range=initializer_range)
    return BertForSequenceClassification(config)


def tokens(n: int = 256, length: int = 12):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (n, length), generator=g)
    return Rows(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids[:, 0] % 4)


@pytest.mark.slow
def test_a_tiny_bert_in_the_hugging_face_trainer(tmp_path):
    healthy, _ = hf_trainer(tiny_bert(0.02), tokens(512), tokens(64), tmp_path=tmp_path / "healthy", max_steps=40,
                            lr=3e-3, eval_steps=10)
    assert healthy.alarms == [], [a.message for a in healthy.alarms]
    assert healthy.doctor.ctx.records and healthy.doctor.ctx.records[0].output_dim == 4   # the logits were seen
    broken, _ = hf_trainer(tiny_bert(3.0), tokens(), tmp_path=tmp_path / "broken", max_steps=4)
    alarm = next(a for a in broken.alarms if a.kind == "exploding_init")
    assert alarm.step == 0 and alarm.evidence["loss_over_ln_c"] > 3
