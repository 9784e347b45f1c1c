"""Context that explains alerts away: change windows, authorised scans, analyst verdicts."""

from __future__ import annotations

from datetime import datetime

from schemas.context import Change, ChangeKind, Feedback, FeedbackKind
from schemas.models import Alert, Domain

__all__ = ["Explainer"]


def _hhmm(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


class Explainer:
    """Answers: does operations' or an analyst's context account for this alert?"""

    def __init__(self) -> None:
        self._changes: dict[str, Change] = {}
        self._by_asset: dict[str, list[Change]] = {}
        self._scans: list[Change] = []
        self._feedback: dict[str, Feedback] = {}

    @property
    def has_changes(self) -> bool:
        """Whether any change window is known (`change_reason` is None without one)."""
        return bool(self._changes)

    @property
    def has_feedback(self) -> bool:
        """Whether any analyst verdict is known (`verdict` is None without one)."""
        return bool(self._feedback)

    def add_change(self, change: Change) -> None:
        """Add or replace a change window."""
        if change.id in self._changes:
            self._changes.pop(change.id)
            self._by_asset = {}
            self._scans = []
            for old in list(self._changes.values()):
                self._index(old)
        self._changes[change.id] = change
        self._index(change)

    def _index(self, change: Change) -> None:
        if change.kind is ChangeKind.SCAN and change.source:
            self._scans.append(change)
        for asset in change.assets:
            self._by_asset.setdefault(asset, []).append(change)

    def add_feedback(self, item: Feedback) -> None:
        """Add or replace an analyst verdict."""
        self._feedback[item.id] = item

    def change_reason(self, alert: Alert, asset: str) -> str | None:
        """Reason text if a change window or authorised scan explains the alert."""
        when = alert.time
        for scan in self._scans:
            if scan.start <= when < scan.end and alert.src_ip and alert.src_ip == scan.source:
                return f"authorised scan {scan.id} from {scan.source} until {_hhmm(scan.end)}"
        for change in self._by_asset.get(asset, ()):
            if not change.start <= when < change.end:
                continue
            if change.kind is ChangeKind.SCAN:
                if alert.domain is Domain.SECURITY:
                    return f"authorised scan {change.id} on {asset} until {_hhmm(change.end)}"
                continue
            if alert.domain is Domain.OPS:
                return f"{change.kind.value} {change.id} on {asset} until {_hhmm(change.end)}"
        return None

    def verdict(self, alert: Alert, asset: str) -> Feedback | None:
        """An analyst false-positive or silence covering this alert at its time."""
        for item in self._feedback.values():
            if item.kind is FeedbackKind.ACK:
                continue
            if item.time > alert.time:
                continue
            if item.expires_at is not None and alert.time >= item.expires_at:
                continue
            if item.asset is not None and item.asset != asset:
                continue
            if item.signature is not None and item.signature != alert.signature:
                continue
            if item.source is not None and item.source not in (alert.source, alert.src_ip):
                continue
            return item
        return None

    def changes(self) -> list[Change]:
        """All change windows, in the order added."""
        return list(self._changes.values())

    def feedback(self) -> list[Feedback]:
        """All analyst verdicts, in the order added."""
        return list(self._feedback.values())

