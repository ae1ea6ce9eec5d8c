"""Other platforms' measurements as netvantage records: one module per source.

* :mod:`.io` — streamed, decompressing reading; :class:`ImportFormatError`;
  refusals counted by reason and the per-file :class:`ImportReport`.
* :mod:`.places` — the one place model (:class:`~.places.Place`) and its resolvers
  (IATA code, country, coordinates, city, address in a MaxMind-format database).
* :mod:`.atlas` — RIPE Atlas ping and traceroute results.

Importing this package loads only :mod:`.io` (no pandas): each source module is
imported by the command that needs it.
"""

from __future__ import annotations

from .io import ImportFormatError, ImportReport, Refusals, iter_json, open_binary, open_text

__all__ = ["ImportFormatError", "ImportReport", "Refusals", "iter_json", "open_binary",
           "open_text"]
