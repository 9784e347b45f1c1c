"""The severity normalisation table (schemas/severity.py), boundary by boundary."""

from __future__ import annotations

import pytest

from schemas.errors import BadValue
from schemas.models import Severity
from schemas.severity import (
    from_bgl,
    from_ecs_score,
    from_label,
    from_suricata,
    from_syslog,
    from_wazuh_level,
    from_zabbix,
)

INF, L, M, H, C = Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL


def test_wazuh_levels() -> None:
    expected = [INF] * 4 + [L] * 3 + [M] * 3 + [H] * 3 + [C] * 3
    assert [from_wazuh_level(level) for level in range(16)] == expected
    for bad in (-1, 16):
        with pytest.raises(BadValue):
            from_wazuh_level(bad)


def test_suricata() -> None:
    assert [from_suricata(s) for s in (1, 2, 3, 4, 255)] == [H, M, L, L, L]
    with pytest.raises(BadValue):
        from_suricata(0)


def test_zabbix() -> None:
    assert [from_zabbix(s) for s in range(6)] == [INF, INF, L, M, H, C]
    for bad in (-1, 6):
        with pytest.raises(BadValue):
            from_zabbix(bad)


def test_syslog() -> None:
    assert [from_syslog(s) for s in range(8)] == [C, C, C, H, M, L, INF, INF]
    for bad in (-1, 8):
        with pytest.raises(BadValue):
            from_syslog(bad)


@pytest.mark.parametrize(
    ("score", "severity"),
    [
        (0, INF),
        (20, INF),
        (20.5, L),
        (21, L),
        (47, L),
        (48, M),
        (73, M),
        (74, H),
        (98, H),
        (99, C),
        (100, C),
    ],
)
def test_ecs_scores(score: float, severity: Severity) -> None:
    assert from_ecs_score(score) is severity


@pytest.mark.parametrize("score", [-0.1, 100.5, float("nan"), float("inf")])
def test_ecs_scores_out_of_range(score: float) -> None:
    with pytest.raises(BadValue):
        from_ecs_score(score)


@pytest.mark.parametrize(
    ("label", "severity"),
    [
        ("info", INF),
        ("None", INF),
        ("debug", INF),
        ("low", L),
        ("minor", L),
        (" warning ", M),
        ("WARN", M),
        ("moderate", M),
        ("average", M),
        ("high", H),
        ("major", H),
        ("error", H),
        ("critical", C),
        ("page", C),
        ("emergency", C),
        ("fatal", C),
        ("disaster", C),
    ],
)
def test_labels(label: str, severity: Severity) -> None:
    assert from_label(label) is severity


def test_unknown_labels_take_the_default() -> None:
    assert from_label(None) is M
    assert from_label("spicy") is M
    assert from_label("spicy", L) is L


def test_bgl_levels() -> None:
    assert [
        from_bgl(x) for x in ("INFO", "WARNING", "SEVERE", "ERROR", "FAILURE", "FATAL", "fatal")
    ] == [
        INF,
        L,
        M,
        M,
        H,
        C,
        C,
    ]
    with pytest.raises(BadValue):
        from_bgl("LOUD")
