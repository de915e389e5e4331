"""Errors that carry their fix: raised before any heavy work, recorded as a job's reason."""


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and the fix."""


class UnsupportedCell(ConfigError):
    """A combination that does not exist (a format at a bit width it does not offer): in a
    sweep over formats and widths such a cell is skipped with this reason, not failed."""


def choices(values) -> str:
    """'a, b, c': the valid choices, for a message."""
    return ", ".join(str(v) for v in values)
