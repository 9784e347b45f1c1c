"""The one exception tree of socnoc's schemas: every bad input is one of these."""

from __future__ import annotations

__all__ = [
    "SocnocError",
    "InvalidInput",
    "DecodeError",
    "MissingField",
    "BadTimestamp",
    "BadValue",
    "RecordTooLarge",
    "UnknownFormat",
    "ConfigError",
    "MapSpecError",
    "SnapshotError",
]


class SocnocError(Exception):
    """Root of every error socnoc raises on purpose."""


class InvalidInput(SocnocError):
    """An input record cannot become an alert; the record gets an `invalid` decision."""


class DecodeError(InvalidInput):
    """The bytes are not valid UTF-8 / JSON / CSV for the declared format."""


class MissingField(InvalidInput):
    """A field the format requires is absent or empty."""


class BadTimestamp(InvalidInput):
    """The timestamp is missing, unparseable, not finite, negative or after 2100."""


class BadValue(InvalidInput):
    """A field has the wrong type or an out-of-range value."""


class RecordTooLarge(InvalidInput):
    """The record exceeds the configured size limit."""


class UnknownFormat(SocnocError):
    """The format name is not one socnoc knows (an unusable argument, not a bad record)."""


class ConfigError(SocnocError):
    """A rule, inventory, change or feedback file is invalid; the message names file and line."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class MapSpecError(ConfigError):
    """A `--map` spec, CSV header or adapter option is unusable (an argument, not a record)."""


class SnapshotError(SocnocError):
    """A saved engine or partition state (a checkpoint) is corrupt, truncated or of another format."""
