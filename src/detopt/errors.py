"""The detopt error hierarchy.

Every error raised on bad user input derives from :class:`DetoptError`; messages name the
argument (or file and line) and the offending value so a user can fix the input without a
debugger.
"""

from __future__ import annotations


class DetoptError(Exception):
    """Base class of every error detopt raises on purpose."""


class DetoptInputError(DetoptError, ValueError):
    """An argument has the wrong shape, dtype, length or contains non-finite values.

    Also a ``ValueError`` so callers that catch ``ValueError`` keep working.
    """


class DetoptDataError(DetoptError):
    """A data set has defects. ``defects`` lists each one (file, line, kind, what is wrong)."""

    def __init__(self, message: str, defects: list | None = None) -> None:
        super().__init__(message)
        self.defects = list(defects or [])
