"""Measurement plans: the example is valid, a wrong plan lists every problem with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from netvantage.agent.plan import MIN_INTERVAL_S, PlanError, load_plan, parse_test

ROOT = Path(__file__).resolve().parents[1]


def example(tmp_path: Path) -> Path:
    text = (ROOT / "probes" / "example-plan.toml").read_text()
    ca = tmp_path / "ca.pem"
    ca.write_text("not read when the plan loads\n")
    (tmp_path / "lusaka-1.token").write_text("secret-token\n")
    plan = tmp_path / "plan.toml"
    plan.write_text(text.replace("/run/netvantage/nvl/ca/ca.pem", str(ca)))
    return plan


def test_example_plan_loads(tmp_path):
    plan = load_plan(example(tmp_path))
    assert plan.agent == "lusaka-1" and plan.region == "ZM-LUN"
    assert plan.token == "secret-token"
    assert plan.spool == tmp_path / "lusaka-1.spool.sqlite"
    assert len(plan.jobs) == 7 + 5 + 5
    keys = {job.key for job in plan.jobs}
    assert "dc-ams/10.10.255.15/trace:tcp:25" in keys and "dc-yyz/10.10.255.17/imap:993" in keys
    assert plan.options["ping"]["count"] == 10


@pytest.mark.parametrize("text, kind, port, protocol", [
    ("ping", "ping", None, None), ("tcp:25", "tcp", 25, None), ("trace", "trace", None, "icmp"),
    ("trace:udp", "trace", None, "udp"), ("trace:tcp:993", "trace", 993, "tcp"),
    ("smtp", "smtp", 25, None), ("smtp:465", "smtp", 465, None), ("IMAP:993", "imap", 993, None),
    ("pmtu", "pmtu", None, "icmp"), ("pmtu:tcp:465", "pmtu", 465, "tcp"),
])
def test_test_names(text, kind, port, protocol):
    spec = parse_test(text)
    assert (spec.kind, spec.port, spec.protocol) == (kind, port, protocol)


@pytest.mark.parametrize("text", ["pong", "tcp", "tcp:0", "trace:tcp", "trace:sctp", "smtp:x",
                                  "pmtu:tcp", "pmtu:gre"])
def test_bad_test_names(text):
    with pytest.raises(ValueError):
        parse_test(text)


def test_every_problem_listed_with_its_line(tmp_path):
    plan = tmp_path / "bad.toml"
    plan.write_text("""\
[agent]
name = "bad name!"
colour = "red"

[collector]
url = "ftp://example"
token = "t"

[schedule]
interval_s = 1

[[targets]]
name = "a"
addresses = ["10.0.0.1"]
tests = ["ping", "pong"]

[[targets]]
name = "a"
addresses = []
tests = ["tcp:99999"]
lat = 10
""")
    with pytest.raises(PlanError) as info:
        load_plan(plan)
    text = str(info.value)
    expected = [
        "line 2: agent.name: letters, digits",
        "line 3: agent.colour: unknown key",
        "line 6: collector.url: must be an http",
        f"line 10: schedule.interval_s: must be a number in {MIN_INTERVAL_S:g}",
        "line 15: targets[0].tests: 'pong': unknown test",
        "line 18: targets[1].name: a second target named 'a'",
        "line 19: targets[1].addresses: must be a non-empty list",
        "line 20: targets[1].tests: 'tcp:99999': port",
        "targets[1]: give both lat and lon",
    ]
    for line in expected:
        assert line in text, text
    assert len(info.value.problems) == len(expected)


def test_broken_toml_and_missing_file(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text("[agent\n")
    with pytest.raises(PlanError, match="not valid TOML"):
        load_plan(bad)
    with pytest.raises(PlanError, match="cannot read"):
        load_plan(tmp_path / "missing.toml")


def test_credentials_come_from_the_environment(tmp_path, monkeypatch):
    plan = tmp_path / "p.toml"
    plan.write_text("""\
[agent]
name = "a"
[[targets]]
name = "t"
addresses = ["127.0.0.1"]
tests = ["imap:993"]
credentials = { user = "probe", password_env = "NV_TEST_PW" }
""")
    with pytest.raises(PlanError, match="NV_TEST_PW is not set"):
        load_plan(plan)
    monkeypatch.setenv("NV_TEST_PW", "pw")
    loaded = load_plan(plan)
    assert loaded.targets[0].credentials is not None
    assert loaded.targets[0].credentials.password == "pw"


def test_defaults_are_checked_with_every_problem_listed(tmp_path):
    plan = tmp_path / "d.toml"
    plan.write_text("""\
[agent]
name = "a"

[defaults]
colour = 1

[defaults.ping]
count = -5
bogus = 1

[defaults.trace]
protocol = "udp"
pps = "fast"

[defaults.tcp]
attempts = 0

[defaults.smtp]
mode = "weird"

[[targets]]
name = "t"
addresses = ["127.0.0.1"]
tests = ["ping"]
""")
    with pytest.raises(PlanError) as info:
        load_plan(plan)
    expected = [
        "line 5: defaults.colour: unknown key",
        "line 7: defaults.ping: count must be 1..",
        "line 9: defaults.ping.bogus: unknown key",
        "line 12: defaults.trace.protocol: unknown key",  # set per test (trace:udp), not here
        "line 13: defaults.trace.pps: must be a number, not 'fast'",
        "line 15: defaults.tcp: attempts must be 1..",
        "line 19: defaults.smtp.mode: must be one of 'starttls', 'tls', 'plain'",
    ]
    text = str(info.value)
    for line in expected:
        assert line in text, text
    assert len(info.value.problems) == len(expected), text


def test_defaults_that_the_probes_accept_pass(tmp_path):
    plan = tmp_path / "ok.toml"
    plan.write_text("""\
[agent]
name = "a"
[defaults.ping]
count = 3
interval_s = 0.5
socket = "dgram"
[defaults.smtp]
mode = "starttls"
timeout_s = 30
[[targets]]
name = "t"
addresses = ["127.0.0.1"]
tests = ["ping", "smtp"]
""")
    loaded = load_plan(plan)
    assert loaded.options["ping"] == {"count": 3, "interval_s": 0.5, "socket": "dgram"}


def test_a_plan_that_is_not_utf8_is_a_plan_error(tmp_path):
    plan = tmp_path / "latin1.toml"
    plan.write_bytes('[agent]\nname = "a"\nregion = "Bogotá"\n'.encode("latin-1"))
    with pytest.raises(PlanError, match=r"line 3: not UTF-8"):
        load_plan(plan)


def test_cli_check_exits_2_with_every_problem(tmp_path):
    from click.testing import CliRunner

    from netvantage.cli import cli

    plan = tmp_path / "p.toml"
    plan.write_text('[agent]\nname = "a"\n[defaults.ping]\ncount = -5\nnope = 1\n'
                    '[[targets]]\nname = "t"\naddresses = ["127.0.0.1"]\ntests = ["ping"]\n')
    result = CliRunner().invoke(cli, ["agent", "run", "--check", "--plan", str(plan)])
    assert result.exit_code == 2, result.output
    assert "count must be 1.." in result.output and "defaults.ping.nope" in result.output
    plan.write_bytes(b'[agent]\nname = "\xff"\n')
    result = CliRunner().invoke(cli, ["agent", "run", "--check", "--plan", str(plan)])
    assert result.exit_code == 2 and "not UTF-8" in result.output, result.output


def test_mailready_targets_name_their_domain_selectors_and_zones(tmp_path):
    zones = tmp_path / "zones.txt"
    zones.write_text("ip bl.example\n")
    plan = tmp_path / "p.toml"
    plan.write_text("""\
[agent]
name = "a"
[defaults]
mailready = { budget_s = 10.0, timeout_s = 1.5 }
[[targets]]
name = "dc-x"
addresses = ["192.0.2.25"]
tests = ["mailready", "smtp"]
mail_domain = "example.net"
dkim_selectors = ["s1", "s2"]
zones_file = "zones.txt"
""")
    loaded = load_plan(plan)
    target = loaded.targets[0]
    assert [t.kind for t in target.tests] == ["mailready", "smtp"]
    assert (target.mail_domain, target.dkim_selectors) == ("example.net", ("s1", "s2"))
    assert target.zones_file == zones
    zones.write_text("nonsense\n")
    plan.write_text(plan.read_text().replace("budget_s = 10.0", "budget_s = 0")
                    .replace('["s1", "s2"]', '"s1"'))
    with pytest.raises(PlanError) as info:
        load_plan(plan)
    text = str(info.value)
    assert "zones_file" in text and "dkim_selectors" in text and "budget_s" in text
