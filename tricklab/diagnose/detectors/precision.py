"""float16's range: overflow (values above 65 504 become ∞) and underflow (gradients below 2^−24 become 0).

The lesson's first section — a float holds numbers only within a range — is the whole story of float16
training. Its largest finite value is 65 504 and its smallest normal one 2^−14 ≈ 6.1·10^−5 (subnormal numbers
reach down to 2^−24 ≈ 6·10^−8 with fewer and fewer significant bits); bfloat16 and float32 reach 3.4·10^38
(``tricklab.tricks.precision`` has the table). Mixed precision therefore backpropagates S·L, a loss scaled
by S, so that small gradients clear the underflow, and divides by S before the update. A *dynamic* scaler
(``torch.amp.GradScaler``; Micikevicius et al. 2018, "Mixed Precision Training") starts at S = 2^16, halves S
and skips the step whenever a gradient overflowed to ∞/NaN, and doubles S after 2000 steps without one.

What that means for a doctor:

- **A skipped step is the scaler working, not an explosion.** Its gradients are ∞ by construction; the step
  changed nothing. The ``Doctor`` hands such a record (``ProbeRecord.overflow_skip``) to these detectors only.
  A healthy scaler skips a handful of steps at the start (halving its way down from 2^16 to the scale the model
  needs) and then about one in 2000, when it tries a doubled scale.
- **Overflow** (``fp16_overflow``) is a problem when (a) the scaler skips more than ``fp16_skip_share`` (5 %) of
  the steps after its calibration, over at least ``fp16_skip_span`` (200) steps — every skip halves S, so the
  scale is collapsing and the run learns on few of its steps; or (b) the scale falls below ``fp16_min_scale``
  (1) on ``persist`` probes — the gradients overflow at their true size, which no scale can fix; or (c) the loss
  itself is ∞/NaN while every weight is finite — the *forward* pass overflowed (an activation above 65 504,
  named by the first layer whose output is not finite), which a loss scale cannot touch. Without a known scaler
  the share of probes whose gradients overflowed stands in for the share of skipped steps.
- **Underflow** (``fp16_underflow``): more than ``fp16_subnormal_share`` (5 %) of the weight layers' nonzero
  gradient entries lie below float16's smallest normal number after the scale (|S·g| < 2^−14), on ``persist``
  probes: they have lost precision, and the smaller ones — which the probe cannot see, they are 0 — were
  flushed to zero. Typical of float16 without a loss scaler (S = 1). Judged only where the loop says whether a
  scaler runs (``ProbeRecord.grad_subnormal`` is None otherwise).

- **float16 weights** (``fp16_underflow``, group ``weights``, at once): a ``.half()`` model keeps no float32 copy
  of its weights, so every update below ε/2 = 2^−11 ≈ 0.05 % of a weight rounds away (the lesson's
  10^−10 + 10^10 = 10^10), and Adam's ε = 10^−8 is 0 in float16 (its first steps divide by ~0: NaN). Mixed
  precision keeps float32 weights and computes in float16 (Micikevicius et al. 2018's "master copy").

The cure for all of them is the same format change: bf16 has float32's range (no overflow, no underflow, no
scaler), where the hardware has it; else a loss scaler, a smaller learning rate, normalised layers.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from tricklab.diagnose.detectors.base import Context, Detector, Finding, Streak, finite, weight_layers
from tricklab.diagnose.records import ProbeRecord

FP16_MAX = 65504.0
"""float16's largest finite value (``torch.finfo(torch.float16).max``)."""
FP16_EPS = 2.0 ** -10
"""float16's relative precision (the gap after 1): w + u rounds back to w when |u| < ε/2 · |w|."""
FP16_TINY = 2.0 ** -14
"""float16's smallest normal value (``torch.finfo(torch.float16).tiny``); subnormals reach down to 2^−24."""

LEDGER = 512
"""Probe intervals kept for the skip share (at every step, 512 steps; at the default every 20th, 10,240)."""


def forward_overflow(record: ProbeRecord) -> bool:
    """A float16 forward pass that overflowed: the loss is ∞/NaN while every weight is finite (weights that are
    NaN mean the run diverged before, in any precision — the NaN-loss detector's case)."""
    if record.compute_dtype != "float16" or finite(record.loss):
        return False
    return all(finite(layer.weight_norm) for layer in record.layers)


class Fp16Overflow(Detector):
    """Values beyond float16's range: a collapsing loss scale, or a forward pass that overflowed (see the
    module docstring). Two alarms at most: the forward pass's (group ``forward``) and the gradients' (``backward``:
    the scale below 1, or too many skipped steps)."""

    kind = "fp16_overflow"

    def reset(self) -> None:
        self.low_scale = Streak()
        # (first step, last step, steps observed, steps skipped) per probe interval after the calibration
        self.ledger: deque[tuple[int, int, int, int]] = deque(maxlen=LEDGER)
        self.last: tuple[int, float | None] | None = None   # the previous float16 record: step, scale

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        if record.compute_dtype != "float16":
            return None
        if forward_overflow(record):
            layers = weight_layers(record)
            bad = [layer for layer in layers if not (finite(layer.pre_mean) and finite(layer.pre_std))]
            evidence = {"loss": record.loss, "fp16_max": FP16_MAX, "loss_scale": record.loss_scale}
            return self.finding(record.step, "forward", bad[:1] or layers[-1:], evidence, explainable=False,
                                group="forward")
        self._account(record)
        scale = record.loss_scale
        if self.low_scale.update(finite(scale) and scale < self.t.fp16_min_scale, record.step) >= self.t.persist:
            return self.finding(self.low_scale.start(record.step), "scale", (),
                                {"loss_scale": scale, "fp16_max": FP16_MAX, **self._share()}, group="backward")
        share = self._share()
        if share and share["span"] >= self.t.fp16_skip_span and share["skip_share"] > self.t.fp16_skip_share:
            evidence = {**share, "loss_scale": scale, "fp16_max": FP16_MAX}
            return self.finding(int(share["since"]), "skips", (), evidence, group="backward")
        return None

    def _account(self, record: ProbeRecord) -> None:
        """Add the interval since the previous float16 record to the ledger: with a scale, the skips are the
        halvings between the two readings (exact unless the scale also doubled in between, at most once per
        2000 steps: then one skip is missed); without one, this probe is a sample (skipped or not)."""
        previous, self.last = self.last, (record.step, record.loss_scale)
        if record.step < self.t.fp16_calibration_steps:
            return
        if previous is not None and finite(previous[1]) and finite(record.loss_scale) and record.loss_scale > 0:
            halvings = max(0, round(math.log2(previous[1] / record.loss_scale)))  # type: ignore[operator]
            self.ledger.append((previous[0] + 1, record.step, max(1, record.step - previous[0]), halvings))
        elif record.loss_scale is None:
            self.ledger.append((record.step, record.step, 1, int(record.overflow_skip)))

    def _share(self) -> dict[str, float]:
        """The skip share over the latest ledger entries that cover ``fp16_skip_span`` steps (all when fewer)."""
        steps = skipped = 0
        since = None
        for first, _last, observed, skips in reversed(self.ledger):
            steps, skipped, since = steps + observed, skipped + skips, first
            if self.ledger[-1][1] - first + 1 >= self.t.fp16_skip_span:
                break
        if since is None or steps == 0:
            return {}
        return {"skip_share": skipped / steps, "skipped": float(skipped), "observed": float(steps),
                "span": float(self.ledger[-1][1] - since + 1), "since": float(since)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "ledger": [list(e) for e in self.ledger],
                "last": list(self.last) if self.last is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict({k: v for k, v in state.items() if k not in ("ledger", "last")})
        self.ledger = deque((tuple(e) for e in state.get("ledger", [])), maxlen=LEDGER)  # type: ignore[misc]
        last = state.get("last")
        self.last = (int(last[0]), last[1]) if last else None


class Fp16Underflow(Detector):
    """Gradients below float16's normal range after the loss scale (see the module docstring)."""

    kind = "fp16_underflow"
    explained_by = ("fp16_overflow",)

    def reset(self) -> None:
        self.streak = Streak()

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        if record.weight_dtype == "float16":
            updates = sorted(u for layer in record.layers if finite(u := layer.update_ratio))
            evidence = {"fp16_eps": FP16_EPS, "update_ratio": updates[len(updates) // 2] if updates else None}
            return self.finding(record.step, "weights", (), evidence, group="weights", explainable=False)
        if record.compute_dtype != "float16" or record.overflow_skip:
            return None
        share = record.grad_subnormal
        if self.streak.update(finite(share) and share > self.t.fp16_subnormal_share, record.step) < self.t.persist:
            return None
        return self.finding(self.streak.start(record.step), "subnormal", (),
                            {"subnormal_share": share, "loss_scale": record.loss_scale, "fp16_tiny": FP16_TINY})
