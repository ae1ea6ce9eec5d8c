"""Echo requests built with a precomputed partial checksum: every one must carry
the RFC 1071 checksum a from-scratch sum gives, for any identifier, sequence
number and payload (odd lengths included)."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from netvantage.measure.ping import echo_partial_sum, echo_request


def rfc1071(data: bytes) -> int:
    """The Internet checksum, summed word by word the textbook way."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@given(st.sampled_from([8, 128]), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
       st.binary(min_size=0, max_size=1500))
def test_checksum_matches_a_from_scratch_sum(request_type, ident, seq, payload):
    packet = echo_request(request_type, echo_partial_sum(request_type, payload), ident, seq,
                          payload)
    kind, code, checksum, got_ident, got_seq = struct.unpack("!BBHHH", packet[:8])
    assert (kind, code, got_ident, got_seq) == (request_type, 0, ident, seq)
    assert packet[8:] == payload
    assert checksum == rfc1071(packet[:2] + b"\0\0" + packet[4:])
    # A receiver sums the whole packet, checksum included, and must get zero.
    assert rfc1071(packet) == 0


def test_a_known_packet():
    # Echo request, id 0x1234, seq 1, payload "abcd": 0x0800 + 0x1234 + 0x0001 + 0x6162
    # + 0x6364 = 0xDEFB; checksum ~0xDEFB = 0x2104.  And one whose sum carries:
    # 0x0800 + 0xFFFF + 0xFFFF + 0xFFFF = 0x307FD, folded 0x0800; checksum 0xF7FF.
    packet = echo_request(8, echo_partial_sum(8, b"abcd"), 0x1234, 1, b"abcd")
    assert packet == bytes.fromhex("080021041234000161626364")
    packet = echo_request(8, echo_partial_sum(8, b"\xff\xff"), 0xFFFF, 0xFFFF, b"\xff\xff")
    assert packet == bytes.fromhex("0800f7ffffffffffffff")
