"""User-facing errors: the CLI prints their message on one line and exits 1, without a traceback."""


class HealthSLMError(Exception):
    """A problem the user can fix (bad params, bad data, unreachable host); the message says how."""
