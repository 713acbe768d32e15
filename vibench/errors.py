"""Errors meant for the user: printed as a short message, no traceback, exit code 2."""


class VibenchError(Exception):
    """Something the user can fix (configuration, data, paths); the message says how.

    Printed without a traceback; the process exits with ``exit_code`` (2: bad input, refused
    before anything ran).
    """

    exit_code = 2


class ConfigError(VibenchError):
    """An invalid configuration value or an unknown key."""


class DataError(VibenchError):
    """Missing, corrupt or unsuitable data."""


class NonFiniteLoss(VibenchError):
    """The training loss became NaN or infinite; the run stopped (exit code 1)."""

    exit_code = 1


class Interrupted(VibenchError):
    """The run was stopped by SIGTERM after saving a checkpoint (exit code 143, as for SIGTERM)."""

    exit_code = 143
