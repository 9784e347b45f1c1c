"""JSON Schema of every published or loaded record, written to `schemas/json/` (stable).

`python -m schemas.export` (`make schemas`) rewrites the files; `python -m schemas.export
--check` exits 1 if any file is missing or stale. Records socnoc publishes are exported in
serialization mode (what consumers read), inputs (inventory, changes, feedback, rules) in
validation mode (what socnoc accepts). Keys are sorted, so the output is byte-stable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, TypeAdapter

from schemas.context import Asset, Change, Feedback
from schemas.models import Alert, DeadLetter, Decision, Incident, IncidentEvent
from schemas.rules import Rule

__all__ = ["SCHEMA_DIR", "EXPORTS", "render", "render_all", "write_all", "stale", "main"]

SCHEMA_DIR = Path(__file__).parent / "json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
Mode = Literal["validation", "serialization"]

EXPORTS: dict[str, tuple[type[BaseModel] | TypeAdapter[Any], Mode]] = {
    "alert": (Alert, "serialization"),
    "decision": (Decision, "serialization"),
    "incident": (Incident, "serialization"),
    "incident_event": (IncidentEvent, "serialization"),
    "dead_letter": (DeadLetter, "serialization"),
    "asset": (Asset, "validation"),
    "change": (Change, "validation"),
    "feedback": (Feedback, "validation"),
    "rule": (TypeAdapter(Rule), "validation"),
}


def render(name: str) -> bytes:
    """The JSON Schema document of one export, as sorted, indented UTF-8 JSON."""
    target, mode = EXPORTS[name]
    if isinstance(target, TypeAdapter):
        schema = target.json_schema(mode=mode)
        schema.setdefault("title", "Rule")
    else:
        schema = target.model_json_schema(mode=mode)
    document = {"$schema": _DIALECT, "$id": f"socnoc/{name}.json", **schema}
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def render_all() -> dict[str, bytes]:
    """Every export: file name -> content."""
    return {f"{name}.json": render(name) for name in EXPORTS}


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file that changed; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, content in render_all().items():
        path = directory / filename
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            written.append(path)
    return written


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    out = []
    for filename, content in render_all().items():
        path = directory / filename
        if not path.exists() or path.read_bytes() != content:
            out.append(filename)
    return out


def main(argv: list[str] | None = None) -> int:
    """Write the schemas, or with --check report stale ones (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="output directory")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale(args.dir)
        for name in bad:
            sys.stderr.write(f"stale JSON Schema: {args.dir / name}\n")
        return 1 if bad else 0
    for path in write_all(args.dir):
        sys.stderr.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
