"""Safe YAML/JSONL loading of config documents, with errors that name the file and line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.errors import ConfigError

__all__ = ["load_documents", "validate_items", "validate_with", "MAX_CONFIG_BYTES"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
MAX_CONFIG_BYTES = 16 * 1024 * 1024


class _Loc:
    """A parsed item with the line each (nested) key starts on."""

    def __init__(self, value: Any, node: yaml.Node | None, line: int) -> None:
        self.value = value
        self.node = node
        self.line = line

    def line_of(self, loc: Sequence[int | str]) -> int:
        node = self.node
        line = self.line
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                nxt = None
                for key, val in node.value:
                    if key.value == part:
                        line = key.start_mark.line + 1
                        nxt = val
                        break
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if 0 <= part < len(node.value):
                    node = node.value[part]
                    line = node.start_mark.line + 1
                else:
                    node = None
            else:
                break
            if node is None:
                break
        return line


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"file larger than {MAX_CONFIG_BYTES} bytes", path=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 (byte {exc.start})", path=str(path)) from exc


def load_documents(path: Path, list_key: str) -> list[_Loc]:
    """Items of a YAML file (a list, or a mapping holding `list_key`) or a JSONL file."""
    text = _read(path)
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        items: list[_Loc] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(_Loc(orjson.loads(line), None, number))
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"invalid JSON: {exc}", path=str(path), line=number) from exc
        return items
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where: int | None = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", path=str(path), line=where) from exc
    if data is None:
        return []
    if isinstance(data, dict) and isinstance(root, yaml.MappingNode):
        unknown = [k for k in data if k != list_key]
        if unknown:
            line = next(k.start_mark.line + 1 for k, _ in root.value if k.value == unknown[0])
            raise ConfigError(
                f"unknown top-level key {unknown[0]!r} (expected {list_key!r})",
                path=str(path),
                line=line,
            )
        seq_node = next((v for k, v in root.value if k.value == list_key), None)
        data = data.get(list_key) or []
        root = seq_node
    if not isinstance(data, list) or not isinstance(root, yaml.SequenceNode | None):
        raise ConfigError(f"expected a list of items or a {list_key!r} key", path=str(path), line=1)
    if root is None:
        return []
    return [_Loc(v, n, n.start_mark.line + 1) for v, n in zip(data, root.value, strict=True)]


def validate_items(path: Path, items: list[_Loc], model: type[M]) -> list[M]:
    """Validate each item against `model`; the first error names file, line and field."""
    return validate_with(path, items, TypeAdapter(model))


def validate_with(path: Path, items: list[_Loc], adapter: TypeAdapter[T]) -> list[T]:
    """Validate each item with a pydantic TypeAdapter; errors name file, line and field."""
    out: list[T] = []
    for item in items:
        if not isinstance(item.value, dict):
            raise ConfigError("expected a mapping", path=str(path), line=item.line)
        try:
            out.append(adapter.validate_python(item.value))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(p for p in err.get("loc", ()) if not _is_tag(p, item.value))
            field = ".".join(str(p) for p in loc) or "item"
            raise ConfigError(
                f"{field}: {err.get('msg', 'invalid')}",
                path=str(path),
                line=item.line_of(loc),
            ) from exc
    return out


def _is_tag(part: int | str, value: object) -> bool:
    """Discriminated unions prefix error locations with the tag value; drop it."""
    return isinstance(value, dict) and isinstance(part, str) and part == value.get("type")
