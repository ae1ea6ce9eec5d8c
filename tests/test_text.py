"""Text for people: the table helpers and the summaries the library formats for the CLI."""

from __future__ import annotations

import math

from netvantage.lab.core import LabStatus
from netvantage.lab.topology import load_topology
from netvantage.text import columns, ms


def test_columns_align_and_strip_trailing_blanks():
    assert columns([("A", "LONG HEADER", "C"), ("wide cell", "x", "")]) == [
        "A          LONG HEADER  C",
        "wide cell  x",
    ]
    assert columns([]) == []


def test_a_missing_time_is_a_dash_never_zero():
    assert ms(None) == "-"
    assert ms(math.nan) == "-"
    assert ms(0.0) == "0.000"
    assert ms(12.34567) == "12.346"


def test_lab_status_describes_phase_nodes_and_overrides():
    topo = load_topology()
    status = LabStatus(prefix="nvl", up=True, namespaces=["nvl-a", "nvl-b"],
                       state={"phase": "up", "delay_method": "netem",
                              "loss_overrides": {"3": 0.2}})
    lines = status.describe(topo)
    assert lines[0] == "lab 'nvl': up, 2 namespace(s), delay: netem"
    assert lines[1:-1] == ["  " + line for line in topo.node_lines()]
    assert len(lines[1:-1]) == len(topo.nodes)
    assert lines[-1] == '  loss_overrides: {"3": 0.2}'
    roles = [line.split()[0] for line in topo.node_lines()]
    assert roles == sorted(roles, key=["client", "router", "dc"].index)  # grouped by role
    bare = LabStatus(prefix="nvl", up=False, namespaces=[], state={}).describe()
    assert bare == ["lab 'nvl': unknown (no state file), 0 namespace(s), delay: ?"]
