"""One CSV line at a time: a header's column layout, splitting a line into cells, rejoining.

Records arrive one physical line each (a file line, or one Kafka message), so a CSV adapter
is built with its header: from the file's first line, or the `columns` option
(comma-separated) when lines come one per message.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence

from schemas.errors import DecodeError, MapSpecError

__all__ = ["CsvLayout", "join_cells"]


def _cells(text: str) -> list[str]:
    if '"' not in text:
        return text.split(",")
    try:
        return next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration) as exc:
        raise DecodeError(f"invalid CSV line: {exc}") from None


def join_cells(cells: Sequence[str]) -> str:
    """Cells as one CSV line, quoted only where needed (the inverse of splitting)."""
    out = []
    for cell in cells:
        if "," in cell or '"' in cell or "\n" in cell or "\r" in cell:
            cell = '"' + cell.replace('"', '""') + '"'
        out.append(cell)
    return ",".join(out)


class CsvLayout:
    """The columns of a CSV source, by name and position."""

    def __init__(self, columns: Sequence[str]) -> None:
        names = tuple(c.strip() for c in columns)
        if not names or not any(names):
            raise MapSpecError("a CSV header needs at least one column name")
        seen: set[str] = set()
        for name in names:
            if not name:
                raise MapSpecError("a CSV header has an empty column name")
            if name in seen:
                raise MapSpecError(f"a CSV header names column {name!r} twice")
            seen.add(name)
        self.columns = names
        self.index = {name: i for i, name in enumerate(names)}

    @classmethod
    def from_header(cls, header: str) -> CsvLayout:
        """The layout named by a header line (a UTF-8 BOM and line ending are dropped)."""
        text = header.removeprefix("\ufeff").rstrip("\r\n")
        try:
            return cls(_cells(text))
        except DecodeError as exc:
            raise MapSpecError(f"unreadable CSV header: {exc}") from None

    def position(self, column: str) -> int:
        """The index of a column, or a MapSpecError naming the known ones."""
        try:
            return self.index[column]
        except KeyError:
            known = ", ".join(self.columns)
            raise MapSpecError(f"no column {column!r} in the CSV header ({known})") from None

    def split(self, text: str) -> list[str]:
        """The cells of one data line; a wrong cell count is a DecodeError."""
        cells = _cells(text.rstrip("\r\n"))
        if len(cells) != len(self.columns):
            raise DecodeError(f"expected {len(self.columns)} CSV columns, got {len(cells)}")
        return cells
