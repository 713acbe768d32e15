"""Errors meant for the user: printed as a short message, no traceback, exit code 2."""


class VibenchError(Exception):
    """Something the user can fix (configuration, data, paths); the message says how."""


class ConfigError(VibenchError):
    """An invalid configuration value or an unknown key."""


class DataError(VibenchError):
    """Missing, corrupt or unsuitable data."""
