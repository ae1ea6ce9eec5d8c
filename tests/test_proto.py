"""The sans-I/O dialogues, driven by real servers' bytes (tests/transcripts/)."""

from __future__ import annotations

import ast
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import netvantage.measure.proto as proto
from netvantage.errors import NetvantageError
from netvantage.measure.proto import Done, Fail, FailStatus, ProtocolError, Send, StartTls, Wait
from netvantage.measure.proto.imap import ImapDialogue, ResponseReader
from netvantage.measure.proto.smtp import ReplyReader, SmtpDialogue

TRANSCRIPTS = Path(__file__).parent / "transcripts"
PROTO_DIR = Path(proto.__file__).parent
# What a sans-I/O core may import besides its own package: no I/O, nothing of
# netvantage but the leaf errors module.
NO_IO = {"socket", "ssl", "asyncio", "selectors", "select"}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (anywhere in it), as absolute dotted names."""
    package = "netvantage.measure.proto"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def test_protocol_cores_import_only_the_errors_module_of_netvantage():
    files = sorted(PROTO_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "smtp.py", "imap.py"}
    bad = []
    for path in files:
        for line, module in imports_of(path):
            top = module.split(".")[0]
            if top == "netvantage" and not (module == "netvantage.errors"
                                            or module.startswith("netvantage.measure.proto")):
                bad.append(f"{path.name}:{line}: {module}")
            if top in NO_IO:
                bad.append(f"{path.name}:{line}: {module} (I/O)")
    assert bad == []


def loaded_modules(statement: str) -> set[str]:
    """The names in ``sys.modules`` after a fresh interpreter runs ``statement``."""
    code = f"import sys\n{statement}\nprint(' '.join(sys.modules))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.split())


def test_importing_the_protocol_cores_loads_no_other_netvantage_module():
    # The parent packages' __init__ run too: they must stay free of imports as well.
    bare = loaded_modules("pass")
    after = loaded_modules("import netvantage.measure.proto.smtp, netvantage.measure.proto.imap")
    assert {m for m in after if m.split(".")[0] == "netvantage"} == {
        "netvantage", "netvantage.errors", "netvantage.measure", "netvantage.measure.proto",
        "netvantage.measure.proto.imap", "netvantage.measure.proto.smtp"}
    assert (after - bare) & NO_IO == set()


def test_fail_statuses_are_record_statuses():
    from netvantage.results import STATUSES

    assert set(typing.get_args(FailStatus)) <= set(STATUSES)
    assert set(typing.get_args(FailStatus)) == {"protocol_error", "tls_error", "error"}


def test_protocol_error_is_in_the_one_exception_tree():
    assert issubclass(ProtocolError, NetvantageError)


def test_postfix_transcript_drives_smtp_to_starttls():
    data = (TRANSCRIPTS / "postfix-3.7-smtp25.txt").read_bytes()
    reader, dialogue = ReplyReader(), SmtpDialogue(mode="starttls", helo="probe.example")
    assert dialogue.start() == Wait("greeting")
    replies = reader.feed(data)
    assert [r.code for r in replies] == [220, 250, 220]
    assert dialogue.on_reply(replies[0]) == Send(b"EHLO probe.example\r\n", "ehlo")
    assert dialogue.on_reply(replies[1]) == Send(b"STARTTLS\r\n", "starttls")
    assert "STARTTLS" in dialogue.capabilities and "SIZE 10240000" in dialogue.capabilities
    assert dialogue.on_reply(replies[2]) == StartTls()
    assert dialogue.tls_established() == Send(b"EHLO probe.example\r\n", "ehlo_tls")
    assert reader.buffered == 0


def test_postfix_transcript_parses_the_same_split_at_every_byte():
    data = (TRANSCRIPTS / "postfix-3.7-smtp25.txt").read_bytes()
    whole = ReplyReader().feed(data)
    for cut in range(1, len(data)):
        reader = ReplyReader()
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == whole


def test_dovecot_transcript_drives_imap_to_starttls():
    data = (TRANSCRIPTS / "dovecot-2.3-imap143.txt").read_bytes()
    reader, dialogue = ResponseReader(), ImapDialogue(mode="starttls")
    responses = reader.feed(data)
    assert [(r.kind, r.word) for r in responses] == [
        ("untagged", "OK"), ("untagged", "CAPABILITY"), ("tagged", "OK"), ("tagged", "OK")]
    assert dialogue.start() == Wait("greeting")
    assert dialogue.on_response(responses[0]) == Send(b"a1 CAPABILITY\r\n", "capability")
    assert dialogue.on_response(responses[1]) == Wait("capability")
    # The transcript's tags were a001/a002; ours are a1/a2: re-tag to replay it.
    tagged = [type(r)(r.kind, f"a{i}", r.word, r.text) for i, r in enumerate(responses[2:], 1)]
    assert dialogue.on_response(tagged[0]) == Send(b"a2 STARTTLS\r\n", "starttls")
    assert "LOGINDISABLED" in dialogue.capabilities
    assert dialogue.on_response(tagged[1]) == StartTls()
    assert dialogue.tls_established() == Send(b"a3 CAPABILITY\r\n", "capability_tls")


@pytest.mark.parametrize("greeting, status", [
    (b"421 4.3.2 Service not available\r\n", "protocol_error"),
    (b"554 5.7.1 No SMTP service here\r\n", "protocol_error"),
])
def test_smtp_greeting_refusals(greeting, status):
    dialogue = SmtpDialogue()
    (reply,) = ReplyReader().feed(greeting)
    action = dialogue.on_reply(reply)
    assert isinstance(action, Fail)
    assert (action.status, action.phase, action.code) == (status, "greeting", greeting[:3].decode())


def test_smtp_without_starttls_offered_is_a_tls_error():
    dialogue = SmtpDialogue(mode="starttls")
    reader = ReplyReader()
    dialogue.on_reply(reader.feed(b"220 hi\r\n")[0])
    action = dialogue.on_reply(reader.feed(b"250-hi\r\n250 PIPELINING\r\n")[0])
    assert isinstance(action, Fail) and action.status == "tls_error"


def test_smtp_credentials_never_go_out_in_clear():
    dialogue = SmtpDialogue(mode="plain", username="u", password="p")
    reader = ReplyReader()
    dialogue.on_reply(reader.feed(b"220 hi\r\n")[0])
    action = dialogue.on_reply(reader.feed(b"250 hi\r\n")[0])
    assert isinstance(action, Fail) and "without TLS" in action.reason


def test_smtp_quit_then_done():
    dialogue = SmtpDialogue(mode="plain")
    reader = ReplyReader()
    dialogue.on_reply(reader.feed(b"220 hi\r\n")[0])
    assert dialogue.on_reply(reader.feed(b"250 hi\r\n")[0]) == Send(b"QUIT\r\n", "quit")
    assert dialogue.on_reply(reader.feed(b"221 bye\r\n")[0]) == Done()


@pytest.mark.parametrize("data, message", [
    (b"250-a\r\n251 b\r\n", "changed code"),
    (b"hello\r\n", "malformed reply line"),
    (b"999 x\r\n", "outside 2xx-5xx"),
    (b"2" * 5000, "longer than 4096"),
])
def test_smtp_reader_refusals(data, message):
    with pytest.raises(ProtocolError, match=message):
        ReplyReader().feed(data)


def test_imap_literals_are_folded_and_bounded():
    reader = ResponseReader(max_literal=10)
    (r,) = reader.feed(b"* OK {5}\r\nab\r\nc tail\r\n")
    assert r.word == "OK" and "ab\r\nc" in r.text
    with pytest.raises(ProtocolError, match="exceeds 10"):
        ResponseReader(max_literal=10).feed(b"* OK {11}\r\n")


def test_imap_bye_greeting_and_refused_starttls():
    d = ImapDialogue(mode="starttls")
    action = d.on_response(ResponseReader().feed(b"* BYE go away\r\n")[0])
    assert isinstance(action, Fail) and action.phase == "greeting"
    d = ImapDialogue(mode="starttls")
    reader = ResponseReader()
    d.on_response(reader.feed(b"* OK hi\r\n")[0])
    d.on_response(reader.feed(b"* CAPABILITY IMAP4rev1 STARTTLS\r\n")[0])
    d.on_response(reader.feed(b"a1 OK done\r\n")[0])
    action = d.on_response(reader.feed(b"a2 NO not now\r\n")[0])
    assert isinstance(action, Fail) and (action.status, action.phase) == ("tls_error", "starttls")


def _smtp_to_auth(ehlo: bytes) -> tuple[SmtpDialogue, object]:
    """An implicit-TLS dialogue with credentials, fed a greeting and ``ehlo``; its action."""
    dialogue = SmtpDialogue(mode="tls", username="u", password="p")
    dialogue.start()
    dialogue.tls_established()
    reader = ReplyReader()
    dialogue.on_reply(reader.feed(b"220 hi\r\n")[0])
    return dialogue, dialogue.on_reply(reader.feed(ehlo)[0])


def test_smtp_x_exps_and_auth_equals_are_read_as_auth():
    from netvantage.measure.proto.smtp import auth_mechanisms

    assert auth_mechanisms(["X-EXPS GSSAPI NTLM", "AUTH=LOGIN PLAIN"]) == {
        "GSSAPI", "NTLM", "LOGIN", "PLAIN"}
    d, action = _smtp_to_auth(b"250-mx.example\r\n250-X-EXPS PLAIN LOGIN\r\n250 8BITMIME\r\n")
    assert isinstance(action, Send) and action.data.startswith(b"AUTH PLAIN ")
    assert d.capabilities_tls == ["X-EXPS PLAIN LOGIN", "8BITMIME"]  # recorded as written


@pytest.mark.parametrize("ehlo", [b"250-mx.example\r\n250 AUTH LOGIN CRAM-MD5\r\n",
                                  b"250-mx.example\r\n250 8BITMIME\r\n"])
def test_smtp_sends_no_auth_plain_unless_offered(ehlo):
    _, action = _smtp_to_auth(ehlo)
    assert isinstance(action, Fail) and action.phase == "auth"
    assert "no AUTH PLAIN" in action.reason and "credentials not sent" in action.reason


def test_imap_preauth_skips_login_and_refuses_starttls_in_clear():
    d = ImapDialogue(mode="tls", username="u", password="p")
    d.start()
    d.tls_established()
    reader = ResponseReader()
    assert d.on_response(reader.feed(b"* PREAUTH [CAPABILITY IMAP4rev1] welcome\r\n")[0]) \
        == Send(b"a1 CAPABILITY\r\n", "capability")
    d.on_response(reader.feed(b"* CAPABILITY IMAP4rev1 IDLE\r\n")[0])
    # Authenticated by the greeting: no LOGIN, straight to LOGOUT.
    assert d.on_response(reader.feed(b"a1 OK done\r\n")[0]) == Send(b"a2 LOGOUT\r\n", "logout")
    assert d.preauth and d.auth_result is None
    clear = ImapDialogue(mode="starttls")
    action = clear.on_response(ResponseReader().feed(b"* PREAUTH hi\r\n")[0])
    assert isinstance(action, Fail) and (action.status, action.phase) == ("tls_error",
                                                                          "greeting")


@pytest.mark.parametrize("after_login, caps", [
    (b"* CAPABILITY IMAP4rev1 IDLE MOVE\r\na2 OK Logged in\r\n", ["IMAP4REV1", "IDLE", "MOVE"]),
    (b"a2 OK [CAPABILITY IMAP4rev1 SORT THREAD=REFS] Logged in\r\n",
     ["IMAP4REV1", "SORT", "THREAD=REFS"]),
    (b"a2 OK Logged in\r\n", []),
])
def test_imap_post_login_capabilities_are_recorded(after_login, caps):
    d = ImapDialogue(mode="tls", username="u", password="p")
    d.start()
    d.tls_established()
    reader = ResponseReader()
    d.on_response(reader.feed(b"* OK hi\r\n")[0])
    assert d.on_response(reader.feed(b"a1 OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] x\r\n")[0]) \
        == Send(b'a2 LOGIN "u" "p"\r\n', "login")
    actions = [d.on_response(r) for r in reader.feed(after_login)]
    assert actions[-1] == Send(b"a3 LOGOUT\r\n", "logout")
    assert d.capabilities_auth == caps and d.auth_result == "ok"
    assert d.capabilities_tls == ["IMAP4REV1", "AUTH=PLAIN"]


@pytest.mark.parametrize("tag, ok", [
    ("a1", True), ("A.001", True), ("x-1_y", True), ("t]1", True), ("#!&'", True),
    ("a+1", False), ("a{1", False), ("a%1", False), ('a"1', False), ("a\\1", False),
])
def test_imap_tag_grammar_is_rfc_3501s(tag, ok):
    line = f"{tag} OK done\r\n".encode()
    if ok:
        (r,) = ResponseReader().feed(line)
        assert (r.kind, r.tag, r.word) == ("tagged", tag, "OK")
    else:
        with pytest.raises(ProtocolError, match="malformed"):
            ResponseReader().feed(line)
