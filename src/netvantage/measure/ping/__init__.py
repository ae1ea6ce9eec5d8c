"""ICMP echo ("ping") over icmplib sockets, with kernel receive timestamps.

``netvantage.measure.ping`` is this package and ``netvantage.measure.ping.ping``
the function that pings one target; :func:`ping_many` pings several as one sweep.
Every network outcome is a record, never an exception.

The parts, each with its own notes:

* :mod:`.options` – :class:`PingOptions` and the ceilings that keep a command
  from becoming a flood;
* :mod:`.wire` – ICMP message types and echo requests with their checksum;
* :mod:`.sockets` – raw or datagram ICMP sockets, the privilege message, socket
  options and kernel filters;
* :mod:`.engine` – one socket per address family shared by every target: sending,
  receiving, demultiplexing replies and errors, and where an RTT's two
  timestamps come from;
* :mod:`.sweep` – the schedule: the global pace, the bound on active targets,
  and :func:`ping` / :func:`ping_many`;
* :mod:`.records` – a finished target's record and status.
"""

from __future__ import annotations

from .options import PingOptions
from .sockets import open_icmp_socket
from .sweep import ping, ping_many
from .wire import echo_partial_sum, echo_request

__all__ = ["PingOptions", "echo_partial_sum", "echo_request", "open_icmp_socket", "ping",
           "ping_many"]
