"""The gateway's incident read model, fed events directly (no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.models import IncidentEvent, IncidentKind, LifecycleEvent, Severity, TimelineEntry
from streams.incident_view import IncidentQuery, IncidentState, IncidentView

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def event(incident_id: str, version: int, kind: LifecycleEvent = LifecycleEvent.UPDATED, *,
          alert_ids: tuple[str, ...] = (), resolved: bool = False, merged_into: str | None = None,
          owners: tuple[str, ...] = ("netops",), assets: tuple[str, ...] = ("sw1",),
          incident_kind: IncidentKind = IncidentKind.OPERATIONAL) -> IncidentEvent:
    at = T0 + timedelta(minutes=version)
    return IncidentEvent(
        incident_id=incident_id, kind=incident_kind, assets=assets, opened_at=T0,
        updated_at=at, resolved_at=at if resolved else None, severity=Severity.HIGH, score=50,
        alert_count=len(alert_ids), owners=owners, event=kind, version=version,
        alert_ids=alert_ids, alert_ids_total=len(alert_ids), merged_into=merged_into,
        reasons=(f"v{version}",),
        timeline=tuple(TimelineEntry(time=at, asset=assets[0], alert_id=a, source="zabbix",
                                     signature="s", severity=Severity.HIGH) for a in alert_ids),
    )


def test_versions_only_move_forward_and_evidence_accumulates() -> None:
    view = IncidentView()
    assert view.apply(event("i", 1, LifecycleEvent.OPENED, alert_ids=("a1",)))
    assert view.apply(event("i", 3, alert_ids=("a2", "a3")))
    assert not view.apply(event("i", 2, alert_ids=("late",)))  # stale
    assert not view.apply(event("i", 3, alert_ids=("a2", "a3")))  # redelivered
    detail = view.get("i")
    assert detail is not None
    assert detail["version"] == 3
    assert detail["alert_ids"] == ["a1", "a2", "a3"]
    assert detail["alert_ids_total"] == 3
    assert detail["reasons"] == ["v1", "v3"]
    assert [t["alert_id"] for t in detail["timeline"]] == ["a1", "a2", "a3"]
    assert [h["version"] for h in detail["lifecycle"]] == [1, 3]
    assert view.get("other") is None


def test_state_follows_the_latest_event() -> None:
    view = IncidentView()
    view.apply(event("open", 1, LifecycleEvent.OPENED))
    view.apply(event("done", 1, LifecycleEvent.OPENED))
    view.apply(event("done", 2, LifecycleEvent.RESOLVED, resolved=True))
    view.apply(event("gone", 1, LifecycleEvent.OPENED))
    view.apply(event("gone", 2, LifecycleEvent.MERGED, merged_into="open"))
    view.apply(event("back", 1, LifecycleEvent.OPENED))
    view.apply(event("back", 2, LifecycleEvent.RESOLVED, resolved=True))
    view.apply(event("back", 3, LifecycleEvent.UPDATED))  # reopened
    states = {i: view.get(i)["state"] for i in ("open", "done", "gone", "back")}  # type: ignore[index]
    assert states == {"open": "open", "done": "resolved", "gone": "merged", "back": "open"}
    total, items = view.query(IncidentQuery(state=IncidentState.OPEN))
    assert total == 2
    assert [i["incident_id"] for i in items] == ["back", "open"]  # most recently updated first


def test_filters_and_limit() -> None:
    view = IncidentView()
    view.apply(event("s1", 1, owners=("secops",), assets=("pc7",),
                     incident_kind=IncidentKind.SECURITY))
    view.apply(event("c1", 2, owners=("secops", "netops"), assets=("db1", "sw1"),
                     incident_kind=IncidentKind.CONVERGED))
    view.apply(event("o1", 3, owners=("netops",), assets=("sw1",)))
    assert view.query(IncidentQuery(owner="secops"))[0] == 2
    assert view.query(IncidentQuery(asset="sw1"))[0] == 2
    assert view.query(IncidentQuery(kind=IncidentKind.CONVERGED))[1][0]["incident_id"] == "c1"
    total, items = view.query(IncidentQuery(limit=1))
    assert (total, len(items), items[0]["incident_id"]) == (3, 1, "o1")
    assert "timeline" not in items[0]  # summaries stay small


def test_the_view_is_bounded_and_evicts_closed_incidents_first() -> None:
    view = IncidentView(max_incidents=2)
    view.apply(event("old-open", 1))
    view.apply(event("closed", 2, resolved=True))
    view.apply(event("new", 3))
    assert len(view) == 2
    assert view.get("closed") is None
    assert view.get("old-open") is not None
    view.apply(event("newer", 4))
    assert view.get("old-open") is None  # nothing closed left: the stalest goes
