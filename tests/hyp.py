"""Hypothesis profiles: ``ci`` (the default: derandomized, the same examples on every run, no
example database) and ``thorough`` (``DETOPT_HYPOTHESIS=thorough``, ``make test-thorough``: new
random examples each run, ten times as many). Tests size their runs with :func:`examples`."""

from __future__ import annotations

import os

from hypothesis import settings

PROFILE = os.environ.get("DETOPT_HYPOTHESIS", "ci")
if PROFILE not in ("ci", "thorough"):
    raise ValueError(f"DETOPT_HYPOTHESIS must be ci or thorough, got {PROFILE!r}")
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("thorough", derandomize=False, print_blob=True)
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """``n`` examples in the ``ci`` profile, ``10 n`` in ``thorough``."""
    return n * (10 if PROFILE == "thorough" else 1)
