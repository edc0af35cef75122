"""Mixed precision: compute in 16 bits where it is safe, keep the weights and their updates in 32.

The lesson's first section: a float holds numbers only within a range and only to a precision, and training
must keep its values inside both. A binary float with e exponent bits and m mantissa bits has

    largest value ≈ 2^(2^(e−1)),  smallest normal value = 2^(2 − 2^(e−1)),  ε = 2^−m  (the gap after 1)

=========  ====  ====  ==================  ===================  ====================================
format     e     m     largest             smallest normal      ε (relative precision)
=========  ====  ====  ==================  ===================  ====================================
float32    8     23    3.4·10^38           1.2·10^−38           2^−23 ≈ 1.2·10^−7
bfloat16   8     7     3.4·10^38           1.2·10^−38           2^−7 ≈ 7.8·10^−3
float16    5     10    65 504              6.1·10^−5            2^−10 ≈ 9.8·10^−4
=========  ====  ====  ==================  ===================  ====================================

(IEEE 754-2008 for float32 and float16; bfloat16 is float32 with 16 mantissa bits cut off — Kalamkar et al. 2019,
"A Study of BFLOAT16 for Deep Learning Training". The tests check every number against ``torch.finfo``.)

What follows for training:

- **bf16** has float32's range: nothing that fits float32 overflows or underflows in it. It has 3 decimal digits
  of precision, enough for activations and the products of a matrix multiplication (accumulated in float32 by the
  hardware), not for the weights: an update η·g far below ε·|w| ≈ 0.4% of the weight would vanish in
  w + η·g (the lesson's 1e−10 + 1e10 = 1e10). So autocast runs matmuls and convolutions in bf16 while the
  parameters, the gradients' accumulation, the loss and the optimizer stay float32 (Micikevicius et al. 2018,
  "Mixed Precision Training", ICLR: the float32 master copy of the weights). No loss scale is needed.
- **fp16** is three times more precise than bf16 but its range is tiny: values above 65 504 overflow to ∞, and
  gradients below 2^−24 ≈ 6·10^−8 (the smallest subnormal) flush to 0 — in Micikevicius et al. a large part of
  the gradients of an SSD detector. Hence the *loss scale*: backpropagate S·L instead of L, so every gradient is
  S times larger and clears the underflow, then divide the gradients by S before the update. A *dynamic* scale
  (``torch.amp.GradScaler``) starts high (2^16), halves and skips the step when a gradient overflowed to ∞/NaN,
  and doubles after 2000 steps without overflow — so it finds the largest scale that does not overflow.
- **Speed** comes from hardware with 16-bit matrix units (tensor cores on CUDA GPUs, AMX/AVX512-BF16 on recent
  CPUs). On a CPU without them bf16 autocast converts back and forth and can be slower than float32
  (``bench/precision.py`` measures it). fp16 on a CPU is emulated, slower than float32 and gains nothing: refused
  (torch's GradScaler does run there — the doctor's tests use it in hand-written loops).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from tricklab.registry import Registry

PRECISIONS = Registry("precision")
PRECISIONS.register("fp32", formula="float32 everywhere: e = 8, m = 23, ε = 2^−23",
                    reference="IEEE 754-2008 binary32", lesson="the default: range 1e±38, 7 digits",
                    obj=torch.float32)
PRECISIONS.register("bf16", formula="autocast to bfloat16 (e = 8, m = 7, ε = 2^−7); float32 weights and optimizer",
                    reference="Kalamkar et al. 2019, A Study of BFLOAT16 for Deep Learning Training",
                    lesson="float32's range at half the bits: no loss scale needed", obj=torch.bfloat16)
PRECISIONS.register("fp16", formula="autocast to float16 (e = 5, m = 10, max 65504) + dynamic loss scale S: "
                                    "backprop S·L, unscale, skip the step on inf/NaN",
                    reference="Micikevicius et al. 2018, Mixed Precision Training, ICLR",
                    lesson="keep gradients inside float16's small range by scaling the loss", obj=torch.float16)

FORMATS: dict[str, dict[str, float]] = {
    "fp32": {"exponent_bits": 8, "mantissa_bits": 23, "max": 3.4028234663852886e38, "tiny": 1.1754943508222875e-38,
             "eps": 2.0**-23},
    "bf16": {"exponent_bits": 8, "mantissa_bits": 7, "max": 3.3895313892515355e38, "tiny": 1.1754943508222875e-38,
             "eps": 2.0**-7},
    "fp16": {"exponent_bits": 5, "mantissa_bits": 10, "max": 65504.0, "tiny": 2.0**-14, "eps": 2.0**-10},
}
"""The table of the module's docstring as numbers: largest finite value, smallest normal value, ε."""


def refusal(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` cannot train on ``device`` (None when it can): fp16 needs CUDA."""
    if PRECISIONS.canonical(precision) == "fp16" and device.type != "cuda":
        return (f"fp16 trains on CUDA only: on a {device.type} device float16 arithmetic is emulated (slower than "
                "float32) and gains nothing; bf16 has float32's range and needs no loss scale")
    return None


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context the forward pass and the loss run in: ``torch.autocast`` to bf16/fp16, nothing for fp32."""
    name = PRECISIONS.canonical(precision)
    if name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS.get(name).obj)


def loss_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A dynamic loss scaler for fp16 (``torch.amp.GradScaler``: 2^16 to start, ×½ on overflow, ×2 after 2000
    clean steps); None for fp32 and bf16, which need none."""
    return torch.amp.GradScaler(device.type) if PRECISIONS.canonical(precision) == "fp16" else None
