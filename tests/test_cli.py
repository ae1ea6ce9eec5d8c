"""The command line: documented commands, JSON Lines out, exit codes for scripts."""

from __future__ import annotations

import json
import socket

import click
import pytest

from conftest import run_cli
from netns import missing
from netvantage.cli import cli
from netvantage.results import read_jsonl


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from all_commands(command, path)


@pytest.mark.parametrize("path", [p for p, _ in all_commands(cli)], ids=" ".join)
def test_every_command_has_an_example_in_its_help(path):
    proc = run_cli(*path, "--help")
    assert proc.returncode == 0
    assert "Example" in proc.stdout
    assert f"netvantage {path[0]}" in proc.stdout


def test_bad_targets_exit_2_listing_every_problem():
    proc = run_cli("measure", "tcp", "127.0.0.1", "host:99999", "[::1:25")
    assert proc.returncode == 2
    assert "give a port" in proc.stderr
    assert "outside 1-65535" in proc.stderr
    assert "missing ']'" in proc.stderr


def test_tcp_writes_jsonl_file_and_table(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    out = tmp_path / "tcp.jsonl"
    try:
        proc = run_cli("measure", "tcp", f"127.0.0.1:{port}", "-n", "2", "-i", "0.05",
                       "-o", str(out), "--table", "--region", "lab-1", "--agent", "probe-a")
    finally:
        srv.close()
    assert proc.returncode == 0, proc.stderr
    assert f"127.0.0.1:{port}" in proc.stdout and " ok " in proc.stdout
    (rec,) = read_jsonl(out)
    assert rec.agent == "probe-a" and rec.region == "lab-1" and rec.status == "ok"


def test_fail_on_error_exit_code_for_refused():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    try:
        plain = run_cli("measure", "tcp", f"127.0.0.1:{port}", "-n", "1")
        strict = run_cli("measure", "tcp", f"127.0.0.1:{port}", "-n", "1", "--fail-on-error")
    finally:
        closed.close()
    assert plain.returncode == 0 and json.loads(plain.stdout)["status"] == "refused"
    assert strict.returncode == 1


def test_schema_command_validates_files(tmp_path):
    good = tmp_path / "good.jsonl"
    bad = tmp_path / "bad.jsonl"
    proc = run_cli("measure", "tcp", "127.0.0.1:1", "-n", "1", "-o", str(good))
    assert proc.returncode == 0
    bad.write_text(good.read_text().replace('"schema":1', '"schema":9'))
    ok = run_cli("schema", "--validate", str(good))
    assert ok.returncode == 0 and "1 valid record(s)" in ok.stdout
    refused = run_cli("schema", "--validate", str(bad))
    assert refused.returncode == 2
    assert "line 1: schema 9 is newer" in refused.stderr


def test_ping_prints_one_valid_line_with_five_rtts():
    from test_measure import icmp_allowed
    if not icmp_allowed():
        missing("no ICMP socket allowed here")
    proc = run_cli("measure", "ping", "127.0.0.1", "--count", "5", "-i", "0.05")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["kind"] == "ping" and data["status"] == "ok"
    assert len(data["body"]["rtts_ms"]) == 5 and None not in data["body"]["rtts_ms"]


def test_demo_measures_this_machine(tmp_path):
    proc = run_cli("demo", "--quick", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(tmp_path / "demo-measurements.jsonl")
    statuses = {(r.kind, r.status) for r in records}
    assert ("tcp", "ok") in statuses and ("tcp", "refused") in statuses
    assert "records written to" in proc.stdout
