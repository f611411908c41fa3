"""``ProbeResult``, its recommendation, and ``KeepAlive.for_path`` (no sockets)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest

import ka
from ka.policy import heartbeat_interval
from ka.probe import Precision
from ka.probe.plan import Estimate
from ka.probe.result import build_result

CONTRACT: dict[str, type | tuple[type, ...]] = {
    "target": str,
    "idle_timeout": (float, type(None)),
    "max": (int, float),
    "death": (str, type(None)),
    "probes_refresh": (bool, type(None)),
    "recommended_policy": (str, type(None)),
    "heartbeat_interval": (int, type(None)),
}


def estimate(
    low: float,
    high: float,
    refresh: bool | None,
    death: str | None = "silent",
    passive: bool = False,
    beyond: bool = False,
) -> Estimate:
    return Estimate(
        low=low,
        high=high,
        probes_refresh=refresh,
        payload_refreshes=None,
        death=death,  # type: ignore[arg-type]
        death_passive=passive,
        beyond_max=beyond,
        consistent=True,
        tests=7,
        lines_opened=22,
        connect_failures=0,
    )


@dataclass
class Path:
    idle_timeout: float | None
    idle_timeout_low: float | None
    max: float
    probes_refresh: bool | None
    complete: bool = True


def test_a_nat_that_counts_probes_gets_for_middlebox_of_the_lower_bound() -> None:
    result = build_result("10.0.0.7:6379", estimate(38.5, 48.5, True), 900, Precision(), 52.0, True)
    assert result.idle_timeout == 43.5
    assert result.recommended == ka.KeepAlive.for_middlebox(38.5)  # not of 43.5: the bracket's floor
    assert ka.KeepAlive.for_path(result) == result.recommended
    assert result.policy == str(result.recommended)
    assert result.recommended.idle is not None and result.recommended.interval is not None
    assert result.recommended.idle + result.recommended.interval < 38.5
    assert result.heartbeat_interval is None
    assert result.precision_met and result.error == 5.0


def test_precision_met_holds_wherever_the_timeout_lies_in_the_bracket() -> None:
    """+-5% judged at the middle (277.9 s: 13.9 s) passed a bracket whose low end allows 13.2 s."""
    wide = build_result("10.0.0.7:6379", estimate(264.0, 291.75, True), 900, Precision(), 300.0, True)
    assert not wide.precision_met and wide.as_json()["precision_met"] is False
    narrow = build_result("10.0.0.7:6379", estimate(264.0, 290.4, True), 900, Precision(), 300.0, True)
    assert narrow.precision_met


def test_a_proxy_that_ignores_probes_needs_a_heartbeat() -> None:
    result = build_result(
        "10.0.0.7:80", estimate(44.9, 45.1, False, "fin", passive=True), 900, Precision(), 45.2, True
    )
    assert result.recommended is None and result.policy is None
    assert result.heartbeat_interval == heartbeat_interval(44.9) == 39
    assert "heartbeat at least every 39 s" in result.advice
    with pytest.raises(ValueError, match="keepalive probes do not keep this path open"):
        ka.KeepAlive.for_path(result)
    assert result.as_json()["death_on"] == "timer"


def test_no_timeout_below_max_probes_before_max() -> None:
    result = build_result(
        "h:1", estimate(900.5, math.inf, None, None, beyond=True), 900, Precision(), 901.0, True
    )
    assert result.idle_timeout is None and result.idle_timeout_high is None
    assert result.death is None and result.probes_refresh is None
    assert result.recommended == ka.KeepAlive.for_middlebox(900)
    assert "Nothing on this path dropped an idle flow within 15 min" in result.advice


def test_an_interrupted_run_recommends_nothing() -> None:
    result = build_result("h:1", estimate(14.5, math.inf, None, None), 900, Precision(), 16.0, False)
    assert result.recommended is None and not result.complete
    assert "cut short" in result.advice
    assert result.report()[0] == "h:1: interrupted: the flow outlived 14.5 s of silence so far"


def test_for_path_refuses_what_it_cannot_promise() -> None:
    with pytest.raises(ValueError, match="did not tell whether keepalive probes"):
        ka.KeepAlive.for_path(Path(45.0, 40.0, 900, None))
    with pytest.raises(ValueError, match="too soon for keepalive"):
        ka.KeepAlive.for_path(Path(2.0, 1.5, 900, True))
    with pytest.raises(ValueError, match="cut short"):
        ka.KeepAlive.for_path(Path(None, 10.0, 900, None, complete=False))
    assert ka.KeepAlive.for_path(Path(None, 600.5, 600, None)) == ka.KeepAlive.for_middlebox(600)


def test_for_path_passes_for_middleboxs_options() -> None:
    path = Path(350.0, 340.0, 900, True)
    assert ka.KeepAlive.for_path(
        path, count=5, user_timeout=None, detect_within=120
    ) == ka.KeepAlive.for_middlebox(340.0, count=5, user_timeout=None, detect_within=120)


def test_the_json_contract() -> None:
    result = build_result("10.0.0.7:6379", estimate(38.5, 48.5, True), 900, Precision(), 52.04, True)
    data = json.loads(json.dumps(result.as_json()))
    assert list(data)[: len(CONTRACT)] == list(CONTRACT)
    for key, kind in CONTRACT.items():
        assert isinstance(data[key], kind), (key, data[key])
    assert data["max"] == 900 and isinstance(data["max"], int)
    assert data["elapsed"] == 52.0 and data["precision"] == 5.0 and data["complete"] is True
    assert ka.KeepAlive.parse(data["recommended_policy"]) == result.recommended


def test_the_report_says_it_in_words() -> None:
    result = build_result("10.0.0.7:6379", estimate(38.5, 48.5, True, "reset"), 900, Precision(), 52.0, True)
    text = "\n".join(result.report())
    assert text.startswith(
        "10.0.0.7:6379: idle timeout 43.5 s, between 38.5 and 48.5 s "
        "(asked: +-5 s or +-5%, whichever is larger)"
    )
    assert "with a reset in answer to the first packet after the timeout" in text
    assert "keep it open: connections probed every second outlived the timeout" in text
    assert f'export KA_POLICY="{result.policy}"' in text


@pytest.mark.parametrize(("survived", "interval"), [(3, 1), (20, 18), (38.5, 34), (350, 315), (900, 810)])
def test_heartbeat_interval_is_for_middleboxs_idle(survived: float, interval: int) -> None:
    assert heartbeat_interval(survived) == interval
    if survived >= 3:
        assert ka.KeepAlive.for_middlebox(survived).idle == interval
