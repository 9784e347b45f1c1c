"""Safe YAML/JSONL loading of config documents, with errors that name the file and line."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.errors import ConfigError

__all__ = [
    "load_documents",
    "read_text",
    "validate_items",
    "validate_with",
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "MAX_ALIAS_NODES",
]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 50  # nesting levels; real config files use < 10
MAX_ALIAS_NODES = 1_000_000  # values reachable through aliases, counted once per alias use


# The only tags a config value may carry (implicitly or written out): plain YAML data.
_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "timestamp", "seq", "map", "merge")
)


def _bound_error(problem: str, event: Any) -> yaml.YAMLError:
    return yaml.composer.ComposerError(None, None, problem, event.start_mark)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with bounds on nesting and alias expansion, and no duplicate keys.

    PyYAML shares an aliased node instead of copying it, but validation and the engine walk
    every reference again, so a small file of nested aliases ("billion laughs") could expand
    into billions of values; deep nesting would exhaust Python's recursion limit; a
    duplicate key would silently drop the first value.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> values it expands to, once composed
        self._expanded = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self._next_event()
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias is PyYAML's own error
                size = self._sizes.get(id(target))
                if size is None:
                    raise _bound_error("an alias refers to a node that contains it", event)
                self._expanded += size
                if self._expanded > MAX_ALIAS_NODES:
                    raise _bound_error(f"aliases expand to more than {MAX_ALIAS_NODES} values", event)
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise _bound_error(f"nested deeper than {MAX_DEPTH} levels", self._next_event())
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None and node.tag not in _TAGS:
            raise _bound_error(f"tag {node.tag!r} is not allowed (plain YAML values only)", node)
        if isinstance(node, yaml.SequenceNode):
            self._sizes[id(node)] = 1 + sum(self._sizes.get(id(child), 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            self._sizes[id(node)] = 1 + sum(
                self._sizes.get(id(key), 1) + self._sizes.get(id(value), 1) for key, value in node.value
            )
        elif node is not None:
            self._sizes[id(node)] = 1
        return node

    def _next_event(self) -> Any:
        self.check_event()  # parses the next event into current_event (peek_event is untyped)
        return self.current_event

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ArithmeticError, AttributeError, KeyError, TypeError, ValueError) as exc:
            # PyYAML's constructors fail this way on an impossible value: `2024-02-30`, `!!int x`.
            why = f": {exc}" if type(exc) is ValueError else ""
            kind = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid {kind} {str(node.value)[:40]!r}{why}", node.start_mark
            ) from exc

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if (key.tag, key.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"duplicate key {key.value!r}", key.start_mark
                    )
                seen.add((key.tag, key.value))
        return super().construct_mapping(node, deep)


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


def read_text(path: Path) -> str:
    """A config file as text: at most MAX_CONFIG_BYTES, UTF-8, or a ConfigError."""
    try:
        with path.open("rb") as handle:  # never read more than the limit (a FIFO, /dev/zero)
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"file larger than {MAX_CONFIG_BYTES} bytes", path=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 (byte {exc.start})", path=str(path)) from exc


def _parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (for line numbers) and its data, composed once."""
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        return root, loader.construct_document(root) if root is not None else None
    except (ArithmeticError, ValueError) as exc:  # PyYAML's scanner on an escape like "\U8000C2033"
        raise yaml.scanner.ScannerError(None, None, f"invalid escape sequence ({exc})", loader.get_mark()) from exc
    finally:
        loader.dispose()


def load_documents(path: Path, list_key: str) -> list[_Loc]:
    """Items of a YAML file (a list, or a mapping holding `list_key`) or a JSONL file."""
    text = read_text(path)
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        items: list[_Loc] = []
        # JSON Lines end at "\n" only: str.splitlines() would also cut at U+0085, U+2028 and
        # U+2029, which JSON strings may hold unescaped.
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                items.append(_Loc(orjson.loads(line), None, number))
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"invalid JSON: {exc}", path=str(path), line=number) from exc
        return items
    try:
        root, data = _parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where: int | None = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", path=str(path), line=where) from exc
    if data is None:
        return []
    if isinstance(data, dict) and isinstance(root, yaml.MappingNode):
        # Judge the keys on the nodes (construction flattened any `<<` merge into them), so a
        # non-string key such as `1:` or `true:` is an unknown key too.
        for key, _ in root.value:
            if not isinstance(key, yaml.ScalarNode) or key.value != list_key:
                shown = repr(key.value) if isinstance(key, yaml.ScalarNode) else "(a collection)"
                raise ConfigError(
                    f"unknown top-level key {shown} (expected {list_key!r})",
                    path=str(path),
                    line=key.start_mark.line + 1,
                )
        seq_node = root.value[-1][1] if root.value else None  # a merged key comes first
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
