"""The one exception type a user sees: a problem with their input, named in one line."""


class LipSyncError(Exception):
    """A user-facing error: bad input, missing weights, no face. The CLI prints it and exits 2.

    The message is one line that says what is wrong and, where possible, what to do about it.
    """
