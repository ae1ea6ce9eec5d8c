"""ICMP echo on the wire: message types, and echo requests built with their checksum.

Nothing here touches a socket; :mod:`.engine` sends what :func:`echo_request`
builds and reads replies with :data:`ID_SEQ`.
"""

from __future__ import annotations

import struct

__all__ = ["ECHO_REPLY", "ECHO_REQUEST", "ERROR_TYPES", "ID_SEQ", "UNREACHABLE_TYPE",
           "echo_partial_sum", "echo_request"]

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
# ICMP errors that quote our echo request: unreachable, time exceeded, parameter
# problem (and, for IPv6, packet too big).
ERROR_TYPES = {4: {3, 11, 12}, 6: {1, 2, 3, 4}}
UNREACHABLE_TYPE = {4: 3, 6: 1}
ID_SEQ = struct.Struct("!HH")  # an echo message's identifier and sequence number

_ECHO_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence


def echo_partial_sum(request_type: int, payload: bytes) -> int:
    """The folded one's-complement sum (RFC 1071) of an echo request's fixed parts.

    Type, code and payload are the same for every request of a sweep; only the
    identifier and sequence number change, so :func:`echo_request` adds those two
    words to this sum instead of summing the whole packet again.
    """
    padded = payload + b"\0" if len(payload) % 2 else payload
    words: tuple[int, ...] = struct.unpack(f"!{len(padded) // 2}H", padded)
    total = (request_type << 8) + sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def echo_request(request_type: int, partial_sum: int, ident: int, seq: int,
                 payload: bytes) -> bytes:
    """An ICMP or ICMPv6 echo request with its checksum (RFC 792, RFC 4443 section 4.1).

    An ICMPv6 checksum also covers a pseudo-header that only the kernel knows; it
    recomputes that field on raw ICMPv6 and on ping sockets, as it sets the
    identifier on ping sockets, so the value written here matters for raw IPv4.
    """
    total = partial_sum + ident + seq  # <= 3 * 0xFFFF: two folds bring it to 16 bits
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return _ECHO_HEADER.pack(request_type, 0, ~total & 0xFFFF, ident, seq) + payload
