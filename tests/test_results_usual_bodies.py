"""The ping and tcp bodies' first check (the usual body, recognised in a few C calls)
accepts exactly what their full check accepts.

Each example builds a valid body, then changes some of its fields past the
constructor (``force_setattr``: no ``__post_init__``) into values that are
near the rule or outside it, and runs both checks on the same object.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import force_setattr, replace

from netvantage.results import PingBody, TcpAttempt, TcpBody
from netvantage.results.structs import RttStats

_rtt = st.floats(min_value=0.001, max_value=600_000, allow_nan=False)
_odd = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, 600_000.001, 1, True])
_nudge = st.sampled_from([0.0, 0.0004, -0.0004, 0.0009, -0.0009, 0.00151, -0.00151, 0.003,
                          3e-7, -6e-7, math.nan, math.inf])


def _accepts(check: Any) -> bool:
    try:
        check()
    except (ValueError, TypeError):
        return False
    return True


def _stats_changes(stats: RttStats, data: st.DataObject) -> RttStats:
    changes: dict[str, Any] = {}
    for field in ("min_ms", "median_ms", "mean_ms", "max_ms", "jitter_ms"):
        value = getattr(stats, field)
        choice = data.draw(st.sampled_from(["keep", "keep", "nudge", "none"]))
        if choice == "nudge" and value is not None:
            changes[field] = value + data.draw(_nudge)
        elif choice == "none":
            changes[field] = None
    return replace(stats, **changes) if changes else stats


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(st.none(), _rtt), max_size=8), st.data())
def test_usual_ping_body_check_decides_as_the_full_check(samples: list[float | None],
                                                         data: st.DataObject) -> None:
    body = PingBody.from_samples(samples, ip_version=4, socket="raw", payload_bytes=56,
                                 interval_s=1.0, timeout_s=2.0, dont_fragment=False)
    assert body.sent is not None and body.received is not None
    if len(samples) > 0 and data.draw(st.booleans()):
        rtts = list(body.rtts_ms)
        rtts[data.draw(st.integers(0, len(rtts) - 1))] = data.draw(st.one_of(st.none(), _odd))
        force_setattr(body, "rtts_ms", rtts)
    if data.draw(st.booleans()):
        force_setattr(body, "sent", body.sent + data.draw(st.sampled_from([-1, 1, 0])))
    if data.draw(st.booleans()):
        force_setattr(body, "received", data.draw(st.sampled_from(
            [body.received - 1, body.received + 1, None, True])))
    if data.draw(st.booleans()):
        loss = body.loss_ratio
        force_setattr(body, "loss_ratio", data.draw(st.sampled_from(
            [None, 0, 0.0, 1.0, math.nan] if loss is None else
            [None, loss + 3e-7, loss - 5e-7, loss + 2e-6, math.nan, int(loss)])))
    force_setattr(body, "stats", _stats_changes(body.stats, data))
    assert _accepts(body.__post_init__) == _accepts(body._check)


_attempt = st.one_of(
    st.builds(TcpAttempt, status=st.just("ok"), connect_ms=_rtt),
    st.builds(TcpAttempt, status=st.sampled_from(["refused", "timeout"]), error=st.just("x")))


@settings(max_examples=600, deadline=None)
@given(st.lists(_attempt, max_size=6), st.data())
def test_usual_tcp_body_check_decides_as_the_full_check(attempts: list[TcpAttempt],
                                                        data: st.DataObject) -> None:
    body = TcpBody.from_attempts(attempts, port=25, ip_version=4, timeout_s=2.0)
    assert body.succeeded is not None
    if len(attempts) > 0 and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(attempts) - 1))
        changed = list(body.attempts)
        force_setattr(changed[i], "connect_ms", data.draw(st.one_of(st.none(), _odd)))
        force_setattr(body, "attempts", changed)
    if data.draw(st.booleans()):
        force_setattr(body, "succeeded", data.draw(st.sampled_from(
            [body.succeeded - 1, body.succeeded + 1, None, True])))
    if data.draw(st.booleans()):
        force_setattr(body, "attempted", len(attempts))
    force_setattr(body, "stats", _stats_changes(body.stats, data))
    assert _accepts(body.__post_init__) == _accepts(body._check)


@pytest.mark.parametrize("samples", [[12.5, None, 13.0, 12.75], [0.001], [None, None]])
def test_usual_ping_body_is_accepted(samples: list[float | None]) -> None:
    body = PingBody.from_samples(samples, ip_version=4, socket="raw", payload_bytes=56,
                                 interval_s=1.0, timeout_s=2.0, dont_fragment=False)
    body.__post_init__()
    body._check()
