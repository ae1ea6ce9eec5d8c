"""Deterministic record ids, and the ids already written in an import (to skip repeats).

Every importer names a record by what it measured (an Atlas result by its
type, measurement, probe and time; a matrix cell by its places and time), so
the same result imported twice, from one file or two, gets the same id, and
the analysis's loader keeps one record per id.  Within an import a repeat is
skipped and counted as a duplicate: :class:`RecentKeys` remembers what was
written in bounded memory.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["RECENT_KEYS", "RecentKeys", "uuid5"]

#: How many keys :class:`RecentKeys` remembers at least (all of the current
#: bucket's besides): about 10 MB as small ints in sets.
RECENT_KEYS = 131_072


def uuid5(namespace: uuid.UUID, name: str) -> tuple[str, bytes]:
    """``(text, 16 bytes)`` of the UUIDv5 (RFC 9562) of ``name`` in ``namespace``.

    What ``str(uuid.uuid5(namespace, name))`` gives, without building UUID
    objects (an import makes one per record).
    """
    h = _sha1_of(namespace).copy()
    h.update(name.encode("utf-8"))
    raw = bytearray(h.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 / 9562 variant
    x = raw.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}", bytes(raw)


_SHA1: dict[uuid.UUID, hashlib._Hash] = {}


def _sha1_of(namespace: uuid.UUID) -> hashlib._Hash:
    h = _SHA1.get(namespace)
    if h is None:
        h = _SHA1[namespace] = hashlib.sha1(namespace.bytes, usedforsecurity=False)
    return h


class RecentKeys:
    """The keys written recently, grouped in buckets (a time, an hour), exactly.

    Keys are kept per bucket, the most recently used buckets first, up to about
    ``limit`` keys (always every key of the current bucket), so memory is
    bounded by ``limit``, not by the length of the input.  Within what is
    remembered the answer is exact: keys are compared whole (no digests), so a
    record is never taken for a repeat it is not.  A repeat whose bucket was
    forgotten is not caught: it is written again with the same id, and readers
    keep one record per id.
    """

    def __init__(self, limit: int = RECENT_KEYS) -> None:
        self.limit = limit
        self._buckets: OrderedDict[Hashable, set[Hashable]] = OrderedDict()
        self._last: Hashable = object()
        self._current: set[Hashable] = set()
        self._total = 0
        #: Buckets forgotten to stay within ``limit``.
        self.forgotten = 0

    def again(self, bucket: Hashable, key: Hashable) -> bool:
        """Whether ``key`` was seen in ``bucket``; remembers it if not."""
        if bucket != self._last:
            current = self._buckets.get(bucket)
            if current is None:
                current = self._buckets[bucket] = set()
                while self._total > self.limit and len(self._buckets) > 1:
                    self._total -= len(self._buckets.popitem(last=False)[1])
                    self.forgotten += 1
            else:
                self._buckets.move_to_end(bucket)
            self._last, self._current = bucket, current
        if key in self._current:
            return True
        self._current.add(key)
        self._total += 1
        return False
