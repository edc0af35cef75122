"""Every number the detectors judge by, in one dataclass, each with where it comes from.

Sources named below:

- AUTOTRAINER — Zhang, Zhai, Ma, Xu & Chen, "AUTOTRAINER: An Automatic DNN Training Problem Detection and
  Repair System", ICSE 2021; default parameters in its ``utils/monitor.py``: β₁ = 1e-3 and β₂ = 1e-4
  (vanishing), β₃ = 70 (exploding), γ = 0.7 (dying ReLU), train/test accuracy gap 0.1 (overfitting),
  ε = 0.01 (loss change per epoch). AUTOTRAINER judges gradient problems only while training does not
  converge — we keep that idea as the "is the loss moving?" gate.
- Karpathy, CS231n "Neural Networks Part 3": the update/weight ratio ‖Δw‖/‖w‖ should be about 1e-3; far
  lower, the learning rate is too low; far higher, too high.
- He, Zhang, Ren & Sun 2015 ("Delving Deep into Rectifiers") and Glorot & Bengio 2010: a well-initialised
  network keeps the variance of the forward signal about constant from layer to layer, so a signal that
  shrinks by orders of magnitude means the gradients of every layer shrink with it.
- LeCun, Bottou, Orr & Müller 1998 ("Efficient BackProp"): inputs should have mean ≈ 0 and variance ≈ 1,
  the premise of every init scheme's variance formula.
- Samuelson's inequality (1968): a standardised value satisfies |z| ≤ √(N − 1), so on a dataset of fewer
  than a million examples no standardised input exceeds 1000 in magnitude.
- The lesson (capacity check in ``tricklab.tricks.regularization``): more than 10 parameters per training
  example is a warning sign.

Numbers marked "ours" are engineering choices; they were checked (not fitted) against
``bench/doctor_corpus.py``: healthy runs of every architecture on three datasets raise no alarm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    """Detector thresholds. Defaults and their sources are documented per field (see the module docstring)."""

    # -- persistence (ours): a condition must hold on this many consecutive probes before it is an alarm.
    # With the probe's default period of 20 steps that is 60 steps; one-off minibatch outliers do not pass.
    # NaN/Inf losses and gradients are immediate; a loss spike is judged on one probe, with a high bar.
    persist: int = 3

    # -- "is the loss moving?" (ours, after AUTOTRAINER's not-converging gate): the median loss of the last
    # ``persist`` probes must be at least this much (relative) below the median of the ``persist`` before
    # them (early in a run: below the first probe's loss) — else the run is "stalled" and the gradient-ratio
    # rules may name a problem.
    moving_improvement: float = 0.05

    # -- vanishing gradients
    vanishing_ratio: float = 1e-3          # AUTOTRAINER β₁: ‖g_first‖/‖g_last‖ below this ...
    vanishing_first_grad: float = 1e-4     # ... and AUTOTRAINER β₂: ‖g_first‖ below this. "first" is the front of
                                           # the net: the largest gradient among its first quarter of layers
    signal_collapse: float = 1e-3          # forward signal: min_k std_k / std_first below this (He 2015; β₁'s
                                           # three orders of magnitude applied to the activations)

    # -- exploding gradients
    exploding_ratio: float = 70.0          # AUTOTRAINER β₃: ‖g_first‖/‖g_last‖ above this
    exploding_growth: float = 10.0         # ours: global ‖g‖ an order of magnitude above its value at the start
                                           # while the loss is worse than at the start
    divergence_factor: float = 1.5         # ours: the training loss above 1.5 × its value at the first probe
                                           # (≈ ln C for a fresh classifier) on ``persist`` consecutive probes:
                                           # the steps are so large that training climbs out of the basin. With
                                           # batch norm the gradient norm stays bounded (scale invariance) while
                                           # the logits, and the loss, blow up — growth alone misses that case

    # -- units
    dead_fraction: float = 0.7             # AUTOTRAINER γ: share of a ReLU layer's units dead
    saturated_fraction: float = 0.5        # ours: more than half of a sigmoid/tanh layer in the flat part
                                           # (|tanh| > 0.97: derivative < 0.06, i.e. < 6 % of its peak)

    # -- update ratio (Karpathy): log10(‖Δw‖/‖w‖) of the median layer outside [low, high]
    update_log10_low: float = -5.0
    update_log10_high: float = -1.0
    update_lr_gate: float = 0.1            # ours: judge "too small" only while lr >= this × the peak lr seen,
                                           # so a schedule's deliberate annealing is not an alarm

    # -- loss
    spike_factor: float = 3.0              # ours: a probe loss above 3 × the median of the recent probes ...
    spike_jump: float = 0.5                # ... and above it by at least half of the loss at the start
    oscillation_window: int = 8            # ours: probes judged together
    oscillation_turns: int = 4             # direction changes of the loss in the window (of window − 2)
    oscillation_amplitude: float = 0.5     # max − min of the window, as a fraction of the loss at the start
    plateau_window: int = 8                # ours: probes; first half vs second half of the window
    plateau_improvement: float = 0.02      # relative improvement below this = not moving
    plateau_loss_fraction: float = 0.9     # ... while the loss is still within 10 % of the start loss (the run
                                           # has not got going; per-batch noise hides slower progress, which
                                           # the epoch-level rule below judges on smooth epoch means)
    plateau_epochs: int = 2                # epoch-level: train loss over this many epochs ...
    plateau_epoch_improvement: float = 0.01  # ... improved by less than this (relative; AUTOTRAINER ε = 0.01)
    plateau_fit_accuracy: float = 0.99     # a training set fit this well is converged, not stuck
    plateau_lr_gate: float = 0.1           # ours: not while the schedule has annealed lr below 0.1 × peak
    plateau_min_steps: int = 100           # ours: either rule's window spans this many optimizer steps at least
                                           # (8 probes at the default period of 20 span 140; at a period of 5, 35
                                           # steps are an LSTM's usual slow start; two one-step epochs — 60
                                           # examples, batch 64 — show nothing)

    # -- overfitting (AUTOTRAINER's "test not well" gap and "test turns bad")
    overfit_gap: float = 0.1               # train accuracy − val accuracy at least this ...
    overfit_epochs: int = 2                # ... on this many consecutive epochs; or val loss rising while the
    overfit_change: float = 0.01           # train loss falls, each by more than this (relative), that long
    overfit_learned: float = 0.9           # ours: judged only once the best validation loss is at most this ×
                                           # the loss at the start (≈ ln C): the model has beaten chance

    # -- unscaled inputs (LeCun et al. 1998; Samuelson 1968)
    input_rms_high: float = 10.0           # root mean square of the inputs an order of magnitude above 1
    input_rms_low: float = 1e-2            # or two orders below it
    input_absmax: float = 1000.0           # no standardised input of < 1e6 examples reaches this

    # -- capacity (the lesson; ``tricklab.tricks.regularization.capacity_warning``)
    params_per_example: float = 10.0

    # -- the initialisation, judged on the first probe (``detectors.initialisation``)
    init_loss_factor: float = 3.0          # ours: loss at init ≥ 3 × ln C (a fresh classifier's is ≈ ln C)
    init_gain_high: float = 4.0            # ours: a layer's weight gain √(n_in·mean W²) ≥ 4 — 2.8 × He's √2,
                                           # a variance 8 × He's (N(0, 1) weights reach it from n_in = 16)
    init_gain_low: float = 0.3             # ours: ≤ 0.3 — half PyTorch's default 1/√3, 0.2 × He's
    init_signal_growth: float = 100.0      # ours: the signal reaching a later layer (or the output) ≥ 100 ×
                                           # the first layer's input rms: two orders of magnitude
    init_signal_decay: float = 1e-3        # He et al. 2015's argument with β₁'s three orders of magnitude

    # -- the learning rate against the optimizer's typical range (``detectors.learning_rate``)
    lr_range_factor: float = 1.0           # the typical range is widened by this factor each way
    lr_weight_inflation: float = 3.0       # ours: the median layer's ‖W‖ at 3 × its first-probe value

    # -- output and loss (``detectors.output``)
    probability_tolerance: float = 1e-3    # rows within 1e-3 of summing to 1, every value in [0, 1]

    # -- overfitting, statistical (``detectors.generalization``)
    overfit_z: float = 2.0                 # the validation loss above its best by 2 standard errors (≈ 95 %)
    overfit_above_chance: float = 0.15     # ours — learned: validation accuracy ≥ chance + 0.15 × (1 − chance):
                                           # 23.5 % for ten classes (an unstable start at SGD lr 50 sat at 23 %
                                           # with its training loss rising; 60 examples of the teacher task
                                           # memorised by a wide MLP reach 36 % while the val loss climbs ×6)
    overfit_gap_large: float = 0.3         # ours: 3 × AUTOTRAINER's gap — memorisation, even while the
                                           # validation loss still creeps down
    plateau_floor: float = 0.05            # train loss below 5 % of the start loss is a floor, not a plateau

    # -- float16's range (``detectors.precision``; the format's limits are IEEE 754's, the scaler's habits
    # ``torch.amp.GradScaler``'s defaults: ×½ and a skipped step on overflow, ×2 after 2000 clean steps)
    fp16_skip_share: float = 0.05          # ours: a loss scaler skipping more than 5 % of the steps ... (a healthy
                                           # one skips about 1 in 2000, when it tries a doubled scale; every skip
                                           # halves the scale, so 10 in 200 steps is a scale falling 2^10)
    fp16_skip_span: int = 200              # ... over a window of at least this many steps
    fp16_calibration_steps: int = 100      # the first steps, where a scaler halves its way down from 2^16 to the
                                           # scale the model needs, are calibration, not overflow
    fp16_min_scale: float = 1.0            # a scale below 1 on ``persist`` probes: the gradients overflow float16
                                           # at their true size, no scale can help
    fp16_subnormal_share: float = 0.05     # ours: more than 5 % of the weight layers' nonzero gradient entries
                                           # below float16's smallest normal number after the loss scale

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Thresholds.{f.name} must be a number, got {value!r}")
        for name in ("persist", "oscillation_window", "plateau_window", "plateau_epochs", "overfit_epochs",
                     "fp16_skip_span"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Thresholds.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.update_log10_low >= self.update_log10_high:
            raise ValueError("Thresholds.update_log10_low must be below update_log10_high")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
