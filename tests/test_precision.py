"""Mixed precision (issue 19 item 2): the formats' numbers as torch knows them, bf16 autocast on the CPU (float32
weights, bf16 matmuls), fp16 refused on the CPU with the reason (exit 2), fp16 with a dynamic loss scale on CUDA."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from tricklab.cli.main import main
from tricklab.train import Trainer, train
from tricklab.tricks import precision as P

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.mark.parametrize("name", list(DTYPES))
def test_the_formats_table_is_what_torch_computes(name):
    """Largest value, smallest normal value and ε of each format, and ε = 2^−m, max = (2 − 2^−m)·2^(2^(e−1) − 1),
    smallest normal = 2^(2 − 2^(e−1)) from its exponent and mantissa bits; the docstring's table says the same."""
    f, fmt = torch.finfo(DTYPES[name]), P.FORMATS[name]
    assert (fmt["max"], fmt["tiny"], fmt["eps"]) == (f.max, f.tiny, f.eps)
    e, m = fmt["exponent_bits"], fmt["mantissa_bits"]
    assert fmt["eps"] == 2.0**-m and fmt["tiny"] == 2.0 ** (2 - 2 ** (e - 1))
    assert fmt["max"] == (2 - 2.0**-m) * 2.0 ** (2 ** (e - 1) - 1)
    row = next(line for line in P.__doc__.splitlines() if line.startswith({"fp32": "float32", "bf16": "bfloat16",
                                                                            "fp16": "float16"}[name] + " "))
    assert row.split()[1:3] == [str(e), str(m)] and f"2^−{m}" in row


def test_bf16_on_the_cpu_computes_in_bf16_and_keeps_float32_weights():
    """Under autocast the linear layers' outputs are bfloat16; the parameters, their gradients and the optimizer's
    state stay float32; the run trains (loss falls) and is deterministic."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=g)
    y = x[:, :3].argmax(1)
    seen = set()

    def run():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
        model[0].register_forward_hook(lambda mod, inp, out: seen.add(out.dtype) if mod.training else None)
        trainer = Trainer(model, torch.optim.AdamW(model.parameters(), lr=0.01), (x, y), (x[:64], y[:64]),
                          epochs=4, batch_size=32, precision="bf16")
        return model, trainer.fit()

    model, state = run()
    assert seen == {torch.bfloat16}
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    losses = [h["train_loss"] for h in state.history]
    assert losses[-1] < losses[0] * 0.7 and state.history[-1]["val_accuracy"] > 0.7
    assert run()[1].history[-1]["train_loss"] == losses[-1]


def test_fp16_is_refused_on_the_cpu_with_the_reason(tmp_path, capsys):
    model = nn.Linear(4, 2)
    with pytest.raises(ValueError, match="fp16 trains on CUDA only"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), (torch.zeros(8, 4), torch.zeros(8).long()),
                epochs=1, batch_size=4, precision="fp16")
    rc = main(["train", "--set", "precision=fp16", "--set", "device=cpu", "--set", "data.name=synthetic",
               "--set", "model.name=mlp", "--store", "none", "--quiet", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: precision: fp16 on cpu: fp16 trains on CUDA only")
    assert re.search(r"allowed: fp32, bf16", err) and not list(tmp_path.iterdir())


def test_a_recipe_in_bf16_is_as_accurate_as_in_fp32(tmp_path):
    runs = {p: train(None, overrides=[f"precision={p}", "data.name=synthetic", "data.size=1000", "model.name=mlp",
                                      "model.depth=2", "model.width=32", "epochs=8", "device=cpu"],
                     run_dir=tmp_path / p) for p in ("fp32", "bf16")}
    assert runs["bf16"].status == "completed" and runs["fp32"].test_accuracy > 0.9
    assert abs(runs["bf16"].test_accuracy - runs["fp32"].test_accuracy) <= 0.02
    assert runs["bf16"].test_loss != runs["fp32"].test_loss   # bf16 did compute differently


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a loss scale runs on CUDA only")
def test_fp16_on_cuda_scales_the_loss_and_skips_an_overflowing_step(tmp_path):
    """The scaler starts at 2^16, the gradients the callbacks see are unscaled (equal to fp32's up to fp16
    rounding), a step whose gradients overflow is skipped (weights unchanged) and the scale halves; the scale is
    kept in the checkpoint."""
    from tricklab.train.checkpoint import load_checkpoint
    from tricklab.train.events import Callback

    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 10, generator=g).cuda()
    y = x[:, :3].argmax(1)
    norms = []

    class Watch(Callback):
        def on_before_optimizer_step(self, state):
            norms.append(float(torch.cat([p.grad.flatten() for p in state.model.parameters()]).norm()))

    def run(precision, scale_loss_by=1.0):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3)).cuda()
        def scaled(out, t):
            return torch.nn.functional.cross_entropy(out, t) * scale_loss_by

        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), (x, y), epochs=1, batch_size=128,
                          precision=precision, callbacks=[Watch()], checkpoint_dir=tmp_path / precision,
                          loss_fn=scaled if scale_loss_by != 1.0 else torch.nn.functional.cross_entropy)
        before = [p.detach().clone() for p in model.parameters()]
        trainer.fit()
        return trainer, before, model

    run("fp32")
    trainer, _, _ = run("fp16")
    assert norms[1] == pytest.approx(norms[0], rel=1e-2)          # unscaled before the callbacks
    assert trainer.scaler.get_scale() == 2.0**16
    trainer, before, model = run("fp16", scale_loss_by=1e30)      # S·L overflows fp16 → inf gradients
    assert trainer.scaler.get_scale() == 2.0**15
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))   # the step was skipped
    assert load_checkpoint(tmp_path / "fp16")["scaler"]["scale"] == 2.0**15
