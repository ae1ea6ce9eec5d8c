from __future__ import annotations

import pytest

from netvantage.errors import TargetError
from netvantage.measure.target import Target, parse_target


@pytest.mark.parametrize("text, host, port", [
    ("127.0.0.1", "127.0.0.1", None),
    ("127.0.0.1:25", "127.0.0.1", 25),
    ("mx.example.net:465", "mx.example.net", 465),
    ("2001:db8::1", "2001:db8::1", None),
    ("[2001:db8::1]:993", "2001:db8::1", 993),
    ("[::1]", "::1", None),
    (" localhost ", "localhost", None),
])
def test_parses(text, host, port):
    assert parse_target(text) == Target(host, port)


@pytest.mark.parametrize("text, message", [
    ("host:", "port '' is not a number"),
    ("host:0", "outside 1-65535"),
    ("host:70000", "outside 1-65535"),
    ("[2001:db8::1", "missing ']'"),
    ("[2001:db8::1]25", "expected ':PORT'"),
    ("[nothost]:25", "not an IPv6 address"),
    ("bad host", "neither an IP address nor a host name"),
    (":25", "empty host"),
])
def test_refuses(text, message):
    with pytest.raises(TargetError, match=message):
        parse_target(text)


def test_port_required_for_tcp():
    with pytest.raises(TargetError, match="give a port"):
        parse_target("127.0.0.1", require_port=True)


def test_str_brackets_ipv6():
    assert str(Target("::1", 25)) == "[::1]:25"
    assert str(Target("a.example", 25)) == "a.example:25"
