"""Rule definitions (suppression, severity overrides, correlation) and their YAML loading."""

from __future__ import annotations

import fnmatch
import re
from datetime import timedelta
from enum import StrEnum
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from schemas.errors import ConfigError
from schemas.loading import load_documents, validate_with
from schemas.models import SEVERITY_RANK, Alert, Domain, Severity

__all__ = [
    "Match",
    "RuleKind",
    "SuppressRule",
    "SeverityRule",
    "ThresholdRule",
    "DistinctRule",
    "SequenceRule",
    "Rule",
    "load_rules",
    "default_rules",
    "parse_rules",
    "DEFAULT_RULES",
    "AnyRule",
    "Duration",
    "MAX_RULES",
]

_CFG = ConfigDict(frozen=True, extra="forbid")
MAX_RULES = 10_000


class Match(BaseModel):
    """Conditions on an alert; all given ones must hold. Patterns are case-insensitive globs."""

    model_config = _CFG
    signature: str | None = None
    title: str | None = None
    source: str | None = None
    domain: Domain | None = None
    asset: str | None = None
    tactic: str | None = None
    min_severity: Severity | None = None
    max_severity: Severity | None = None

    @cached_property
    def _globs(self) -> tuple[tuple[str, re.Pattern[str]], ...]:
        """Field name and compiled case-insensitive pattern of each glob condition."""
        out = []
        for name in ("signature", "title", "source", "asset"):
            pattern = getattr(self, name)
            if pattern is not None:
                out.append((name, re.compile(fnmatch.translate(pattern), re.IGNORECASE | re.DOTALL)))
        return tuple(out)

    @cached_property
    def _tactic(self) -> re.Pattern[str] | None:
        if self.tactic is None:
            return None
        return re.compile(fnmatch.translate(self.tactic), re.IGNORECASE | re.DOTALL)

    def matches(self, alert: Alert) -> bool:
        """Whether the alert meets every given condition."""
        if self.domain is not None and alert.domain is not self.domain:
            return False
        if self.min_severity is not None or self.max_severity is not None:
            rank = SEVERITY_RANK[alert.severity]
            if self.min_severity is not None and rank < SEVERITY_RANK[self.min_severity]:
                return False
            if self.max_severity is not None and rank > SEVERITY_RANK[self.max_severity]:
                return False
        for name, regex in self._globs:
            if regex.match(getattr(alert, name)) is None:
                return False
        tactic = self._tactic
        if tactic is not None and not any(tactic.match(t) for t in alert.tactics):
            return False
        return True


class RuleKind(StrEnum):
    """The kinds of rule."""

    SUPPRESS = "suppress"
    SEVERITY = "severity"
    THRESHOLD = "threshold"
    DISTINCT = "distinct"
    SEQUENCE = "sequence"


GroupField = Literal["asset", "src_ip", "signature", "source"]


class _Base(BaseModel):
    model_config = _CFG
    id: str = Field(min_length=1, max_length=200)
    description: str = ""
    enabled: bool = True


class SuppressRule(_Base):
    """Matching alerts are noise, with this rule's reason."""

    type: Literal[RuleKind.SUPPRESS]
    match: Match
    reason: str = Field(min_length=1)


class SeverityRule(_Base):
    """Matching alerts get this severity before scoring."""

    type: Literal[RuleKind.SEVERITY]
    match: Match
    severity: Severity


def _duration(value: object) -> object:
    """Accept `30s`, `5m`, `2h`, `1d` besides ISO 8601 durations and seconds."""
    if isinstance(value, str) and value[:-1].isdigit() and value[-1:] in _UNITS:
        seconds = int(value[:-1]) * _UNITS[value[-1]]
        if seconds > _MAX_SECONDS:
            raise ValueError(f"duration {value[:40]!r} is out of range")
        return timedelta(seconds=seconds)
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_SECONDS = 100 * 365 * 86400
Duration = Annotated[timedelta, BeforeValidator(_duration)]


class _Correlation(_Base):
    timespan: Duration = Field(gt=timedelta(0), le=timedelta(days=7))
    group_by: tuple[GroupField, ...] = ("asset",)
    severity: Severity = Severity.HIGH
    tactic: str | None = Field(default=None, description="ATT&CK tactic the finding implies.")


class ThresholdRule(_Correlation):
    """At least `count` matching alerts within `timespan` per group."""

    type: Literal[RuleKind.THRESHOLD]
    match: Match
    count: int = Field(ge=2, le=1_000_000)


class DistinctRule(_Correlation):
    """At least `count` distinct values of `field` among matching alerts within `timespan`."""

    type: Literal[RuleKind.DISTINCT]
    match: Match
    field: Literal["signature", "source", "asset", "src_ip"]
    count: int = Field(ge=2, le=10_000)


class SequenceRule(_Correlation):
    """Alerts matching each step, in order, within `timespan` per group."""

    type: Literal[RuleKind.SEQUENCE]
    steps: tuple[Match, ...] = Field(min_length=2, max_length=20)


AnyRule = SuppressRule | SeverityRule | ThresholdRule | DistinctRule | SequenceRule
Rule = Annotated[
    SuppressRule | SeverityRule | ThresholdRule | DistinctRule | SequenceRule,
    Field(discriminator="type"),
]


_ONE_RULE: TypeAdapter[AnyRule] = TypeAdapter(Rule)


DEFAULT_RULES = Path(__file__).with_name("default_rules.yml")
_RULE_LIST: TypeAdapter[list[AnyRule]] = TypeAdapter(list[Rule])


def parse_rules(data: object) -> list[AnyRule]:
    """Rules from already-parsed data (a snapshot); raises pydantic's ValidationError."""
    return _RULE_LIST.validate_python(data)


def default_rules() -> list[AnyRule]:
    """The shipped default rule pack (schemas/default_rules.yml), read once a process: a
    worker builds an engine for every partition it is assigned, on each rebalance (the rules
    are frozen models, so every engine may share them)."""
    return list(_default_pack())


@cache
def _default_pack() -> tuple[AnyRule, ...]:
    return tuple(load_rules(DEFAULT_RULES))


def load_rules(path: Path) -> list[AnyRule]:
    """Rules from a YAML (`rules:` list) or JSONL file, strictly validated."""
    items = load_documents(path, "rules")
    if len(items) > MAX_RULES:
        raise ConfigError(f"more than {MAX_RULES} rules", path=str(path))
    rules = validate_with(path, items, _ONE_RULE)
    seen: set[str] = set()
    for rule, item in zip(rules, items, strict=True):
        if rule.id in seen:
            raise ConfigError(f"duplicate rule id {rule.id!r}", path=str(path), line=item.line)
        seen.add(rule.id)
    return rules
