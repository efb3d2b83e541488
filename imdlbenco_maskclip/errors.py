"""The one exception type for a user's mistakes.

A :class:`UserError` names what is wrong (a flag, a key, a file) and, in ``hint``, how to
fix it. ``benco-maskclip`` prints it as one line and exits with 2; every other exception is
a bug and keeps its traceback. Subclasses say where the mistake is: ``CheckpointError``,
``DataError`` (``datasets.BadSampleError`` is one), ``FlagValueError``, and MaskCLIP's
``WeightSourceError``.
"""


class UserError(Exception):
    """A mistake in a flag, a file or the data; the message names it, ``hint`` the fix."""

    hint = None

    def __init__(self, message, hint=None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class FlagValueError(UserError, ValueError):
    """A flag value a model's constructor refused (it raised ``ValueError``, which this still is)."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read, or whose weights do not fit the model to build."""


class DataError(UserError):
    """A data source or its contents that cannot be used as given: a path, a split, a column, a
    file. Dataset readers (OpenSDID, and any other registered here) raise it, or a subclass,
    where they find the mistake; the commands catch only this family."""
