"""Coverage-guided fuzzing (atheris/libFuzzer) of socnoc's input parsers; optional, for `make fuzz`.

    python -m tests.fuzz.atheris_targets TARGET [-atheris_runs=N] [libFuzzer options]

TARGET is one of: rules, assets, changes, feedback (YAML, or JSONL with a leading 0x00 byte),
topology, mapspec, adapters, syslog, gateway. Property: nothing but socnoc's own typed errors
escapes (the same contract as the hypothesis tests). atheris is not a project dependency:
`pip install atheris` (Linux wheels) to use this; without it the module says so and exits 2.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import atheris
except ImportError:  # pragma: no cover - optional tool
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["schemas", "streams.syslog", "streams.gateway"]):
        import orjson

        from schemas.adapters.base import ParseContext
        from schemas.adapters.mapspec import MapSpec
        from schemas.adapters.registry import FORMATS, get_adapter
        from schemas.context import load_changes, load_feedback, load_inventory
        from schemas.errors import ConfigError, InvalidInput, SocnocError
        from schemas.rules import load_rules
        from streams import gateway
        from streams.syslog import FrameDecoder
    from tests.fuzz.test_fuzz_config import known_unfixed

WORKDIR = Path(tempfile.mkdtemp(prefix="socnoc-atheris-"))
CSV_MAP = "time=t,end=e,asset=a,signature=s,severity=v,domain=d,status=st,id=i"


def _config(loader: Callable[[Path], list[Any]], name: str) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        suffix = ".jsonl" if data[:1] == b"\0" else ".yml"
        path = WORKDIR / f"{name}{suffix}"
        path.write_bytes(data[1:] if suffix == ".jsonl" else data)
        try:
            loader(path)
        except ConfigError:
            pass
        except Exception as exc:
            if not known_unfixed(exc):
                raise

    return target


def topology(data: bytes) -> None:
    path = WORKDIR / "topology.csv"
    path.write_bytes(data)
    try:
        load_inventory(path)
    except ConfigError:
        pass
    except Exception as exc:
        if not known_unfixed(exc):
            raise


def mapspec(data: bytes) -> None:
    try:
        MapSpec.parse(data.decode("utf-8", "replace"))
    except SocnocError:
        pass


_ADAPTERS: dict[str, Any] = {}


def adapters(data: bytes) -> None:
    if not data:
        return
    fmt = FORMATS[data[0] % len(FORMATS)]  # the first byte picks the format
    if fmt not in _ADAPTERS:
        options = {"csv": {"map": CSV_MAP, "columns": "t,e,a,s,v,d,st,i"},
                   "jsonl": {"map": "time=ts,asset=host.name,signature=rule.id,domain:=ops"}}.get(fmt, {})
        _ADAPTERS[fmt] = get_adapter(fmt, options)
    try:
        _ADAPTERS[fmt].parse(data[1:], ParseContext(record_id="f:1"))
    except InvalidInput:
        pass


def syslog(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    limit = fdp.ConsumeIntInRange(1, 256)
    decoder = FrameDecoder(limit)
    while fdp.remaining_bytes():
        decoder.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64)))
        assert len(decoder._buf) <= 2 * limit + 12
    decoder.finish()


def gateway_alert(data: bytes) -> None:
    try:
        item = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    try:
        gateway._generic_alert(item, 1024 * 1024)
    except InvalidInput:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {}
if atheris is not None:
    TARGETS = {
        "rules": _config(load_rules, "rules"),
        "assets": _config(load_inventory, "assets"),
        "changes": _config(load_changes, "changes"),
        "feedback": _config(load_feedback, "feedback"),
        "topology": topology,
        "mapspec": mapspec,
        "adapters": adapters,
        "syslog": syslog,
        "gateway": gateway_alert,
    }


ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "formats"
_CHANGE = (b'- {id: c1, assets: [db-1], start: 2024-03-01T00:00:00Z, end: 2024-03-01T02:00:00Z, kind: patch}\n'
           b'- {id: c2, kind: scan, source: 198.51.100.7, start: 2024-03-01T00:00:00Z, end: 2024-03-02T00:00:00Z}\n')
_FEEDBACK = (b"feedback:\n- {id: f1, kind: silence, time: 2024-03-01T00:00:00Z, asset: web-1, signature: x}\n"
             b"- {id: f2, kind: ack, time: 2024-03-01T00:00:00Z, incident_id: INC-1, analyst: ana}\n")


def seeds(name: str) -> list[bytes]:
    """Starting inputs: real documents of each kind, so mutation starts from valid structure."""
    if name == "rules":
        text = (ROOT / "schemas" / "default_rules.yml").read_bytes()
        return [text, b"rules: [&a {id: x, type: suppress, match: {}, reason: r}, {<<: *a, id: y}]\n"]
    if name == "assets":
        return [b"assets:\n- {id: web-1, aliases: [10.0.0.5, web-1.example], criticality: 4, exposure: internet,"
                b" links: [{to: sw-1, kind: upstream}]}\n", b'\0{"id": "db-1", "aliases": ["db"]}\n']
    if name == "changes":
        return [_CHANGE, b"\0" + orjson.dumps({"id": "c", "assets": ["a"], "start": "2024-03-01T00:00:00Z",
                                               "end": "2024-03-02T00:00:00Z"})]
    if name == "feedback":
        return [_FEEDBACK]
    if name == "topology":
        return [b"a,b\nsw-1,web-1\nsw-1,db-1\n", b'"x,y",z\n"a""b",c\n']
    if name == "mapspec":
        return [b"time=start_timestamp,asset=device_id,signature=alarm_id,end=end_timestamp,domain:=ops",
                b"time=ts,asset=host.name,signature=rule.id,severity=level,domain:=security,status:=resolved"]
    if name == "adapters":
        return [bytes([i]) + line for i in range(len(FORMATS)) for f in sorted(FIXTURES.iterdir())
                for line in f.read_bytes().splitlines()[:2] if f.is_file()]
    if name == "syslog":
        lines = [line for f in sorted(FIXTURES.glob("syslog*")) for line in f.read_bytes().splitlines()]
        return [b"\x20" + line + b"\n" for line in lines]
    if name == "gateway":
        return [b'{"source": "ids", "domain": "security", "time": "2024-05-01T12:00:00Z", "asset": "h1",'
                b' "signature": "s", "severity": "high", "tactics": ["execution"]}']
    return []


def main() -> int:
    if atheris is None:
        print("atheris is not installed (pip install atheris); nothing fuzzed", file=sys.stderr)
        return 2
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        print(f"usage: python -m tests.fuzz.atheris_targets {{{','.join(TARGETS)}}} [libFuzzer options]",
              file=sys.stderr)
        return 2
    name = sys.argv[1]
    args = sys.argv[2:]
    if not any(not a.startswith("-") for a in args):  # no corpus directory given: seed one
        corpus = WORKDIR / f"corpus-{name}"
        corpus.mkdir()
        for n, seed in enumerate(seeds(name)):
            (corpus / f"seed{n}").write_bytes(seed)
        args.append(str(corpus))
    if not any(a.startswith("-artifact_prefix=") for a in args):  # crash files out of the checkout
        args.append(f"-artifact_prefix={WORKDIR}/")
    atheris.Setup([sys.argv[0], *args], TARGETS[name])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
