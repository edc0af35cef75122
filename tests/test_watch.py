"""``watch`` in a hand-written loop gives the same records as a Probe driven by hand, at the right steps."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.diagnose.probes import Probe
from tricklab.diagnose.records import ProbeRecord
from tricklab.diagnose.watch import KEEP_RECORDS, Watch, watch
from tricklab.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def make() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = build_model("cnn", (24,), 4, depth=2, width=8)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 24, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(20)]
    return model, data


def adamw(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-2)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05)


def by_hand(model: nn.Module, data, every: int, make_opt=adamw) -> list[ProbeRecord]:
    """The reference: a Probe driven by hand in the documented order."""
    opt = make_opt(model)
    lr = opt.param_groups[0]["lr"]
    probe = Probe(model, every=every)
    records = []
    for step, (x, y) in enumerate(data):
        probe.begin(step, x)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        probe.after_backward()
        opt.step()
        if (record := probe.after_step(loss, lr=lr)) is not None:
            records.append(record)
    probe.close()
    return records


def watched(model: nn.Module, data, every: int, **kw) -> tuple[list[ProbeRecord | None], Watch]:
    opt = adamw(model)
    w = watch(model, opt, every=every, **kw)
    out = []
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(w.step(loss))
    return out, w


def test_watch_gives_the_records_of_a_hand_driven_probe():
    model, data = make()
    twin = copy.deepcopy(model)
    out, w = watched(model, data, every=5)
    assert [r.step for r in w.records] == [0, 5, 10, 15]
    assert [i for i, r in enumerate(out) if r is not None] == [0, 5, 10, 15]
    reference = by_hand(twin, data, every=5)
    assert w.records == reference            # the same operations in the same order: equal to the last bit
    assert all(s.update_ratio is not None and s.update_ratio > 0 for r in w.records for s in r.layers)
    w.close()


def test_without_an_optimizer_gradients_are_read_in_step_and_update_ratios_are_none():
    model, data = make()
    twin = copy.deepcopy(model)
    opt = sgd(model)
    with watch(model, every=4) as w:
        for x, y in data[:9]:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            w.step(loss)                    # before the next zero_grad: the gradients are still there
    reference = by_hand(twin, data[:9], every=4, make_opt=sgd)
    assert [r.step for r in w.records] == [0, 4, 8]
    for got, ref in zip(w.records, reference):
        assert got.grad_norm == pytest.approx(ref.grad_norm)
        assert [s.grad_norm for s in got.layers] == pytest.approx([s.grad_norm for s in ref.layers])
        assert all(s.update_ratio is None for s in got.layers)


def test_doctor_callback_bound_and_close():
    class Doctor:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def observe(self, record: ProbeRecord) -> list[str]:
            self.seen.append(record.step)
            return [f"alarm at {record.step}"]

    model, data = make()
    doctor, streamed = Doctor(), []
    out, w = watched(model, data, every=2, doctor=doctor, keep=3, on_record=streamed.append)
    assert doctor.seen == list(range(0, 20, 2)) == [r.step for r in streamed]
    assert w.alarms == [f"alarm at {s}" for s in range(0, 20, 2)]
    assert [r.step for r in w.records] == [14, 16, 18] and KEEP_RECORDS == 1000
    assert all(r.lr == pytest.approx(1e-2) for r in w.records)
    w.close()
    assert not model._forward_pre_hooks and not w.optimizer._optimizer_step_pre_hooks
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_eval_forward_does_not_arm_and_after_backward_sees_gradients_before_clipping():
    model, data = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    w = watch(model, opt, every=1)
    model.eval()
    with torch.no_grad():
        model(data[0][0])
    assert not w.probe._armed
    model.train()
    x, y = data[0]
    loss = F.cross_entropy(model(x), y) * 100
    opt.zero_grad()
    loss.backward()
    w.after_backward()                       # before clipping
    clipped_to = 1e-3
    before = torch.nn.utils.clip_grad_norm_(model.parameters(), clipped_to)
    opt.step()
    record = w.step(loss)
    assert record.grad_norm == pytest.approx(before.item(), rel=1e-5)
    assert record.grad_norm > 10 * clipped_to
    w.close()
