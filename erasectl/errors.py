class UserError(Exception):
    """A mistake in what the user asked for. The CLI prints its message as one line and exits 2.

    The message says what is wrong and how to fix it.
    """
