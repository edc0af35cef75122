"""Studies: a spec of arms × seeds, and the statistics that compare the arms."""

from tricklab.study.spec import (
    METRICS,
    TARGET_METRICS,
    Arm,
    StudySpec,
    Target,
    higher_is_better,
    load_study,
    study_from_dict,
)
from tricklab.study.stats import (
    ArmSummary,
    PairedResult,
    StudyStats,
    TargetReached,
    compare_arms,
    effect_words,
    holm,
    paired_difference,
    steps_to_target,
    summarize,
)

__all__ = [
    "METRICS",
    "TARGET_METRICS",
    "Arm",
    "ArmSummary",
    "PairedResult",
    "StudySpec",
    "StudyStats",
    "Target",
    "TargetReached",
    "compare_arms",
    "effect_words",
    "higher_is_better",
    "holm",
    "load_study",
    "paired_difference",
    "steps_to_target",
    "study_from_dict",
    "summarize",
]
