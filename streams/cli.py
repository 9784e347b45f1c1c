"""The `socnoc` command line: replay, evaluate, rules check, and the streaming commands.

`replay`, `evaluate` and `rules` are built in. The streaming commands (`run`, `worker`,
`gateway`) live in their own modules, listed in `SUBCOMMANDS`; each exposes
`register(subparsers)` that adds its parser with `set_defaults(func=handler)` where
`handler(args) -> int`. They are imported only when chosen, so `socnoc replay` never imports
faust or aiokafka.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import yaml

from schemas.context import load_changes, load_feedback, load_inventory
from schemas.errors import ConfigError, SocnocError
from schemas.rules import load_rules

__all__ = ["main", "build_parser", "SUBCOMMANDS", "EXIT_OK", "EXIT_INVALID", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_INVALID = 1  # `rules check` found invalid files
EXIT_USAGE = 2  # unusable arguments

# name -> (module exposing `register(subparsers)`, one-line help for `socnoc --help`).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("streams.run", "embedded broker + worker + metrics, replaying a bundled scenario"),
    "worker": ("streams.worker", "the correlation worker against a Kafka cluster"),
    "gateway": ("streams.gateway", "the HTTP/syslog ingest gateway"),
}

Handler = Callable[[argparse.Namespace], int]


def _chosen(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the chosen external subcommand's module is imported."""
    parser = argparse.ArgumentParser(prog="socnoc", description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_replay(sub)
    _add_evaluate(sub)
    _add_rules(sub)
    for name, (module, help_text) in SUBCOMMANDS.items():
        if name == chosen:
            register = getattr(importlib.import_module(module), "register", None)
            if register is None:
                raise ConfigError(f"{module} has no register(subparsers) for `socnoc {name}`")
            register(sub)
        else:
            sub.add_parser(name, help=help_text)  # listed in --help; real parser when chosen
    return parser


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `socnoc` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen(args_list)
    if chosen in SUBCOMMANDS and _missing(SUBCOMMANDS[chosen][0]):
        module = SUBCOMMANDS[chosen][0]
        print(
            f"socnoc {chosen}: not available in this build ({module} is missing)", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        parser = build_parser(chosen)
    except ConfigError as exc:
        print(f"socnoc {chosen}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func: Handler = args.func
    try:
        return func(args)
    except SocnocError as exc:
        print(f"socnoc {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


# -- replay ---------------------------------------------------------------------------------


def _add_replay(sub: Any) -> None:
    p = sub.add_parser("replay", help="correlate files offline; write decisions and incidents")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--format", required=True, dest="fmt", metavar="FORMAT")
    p.add_argument("--map", dest="map_spec", metavar="SPEC", help="FIELD=COLUMN,FIELD:=VALUE")
    p.add_argument("--inventory", type=Path, metavar="FILE")
    p.add_argument("--changes", type=Path, metavar="FILE")
    p.add_argument("--rules", type=Path, action="append", default=[], metavar="FILE")
    p.add_argument("--no-default-rules", action="store_true")
    p.add_argument("--feedback", type=Path, metavar="FILE")
    p.add_argument("--engine", choices=("socnoc", "naive"), default="socnoc")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.set_defaults(func=_replay)


def _default_tz() -> ZoneInfo:
    name = os.environ.get("SOCNOC_DEFAULT_TZ", "UTC") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"SOCNOC_DEFAULT_TZ={name!r} is not a known time zone") from exc


def _replay(args: argparse.Namespace) -> int:
    from .replay import build_engine, format_options, load_context, replay

    tz = _default_tz()
    context = load_context(
        inventory=args.inventory,
        changes=args.changes,
        rules=args.rules,
        feedback=args.feedback,
        default_rules=not args.no_default_rules,
    )
    options = format_options(args.fmt, args.map_spec)
    engine = build_engine(context, args.engine)
    result = replay(args.paths, args.fmt, engine, args.out, options=options, default_tz=tz)
    print(result.summary())
    return EXIT_OK


# -- evaluate -------------------------------------------------------------------------------


def _add_evaluate(sub: Any) -> None:
    from .scoring import SCORERS

    p = sub.add_parser("evaluate", help="score socnoc and the naive baseline on labelled data")
    p.add_argument("--dataset", choices=(*SCORERS, "all"), help="a bundled dataset, or all")
    p.add_argument("--all", action="store_true", help="every bundled dataset (= --dataset all)")
    p.add_argument("--data", type=Path, metavar="DIR", help="datasets root (examples/data)")
    p.add_argument("--decisions", type=Path, metavar="DIR", help="score this replay output")
    p.add_argument("--labels", type=Path, metavar="FILE", help="label file for --decisions")
    p.add_argument("--kind", choices=tuple(SCORERS), help="scoring formulas for --decisions")
    p.add_argument("--phases", type=Path, metavar="FILE", help="wazuh: attack_phases.json")
    p.add_argument("--dag", type=Path, metavar="FILE", help="huawei: dag_edges.csv")
    p.add_argument("--out", type=Path, metavar="DIR", help="default build/eval")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from . import evaluate as ev

    sections: dict[str, dict[str, Any]] = {}
    if args.decisions is not None:
        if args.labels is None or args.kind is None:
            raise ConfigError("--decisions needs --labels FILE and --kind KIND")
        extra = {k: v for k, v in (("phases", args.phases), ("dag", args.dag)) if v is not None}
        sections[args.kind] = ev.score_existing(args.decisions, args.labels, args.kind, extra)
    else:
        if args.labels is not None or args.kind is not None:
            raise ConfigError("--labels and --kind go with --decisions DIR")
        chosen = "all" if args.all or args.dataset in (None, "all") else args.dataset
        names = list(ev.DATASETS) if chosen == "all" else [chosen]
        root = args.data or ev.default_data_root()
        out = args.out or Path("build/eval")
        for name in names:
            print(f"evaluating {name} ...", file=sys.stderr)
            sections[name] = ev.evaluate_dataset(ev.DATASETS[name], root, out)
    if args.out is not None or args.decisions is None:
        path = ev.write_report(args.out or Path("build/eval"), sections)
        print(f"wrote {path}", file=sys.stderr)
    print(ev.format_table(sections))
    return EXIT_OK


# -- rules check ----------------------------------------------------------------------------

_LOADERS: dict[str, Callable[[Path], Sequence[object]]] = {
    "rules": load_rules,
    "assets": load_inventory,
    "changes": load_changes,
    "feedback": load_feedback,
}


def _add_rules(sub: Any) -> None:
    p = sub.add_parser("rules", help="rule tools")
    rsub = p.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    check = rsub.add_parser("check", help="validate rule, inventory, change or feedback files")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.set_defaults(func=_rules_check)


def classify(path: Path) -> str:
    """Which loader a context/rule file is for, by its suffix, top-level key or item keys."""
    if path.suffix.lower() == ".csv":
        return "assets"
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in {".jsonl", ".ndjson"}:
            first = next((ln for ln in text.splitlines() if ln.strip()), "")
            data: object = [orjson.loads(first)] if first else []
        else:
            data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, orjson.JSONDecodeError):
        return "rules"  # the loader reports the problem with its file and line
    if isinstance(data, dict) and len(data) == 1:
        key = next(iter(data))
        if key in _LOADERS:
            return str(key)
        data = next(iter(data.values()))
    item = data[0] if isinstance(data, list) and data else None
    if not isinstance(item, dict):
        return "rules"
    if "type" in item or "match" in item or "steps" in item:
        return "rules"
    if "start" in item or "end" in item:
        return "changes"
    if "kind" in item and ("time" in item or "analyst" in item or "signature" in item):
        return "feedback"
    return "assets"


def _rules_check(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.files:
        kind = classify(path)
        try:
            if not path.is_file():
                raise ConfigError("no such file", path=str(path))
            items = _LOADERS[kind](path)
        except ConfigError as exc:
            bad += 1
            print(f"{exc} (checked as {kind})")
            continue
        print(f"{path}: ok ({len(items)} {kind})")
    return EXIT_INVALID if bad else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
