"""Property tests of the `--map` spec and the generic csv/jsonl adapters it configures.

A spec either parses into a consistent MapSpec or raises MapSpecError; an adapter built from
any spec and header either exists or raises a SocnocError, and then parses any record into
alerts or an InvalidInput. `FUZZ_EXAMPLES` sets the number of examples (`make fuzz`: 100k).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas.adapters.base import ParseContext, Rejected
from schemas.adapters.mapspec import MAP_FIELDS, REQUIRED_FIELDS, MapSpec
from schemas.adapters.registry import get_adapter
from schemas.errors import InvalidInput, MapSpecError, SocnocError
from schemas.models import Alert, Domain, Severity, Status

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FIELDS = st.sampled_from(MAP_FIELDS) | st.sampled_from(["", " ", "Time", "raw", "id ", "x:", "end:"])
LITERALS = st.sampled_from(
    [
        "ops", "security", "SECURITY ", "both", "high", "Major", "p1", "critical", "firing", "resolved",
        "15", "1.5e9", "nan", "-5", "4102444801", "2024-03-01T00:00:00Z", "2024-02-30", "2024-03-01T00:00:00",
        "", " ", "=", ":=", "a=b",
    ]
) | st.text(max_size=8)
COLUMNS = st.sampled_from(["t", "a", "s", "d", "host.name", "x.y.z", "a..b", ".", "", " "]) | st.text(max_size=6)


@st.composite
def items(draw: st.DrawFn) -> str:
    field = draw(FIELDS)
    if draw(st.booleans()):
        return f"{field}:={draw(LITERALS)}"
    return f"{field}={draw(COLUMNS)}"


specs = st.lists(items(), max_size=8).map(",".join) | st.text(max_size=60) | st.none()


@st.composite
def usable_specs(draw: st.DrawFn) -> str:
    """Specs that give every required field (so adapters get built), plus random items."""
    good = {"time": ("t", "15"), "asset": ("a", "dev"), "signature": ("s", "sig"), "domain": ("d", "ops")}
    parts = []
    for field in REQUIRED_FIELDS:
        column, literal = good[field]
        if draw(st.integers(0, 9)) == 0:  # now and then a random value
            column, literal = draw(COLUMNS), draw(LITERALS)
        parts.append(f"{field}={column}" if draw(st.booleans()) else f"{field}:={literal}")
    optional = [f for f in MAP_FIELDS if f not in REQUIRED_FIELDS]
    for field in draw(st.lists(st.sampled_from(optional), max_size=4, unique=True)):
        parts.append(f"{field}={draw(COLUMNS)}" if draw(st.booleans()) else f"{field}:={draw(LITERALS)}")
    if draw(st.integers(0, 9)) == 0:
        parts.append(draw(items()))
    return ",".join(draw(st.permutations(parts)))


def check_spec(spec: MapSpec) -> None:
    assert not set(spec.columns) & set(spec.literals)
    assert set(spec.columns) | set(spec.literals) <= set(MAP_FIELDS)
    assert all(f in spec.columns or f in spec.literals for f in REQUIRED_FIELDS)
    assert all(c and c == c.strip() for c in spec.columns.values())
    for field, value in spec.literals.items():
        if field in ("time", "end"):
            assert isinstance(value, datetime) and value.utcoffset() is not None
            assert datetime(1970, 1, 1, tzinfo=UTC) <= value < datetime(2100, 1, 1, tzinfo=UTC)
        elif field == "severity":
            assert isinstance(value, Severity)
        elif field == "domain":
            assert isinstance(value, Domain)
        elif field == "status":
            assert isinstance(value, Status)
        else:
            assert isinstance(value, str) and value


@FUZZ
@given(spec=specs)
def test_spec_parses_or_is_a_map_spec_error(spec: str | None) -> None:
    try:
        parsed = MapSpec.parse(spec)
    except MapSpecError:
        return
    check_spec(parsed)
    assert MapSpec.parse(spec) == parsed  # pure


@FUZZ
@given(
    columns=st.dictionaries(st.sampled_from(MAP_FIELDS), st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,8}", fullmatch=True),
                            max_size=6),
    order=st.randoms(use_true_random=False),
    spaces=st.booleans(),
)
def test_well_formed_spec_means_what_it_says(columns: dict[str, str], order: Any, spaces: bool) -> None:
    parts = [f"{f}={c}" for f, c in columns.items()]
    literals = {f: v for f, v in (("domain", "ops"), ("asset", "dev"), ("signature", "s"), ("time", "15"))
                if f not in columns}
    parts += [f"{f}:={v}" for f, v in literals.items()]
    order.shuffle(parts)
    spec = MapSpec.parse((" , " if spaces else ",").join(parts))
    assert spec.columns == columns
    assert set(spec.literals) == set(literals)


header = st.permutations(["t", "a", "s", "d", "v", "e"]) | st.lists(
    st.sampled_from(["t", "a", "s", "d", "v", "e", "x", '"q"', "t"]) | st.text(max_size=4), max_size=6
)
cells = st.sampled_from(["15", "2024-03-01T00:00:00Z", "dev1", "ops", "high", "", "nan", '"a,b"', '"', "-1"])


@FUZZ
@given(
    spec=usable_specs(),
    columns=header.map(",".join),
    row=st.lists(cells | st.text(max_size=5), max_size=7)
    | st.tuples(st.sampled_from(["15", "1e9", "x"]), cells, cells, cells, cells).map(list),
)
def test_csv_adapter_from_any_spec_and_header(spec: str | None, columns: str, row: list[str]) -> None:
    try:
        adapter = get_adapter("csv", {"map": spec or "", "columns": columns})
    except SocnocError:
        event("no adapter")
        return
    check_parse(adapter.parse, ",".join(row).encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=6)
    | cells,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["t", "a", "host", "name", "x", "y"]),
                                                                inner, max_size=3),
    max_leaves=10,
)


@FUZZ
@given(
    spec=usable_specs(),
    record=json_values
    | st.fixed_dictionaries(
        {"t": st.sampled_from([15, "2024-03-01T00:00:00Z", 1e300, -1, "x"]), "a": cells, "s": cells, "d": cells},
        optional={"v": cells, "e": json_values, "host": st.fixed_dictionaries({"name": json_values})},
    ),
)
def test_jsonl_adapter_from_any_spec(spec: str | None, record: Any) -> None:
    try:
        adapter = get_adapter("jsonl", {"map": spec or ""})
    except SocnocError:
        event("no adapter")
        return
    check_parse(adapter.parse, orjson.dumps(record))


def check_parse(parse: Any, raw: bytes) -> None:
    ctx = ParseContext(record_id="f.csv:2", transport_time=datetime(2024, 3, 1, tzinfo=UTC))
    try:
        out = parse(raw, ctx)
    except InvalidInput:
        event("invalid record")
        return
    event("parsed")
    for item in out:
        if isinstance(item, Rejected):
            assert isinstance(item.error, InvalidInput)
            continue
        assert isinstance(item, Alert)
        assert item.time.utcoffset() == timedelta(0)
        assert item.id and item.asset and item.signature
