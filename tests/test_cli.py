"""The command line: documented commands, JSON Lines out, exit codes for scripts.

Most tests run the command in this process with click's ``CliRunner`` (the same
``cli`` group, the same exit codes and streams, no interpreter start-up). A few
run the installed ``netvantage`` program, where the real process is the point:
the entry point, bytes on a real stdout, and what a fresh interpreter imports.
"""

from __future__ import annotations

import importlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner, Result

from conftest import run_cli
from netns import missing
from netvantage.cli import EXIT_FAILED, EXIT_PRIVILEGE, EXIT_USAGE, cli
from netvantage.errors import PrivilegeError
from netvantage.results import SCHEMA_VERSION, read_jsonl


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``netvantage ARGS`` in this process; a bug (any exception but an exit) raises."""
    return CliRunner().invoke(cli, list(args), prog_name="netvantage", env=env,
                              catch_exceptions=False)


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from all_commands(command, path)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connections are refused."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    try:
        yield closed.getsockname()[1]
    finally:
        closed.close()


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("path", [p for p, _ in all_commands(cli)], ids=" ".join)
def test_every_command_has_an_example_in_its_help(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert f"netvantage {path[0]}" in result.stdout


def test_root_help_lists_every_command_group():
    result = invoke("-h")
    assert result.exit_code == 0
    section = result.stdout.split("Commands:\n")[1].split("\n\n")[0]
    listed = {line.split()[0] for line in section.splitlines()}
    assert listed == set(cli.commands)
    assert {"measure", "lab", "agent", "collector", "export", "import", "analyse", "report",
            "annotate", "schema", "demo"} <= listed


# ----------------------------------------------------------------------------- usage errors


def test_bad_targets_exit_2_listing_every_problem():
    result = invoke("measure", "tcp", "127.0.0.1", "host:99999", "[::1:25")
    assert result.exit_code == EXIT_USAGE
    assert "give a port" in result.stderr
    assert "outside 1-65535" in result.stderr
    assert "missing ']'" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args, message", [
    (("measure", "ping"), "Missing argument 'HOST...'"),
    (("measure", "tcp", "127.0.0.1:1", "--attempts", "0"), "0 is not in the range"),
    (("lab", "link", "r-a", "r-b"), "give at least one of --delay, --jitter, --loss"),
    (("lab", "status", "--prefix", "no spaces"), "letters, digits and '-'"),
    (("measure", "smtp", "127.0.0.1", "--user", "probe"), "--user needs --password-env"),
    (("export", "--store", "{tmp}/none.db", "--format", "jsonl", "-o", "-"), "no such store"),
    (("analyse", "{tmp}/x.jsonl", "--weights", "ZM-LUN"), "is not REGION=NUMBER"),
    (("annotate", "{tmp}/x.jsonl"), "give --asn-db, --city-db or --rdns"),
    (("agent", "run", "--plan", "{tmp}/x.jsonl", "--check"), "not valid TOML"),
], ids=lambda v: " ".join(v[:2]) if isinstance(v, tuple) else None)
def test_usage_and_input_errors_exit_2_with_a_message(tmp_path, args, message):
    (tmp_path / "x.jsonl").write_text("this is not JSON\n")
    result = invoke(*(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == EXIT_USAGE, result.output
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_a_refused_privilege_exits_3_with_the_advice(monkeypatch):
    import netvantage.measure.ping as ping_module

    async def refused(*args, **kwargs):
        raise PrivilegeError("no ICMP socket: grant CAP_NET_RAW or widen ping_group_range")

    monkeypatch.setattr(ping_module, "ping_many", refused)
    result = invoke("measure", "ping", "127.0.0.1")
    assert result.exit_code == EXIT_PRIVILEGE
    assert result.stderr == ("netvantage: error: no ICMP socket: grant CAP_NET_RAW or widen "
                             "ping_group_range\n")
    assert result.stdout == ""


def test_running_out_of_memory_exits_2_with_what_to_do(monkeypatch, tmp_path):
    """A campaign bigger than memory ends in a sentence, not a MemoryError traceback."""
    load_module = importlib.import_module("netvantage.analysis.load")  # (not the function)

    def too_big(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(load_module, "load", too_big)
    data = tmp_path / "c.jsonl"
    data.write_text("")
    result = invoke("analyse", str(data), "--quiet")
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.startswith("netvantage: error: out of memory: ")
    assert "--dask local" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


# ----------------------------------------------------------------------------- measure


def test_tcp_writes_jsonl_file_and_table(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    out = tmp_path / "tcp.jsonl"
    try:
        result = invoke("measure", "tcp", f"127.0.0.1:{port}", "-n", "2", "-i", "0.05",
                        "-o", str(out), "--table", "--region", "lab-1", "--agent", "probe-a")
    finally:
        srv.close()
    assert result.exit_code == 0, result.stderr
    header, row, units = result.stdout.splitlines()
    assert header.split()[:7] == ["KIND", "TARGET", "ADDRESS", "STATUS", "SENT", "OK", "LOSS"]
    assert row.split()[:7] == ["tcp", f"127.0.0.1:{port}", "127.0.0.1", "ok", "2", "2", "0%"]
    assert units == "(times in ms)"
    (rec,) = read_jsonl(out)
    assert rec.agent == "probe-a" and rec.region == "lab-1" and rec.status == "ok"


def test_table_shows_a_missing_time_as_a_dash_never_zero(refused_port):
    result = invoke("measure", "tcp", f"127.0.0.1:{refused_port}", "-n", "1", "--table")
    assert result.exit_code == 0
    row = result.stdout.splitlines()[1].split()
    assert row[3:11] == ["refused", "1", "0", "100%", "-", "-", "-", "-"]


def test_fail_on_error_exit_code_for_refused(refused_port):
    plain = invoke("measure", "tcp", f"127.0.0.1:{refused_port}", "-n", "1")
    strict = invoke("measure", "tcp", f"127.0.0.1:{refused_port}", "-n", "1",
                    "--fail-on-error")
    assert plain.exit_code == 0 and json.loads(plain.stdout)["status"] == "refused"
    assert strict.exit_code == EXIT_FAILED
    assert json.loads(strict.stdout)["status"] == "refused"  # the record is still printed


def test_trace_table_lists_every_hop_of_a_loopback_trace():
    # UDP with IP_RECVERR needs no privilege; loopback answers at TTL 1.
    result = invoke("measure", "trace", "127.0.0.1", "-P", "udp", "--method", "recverr",
                    "-q", "2", "-W", "0.5", "--table")
    assert result.exit_code == 0, result.stderr
    title, header, hop, units = result.stdout.splitlines()
    assert title == "trace udp:33434 to 127.0.0.1 (127.0.0.1): ok, reached at TTL 1"
    assert header.split() == ["TTL", "ADDRESS", "ASN", "CITY", "LOSS", "SENT", "BEST",
                              "MEDIAN", "WORST"]
    assert hop.split()[:4] == ["1", "127.0.0.1", "0%", "2"]
    assert units == "(times in ms)"


def test_ping_prints_one_valid_line_with_five_rtts():
    from test_measure import icmp_allowed
    if not icmp_allowed():
        missing("no ICMP socket allowed here")
    result = invoke("measure", "ping", "127.0.0.1", "--count", "5", "-i", "0.05")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["kind"] == "ping" and data["status"] == "ok"
    assert len(data["body"]["rtts_ms"]) == 5 and None not in data["body"]["rtts_ms"]


# ----------------------------------------------------------------------------- other commands


def test_schema_command_validates_files(tmp_path, refused_port):
    good = tmp_path / "good.jsonl"
    bad = tmp_path / "bad.jsonl"
    result = invoke("measure", "tcp", f"127.0.0.1:{refused_port}", "-n", "1", "-o", str(good))
    assert result.exit_code == 0 and result.stdout == ""
    text = good.read_text()
    assert f'"schema":{SCHEMA_VERSION},' in text
    bad.write_text(text.replace(f'"schema":{SCHEMA_VERSION},', '"schema":9,'))
    ok = invoke("schema", "--validate", str(good))
    assert ok.exit_code == 0 and "1 valid record(s)" in ok.stdout
    refused = invoke("schema", "--validate", str(good), "--validate", str(bad))
    assert refused.exit_code == EXIT_USAGE
    assert "line 1: schema 9 is newer" in refused.stderr
    assert "1 valid record(s)" in refused.stdout  # the good file is still reported


def test_schema_prints_the_json_schema():
    result = invoke("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert "$schema" in schema
    assert {"PingRecord", "TcpRecord", "TraceRecord", "SmtpRecord", "ImapRecord"} <= set(
        schema["$defs"])


def test_agent_check_lists_every_measurement_of_the_plan(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text('[agent]\nname = "lusaka-1"\nregion = "ZM-LUN"\n\n'
                    '[[targets]]\nname = "dc-ams"\naddresses = ["192.0.2.15"]\n'
                    'tests = ["ping", "tcp:25"]\n')
    result = invoke("agent", "run", "--plan", str(plan), "--check")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"plan {plan}: agent lusaka-1 (ZM-LUN), 2 measurement(s):"
    assert [line.split()[0] for line in lines[1:]] == ["dc-ams/192.0.2.15/ping",
                                                      "dc-ams/192.0.2.15/tcp:25"]
    assert not (tmp_path / "lusaka-1.spool.sqlite").exists()  # checked, nothing started


def test_demo_measures_this_machine(tmp_path):
    result = invoke("demo", "--quick", "--out", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    records = read_jsonl(tmp_path / "demo-measurements.jsonl")
    statuses = {(r.kind, r.status) for r in records}
    assert ("tcp", "ok") in statuses and ("tcp", "refused") in statuses
    assert f"{len(records)} records written to" in result.stdout


# ----------------------------------------------------------------------------- real process


def test_the_installed_command_writes_json_lines_and_exit_codes(refused_port):
    plain = run_cli("measure", "tcp", f"127.0.0.1:{refused_port}", "-n", "1")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["status"] == "refused"
    assert plain.stdout.endswith("\n") and plain.stdout.count("\n") == 1
    usage = run_cli("measure", "tcp", "127.0.0.1")
    assert usage.returncode == EXIT_USAGE and "give a port" in usage.stderr
    assert run_cli("--version").stdout == "netvantage, version 0.1.0\n"


def test_starting_the_cli_loads_no_probe_schema_or_pandas():
    code = ("import sys, netvantage.cli; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('netvantage', "
            "'pandas', 'asyncio', 'msgspec')))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True, timeout=60).stdout.split())
    assert {"netvantage.cli", "netvantage.cli.measure", "netvantage.errors"} <= loaded
    assert not loaded & {"netvantage.results", "netvantage.measure", "netvantage.measure.ping",
                         "netvantage.measure.common", "pandas", "asyncio", "msgspec"}
