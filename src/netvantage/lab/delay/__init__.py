"""A userspace delay element: one-way delay and jitter between network namespaces.

The lab's links need latency, and the usual tool, the ``netem`` qdisc, is not
in every kernel (the lab machine has none).  So delay is added in user space:
for every delayed link a TUN device is created in each of the two namespaces,
and *one* process moves packets between the two devices of every link, holding
each packet until it is due.  Routing, addresses and the device state stay
with the caller (``ip``); this package only owns the devices and the clock.
Loss is not done here (the lab drops with nftables), only delay and jitter.

The parts:

* :mod:`.spec` – :class:`LinkSpec` and the JSON spec file the process reads;
* :mod:`.control` – the control socket's line protocol, and the client
  (:func:`set_link`, :func:`link_stats`);
* :mod:`.daemon` – the element itself (``python -m netvantage.lab.delay``):
  TUN devices, the forwarding loop, where its timestamps come from, and how it
  asks to be scheduled.
"""

from __future__ import annotations

from .control import ControlError, link_stats, set_link
from .daemon import MAX_QUEUE, MAX_QUEUE_BYTES, main
from .spec import MAX_DELAY_MS, LinkSpec, SpecError, read_spec, write_spec

__all__ = [
    "MAX_DELAY_MS",
    "MAX_QUEUE",
    "MAX_QUEUE_BYTES",
    "ControlError",
    "LinkSpec",
    "SpecError",
    "link_stats",
    "main",
    "read_spec",
    "set_link",
    "write_spec",
]
