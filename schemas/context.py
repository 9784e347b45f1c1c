"""Context records: the asset inventory, change windows and analyst feedback, with loaders."""

from __future__ import annotations

import csv
import io
from enum import StrEnum
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.errors import ConfigError
from schemas.loading import load_documents, read_text, validate_items

__all__ = [
    "LinkKind",
    "Exposure",
    "Link",
    "Asset",
    "ChangeKind",
    "Change",
    "FeedbackKind",
    "Feedback",
    "load_inventory",
    "load_changes",
    "load_feedback",
]

_CFG = ConfigDict(frozen=True, extra="forbid")


class LinkKind(StrEnum):
    """How two assets are linked: `upstream` means `to` feeds this asset."""

    UPSTREAM = "upstream"
    PEER = "peer"


class Exposure(StrEnum):
    """Whether the asset is reachable from the internet."""

    INTERNET = "internet"
    INTERNAL = "internal"


class Link(BaseModel):
    """A topology link from an asset to another."""

    model_config = _CFG
    to: str = Field(min_length=1)
    kind: LinkKind = LinkKind.PEER


class Asset(BaseModel):
    """One inventory entry: canonical id, aliases and business context."""

    model_config = _CFG
    schema_version: int = 1
    id: str = Field(min_length=1)
    aliases: tuple[str, ...] = ()
    criticality: int = Field(default=3, ge=1, le=5)
    owner: str | None = None
    environment: str | None = None
    exposure: Exposure = Exposure.INTERNAL
    links: tuple[Link, ...] = ()


class ChangeKind(StrEnum):
    """What kind of planned activity a change window covers."""

    MAINTENANCE = "maintenance"
    PATCH = "patch"
    SCAN = "scan"


class Change(BaseModel):
    """A maintenance/change/patch window, or an authorised scan from `source`."""

    model_config = _CFG
    schema_version: int = 1
    id: str = Field(min_length=1)
    assets: tuple[str, ...] = ()
    start: AwareDatetime
    end: AwareDatetime
    kind: ChangeKind = ChangeKind.MAINTENANCE
    source: str | None = Field(default=None, description="Authorised scanner address or name.")

    @model_validator(mode="after")
    def _check(self) -> Change:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.kind is ChangeKind.SCAN and not self.source and not self.assets:
            raise ValueError("a scan window needs a source or assets")
        if self.kind is not ChangeKind.SCAN and not self.assets:
            raise ValueError("a maintenance or patch window needs assets")
        return self


class FeedbackKind(StrEnum):
    """Analyst verdicts."""

    ACK = "ack"
    FALSE_POSITIVE = "false_positive"
    SILENCE = "silence"


class Feedback(BaseModel):
    """An analyst verdict: scoped to a signature on an asset, or a source, optionally expiring."""

    model_config = _CFG
    schema_version: int = 1
    id: str = Field(min_length=1)
    kind: FeedbackKind
    time: AwareDatetime = Field(description="When the verdict takes effect (event time).")
    expires_at: AwareDatetime | None = None
    asset: str | None = None
    signature: str | None = None
    source: str | None = None
    incident_id: str | None = None
    analyst: str | None = None
    note: str = ""

    @model_validator(mode="after")
    def _check(self) -> Feedback:
        if self.kind is not FeedbackKind.ACK and not (self.asset or self.signature or self.source):
            raise ValueError("a false_positive or silence needs asset, signature or source")
        if self.kind is FeedbackKind.ACK and not self.incident_id:
            raise ValueError("an ack needs incident_id")
        if self.expires_at is not None and self.expires_at <= self.time:
            raise ValueError("expires_at must be after time")
        return self


def _load_links_csv(path: Path) -> list[Asset]:
    reader = csv.reader(io.StringIO(read_text(path)))
    peers: dict[str, list[str]] = {}
    try:
        header = next(reader, None)
        if header is None or len(header) != 2:
            raise ConfigError("a topology CSV needs a two-column header", path=str(path), line=1)
        for row in reader:
            if not row:
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise ConfigError("expected two non-empty columns", path=str(path), line=reader.line_num)
            a, b = row[0].strip(), row[1].strip()
            peers.setdefault(a, []).append(b)
            peers.setdefault(b, []).append(a)
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit()
        raise ConfigError(f"invalid CSV: {exc}", path=str(path), line=reader.line_num) from exc
    return [
        Asset(id=a, links=tuple(Link(to=b, kind=LinkKind.PEER) for b in sorted(set(bs))))
        for a, bs in sorted(peers.items())
    ]


def load_inventory(path: Path) -> list[Asset]:
    """Assets from YAML/JSONL, or peer links from a two-column CSV."""
    if path.suffix.lower() == ".csv":
        return _load_links_csv(path)
    assets = validate_items(path, load_documents(path, "assets"), Asset)
    seen: set[str] = set()
    for asset in assets:
        if asset.id in seen:
            raise ConfigError(f"duplicate asset id {asset.id!r}", path=str(path))
        seen.add(asset.id)
    return assets


def load_changes(path: Path) -> list[Change]:
    """Change windows from YAML or JSONL."""
    return validate_items(path, load_documents(path, "changes"), Change)


def load_feedback(path: Path) -> list[Feedback]:
    """Analyst feedback from YAML or JSONL."""
    return validate_items(path, load_documents(path, "feedback"), Feedback)

