"""Tuning: the post-processing study (methods and thresholds scored on validation data) and the
hyperparameter search (:func:`search`: an Optuna study of training runs, :mod:`detopt.tune.hpo`)."""

from detopt.tune.hpo import search
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
    "search",
    "study",
]
