class UserError(Exception):
    """A mistake in what the user asked for. The CLI prints its message as one line and exits 2.

    The message says what is wrong and how to fix it.
    """


class TrainingDiverged(Exception):
    """The loss became NaN or infinite. The CLI prints one line naming the step and the
    hyper-parameters, writes no checkpoint of the broken weights and exits 1."""


class ConfigError(UserError, ValueError):
    """A configuration value out of range: a ``ValueError`` for code that builds configs, and a
    user's mistake for the CLI (one line, exit 2), since the values come from options."""
