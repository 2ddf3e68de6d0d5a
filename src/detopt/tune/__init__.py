"""Tuning: the post-processing study (methods and thresholds scored on validation data)."""

from detopt.tune.postprocess import (
    DEFAULT,
    METHOD_SWEEPS,
    Candidates,
    Setting,
    SettingResult,
    StudyResult,
    apply_setting,
    best_per_method,
    collect_candidates,
    run_setting,
    study,
)

__all__ = [
    "DEFAULT",
    "METHOD_SWEEPS",
    "Candidates",
    "Setting",
    "SettingResult",
    "StudyResult",
    "apply_setting",
    "best_per_method",
    "collect_candidates",
    "run_setting",
    "study",
]
