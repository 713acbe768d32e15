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
