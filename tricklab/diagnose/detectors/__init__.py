"""Detectors: probe records and epoch metrics in, findings out — one small unit per problem the doctor names."""

from tricklab.diagnose.detectors.base import Context, Detector, EpochMetrics, Finding, Streak
from tricklab.diagnose.detectors.generalization import Overfitting, TooManyParameters
from tricklab.diagnose.detectors.gradients import ExplodingGradients, VanishingGradients
from tricklab.diagnose.detectors.initialisation import ExplodingInit, VanishingInit
from tricklab.diagnose.detectors.inputs import UnscaledInputs
from tricklab.diagnose.detectors.learning_rate import LearningRateTooHigh, LearningRateTooLow
from tricklab.diagnose.detectors.loss import LossSpike, NonFiniteLoss, Oscillation, Plateau
from tricklab.diagnose.detectors.output import LinearModel, OutputLossMismatch
from tricklab.diagnose.detectors.precision import Fp16Overflow, Fp16Underflow
from tricklab.diagnose.detectors.thresholds import Thresholds
from tricklab.diagnose.detectors.units import DeadUnits, Saturation
from tricklab.diagnose.detectors.update_ratio import UpdateRatio

__all__ = [
    "Context",
    "DeadUnits",
    "Detector",
    "EpochMetrics",
    "ExplodingGradients",
    "ExplodingInit",
    "LearningRateTooHigh",
    "LearningRateTooLow",
    "LinearModel",
    "Finding",
    "Fp16Overflow",
    "Fp16Underflow",
    "LossSpike",
    "NonFiniteLoss",
    "Oscillation",
    "OutputLossMismatch",
    "Overfitting",
    "Plateau",
    "Saturation",
    "Streak",
    "Thresholds",
    "TooManyParameters",
    "UnscaledInputs",
    "UpdateRatio",
    "VanishingGradients",
    "VanishingInit",
]
