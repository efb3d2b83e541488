"""The one exception type for a user's mistakes.

A :class:`UserError` names what is wrong (a flag, a key, a file) and, in ``hint``, how to
fix it. ``benco-maskclip`` prints it as one line and exits with 2; every other exception is
a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in a flag, a file or the data; the message names it, ``hint`` the fix."""

    hint = None

    def __init__(self, message, hint=None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint
