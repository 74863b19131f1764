"""User-facing errors.

Anything a user can cause (a wrong path, a bad flag, a file that does not fit) raises
:class:`NoaError` with one message saying what is wrong and what to do. The CLI prints that
message and exits non-zero; programming errors keep their tracebacks.
"""


class NoaError(Exception):
    """A mistake in the user's input, reported as one clear message."""
