"""Studies: a spec of arms × seeds, and the statistics that compare the arms.

The public names are read lazily (``tricklab.lazy``): ``tricklab.study.executor_registry`` (the CLI's
``--executor`` choices) does not load pydantic or scipy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tricklab.lazy import lazy_exports

if TYPE_CHECKING:
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

_SPEC = ("METRICS", "TARGET_METRICS", "Arm", "StudySpec", "Target", "higher_is_better", "load_study",
         "study_from_dict")

__getattr__, __dir__ = lazy_exports(__name__, {
    name: f"tricklab.study.{'spec' if name in _SPEC else 'stats'}:{name}" for name in __all__
})
