"""Data augmentation on the device, per batch: new, label-preserving variants of the training examples every epoch.

The lesson's data section: more data is the best regulariser, and when there is none, make it — transform each
example in a way that keeps its class (a digit shifted by two pixels is the same digit). The transforms here work
on a whole batch at once on its device (index arithmetic, no per-example Python), draw their random numbers from
a generator the caller seeds per batch (``batch_generator(seed, step)``: a function of the run's seed and the
step alone, so a resumed run draws what an uninterrupted one draws without saving any generator state), and are
applied to training batches only.

- ``shift_noise`` (1-D signals, (B, C, L)): each example moved by an integer shift s ~ U{−S..S} along its length,
  zero-filled where it moved away from, plus Gaussian noise: x'_t = x_{t−s} + σ·ε_t, ε_t ~ N(0, 1). MNIST-1D's
  examples are made by exactly such shifts and noise (Greydanus 2020, "Scaling down deep learning", §2), so the
  augmentation draws more examples from the data's own generating process.
- ``crop_flip`` (images, (B, C, H, W)): pad by P zeros on every side, crop an H×W window at a random offset
  (dy, dx) ~ U{0..2P}², and mirror it left–right with probability ½ — the standard CIFAR-10 augmentation
  (He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition", §4.2: 4-pixel padding, random 32×32
  crops, horizontal flips; Krizhevsky, Sutskever & Hinton 2012 before them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from tricklab.registry import Registry

AUGMENTATIONS = Registry("augment")

Augment = Callable[[Tensor, torch.Generator], Tensor]
"""``augment(x, generator)``: a transformed copy of the batch ``x``, random numbers from ``generator``."""


def batch_generator(seed: int, step: int, device: torch.device | str) -> torch.Generator:
    """The generator of the batch at global ``step`` of a run with ``seed``, on ``device``: a function of (seed,
    step) alone, so an interrupted and resumed run augments exactly as an uninterrupted one."""
    return torch.Generator(device=device).manual_seed((seed * 2_654_435_761 + step * 40_503 + 1) % (2**63 - 1))


@AUGMENTATIONS.register(
    "shift_noise", formula="x'_t = x_{t-s} + σ·ε_t, s ~ U{-S..S}, ε_t ~ N(0, 1) (zero-filled)",
    reference="Greydanus 2020, Scaling down deep learning (MNIST-1D's own shifts and noise)",
    lesson="make more data: label-preserving shifts and noise of 1-D signals", aliases=("shift",))
def shift_noise(x: Tensor, generator: torch.Generator, max_shift: int, noise_std: float) -> Tensor:
    """Every example of ``x`` (B, C, L) shifted by its own s ~ U{−max_shift..max_shift} (zero-filled), plus
    N(0, noise_std²) noise; see the module's docstring."""
    if x.ndim != 3:
        raise ValueError(f"shift_noise augments 1-D signals (batch, channels, length); got shape {tuple(x.shape)}")
    b, _, length = x.shape
    shift = torch.randint(-max_shift, max_shift + 1, (b, 1), generator=generator, device=x.device)
    source = torch.arange(length, device=x.device) - shift                   # x'_t = x_{t−s}
    valid = (source >= 0) & (source < length)
    index = source.clamp(0, length - 1).unsqueeze(1).expand_as(x)
    out = torch.gather(x, 2, index) * valid.unsqueeze(1)
    if noise_std > 0:
        out = out + noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return out


@AUGMENTATIONS.register(
    "crop_flip", formula="x' = flip_p(crop_{dy,dx}(pad_P(x))), (dy, dx) ~ U{0..2P}², p = 1/2",
    reference="He, Zhang, Ren & Sun 2016, CVPR, §4.2 (CIFAR-10: pad 4, random crop, horizontal flip)",
    lesson="make more data: label-preserving crops and mirror images")
def crop_flip(x: Tensor, generator: torch.Generator, padding: int) -> Tensor:
    """Every image of ``x`` (B, C, H, W) padded by ``padding`` zeros, cropped at its own random offset and
    mirrored left–right with probability ½; see the module's docstring."""
    if x.ndim != 4:
        raise ValueError(f"crop_flip augments images (batch, channels, height, width); got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    p = padding
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=x.device)
    flip = torch.rand((b, 1), generator=generator, device=x.device) < 0.5
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flip, w - 1 - cols, cols) + dx                          # mirrored inside the crop
    rows = torch.arange(h, device=x.device) + dy
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


@AUGMENTATIONS.register("none", formula="x' = x", reference="-", lesson="no augmentation")
def no_augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """``x`` as it is."""
    return x


def build_augment(name: str, *, shift: int = 4, noise: float = 0.05) -> Augment | None:
    """The augmentation ``name`` (``AUGMENTATIONS``) as ``augment(x, generator)``; None for "none"."""
    name = AUGMENTATIONS.canonical(name)
    if name == "none":
        return None
    if name == "shift_noise":
        return lambda x, g: shift_noise(x, g, shift, noise)
    return lambda x, g: crop_flip(x, g, shift)


def input_kind(name: str) -> int:
    """The number of dimensions of one example (without the batch) that augmentation ``name`` transforms: 2 for
    1-D signals (C, L), 3 for images (C, H, W), 0 for "none" (any)."""
    return {"none": 0, "shift_noise": 2, "crop_flip": 3}[AUGMENTATIONS.canonical(name)]
