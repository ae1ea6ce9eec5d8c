"""The one exception tree of netvantage.

Network failures are *results* (a status in a record), never exceptions.
Exceptions are for bad input, bad configuration and missing privileges, and
their messages say what to do.  Every error the package raises on purpose
derives from :class:`NetvantageError` (a test walks every public module to
keep it so); the ones that are also a ``ValueError`` stay catchable as one::

    NetvantageError
    ├── SchemaError        a record or a JSON Lines file does not fit the schema
    ├── TargetError        a target string cannot be parsed (also ValueError)
    ├── PrivilegeError     the OS refuses the socket a measurement needs
    ├── ProtocolError      measure.proto: a mail server broke its protocol
    ├── CertError          measure.certs: bytes that are no readable certificate (also ValueError)
    ├── ImportFormatError  importers.io: input that cannot be imported (also ValueError)
    │   └── AtlasFormatError  importers.atlas: a RIPE Atlas result
    ├── PlanError          agent.plan: a measurement plan with mistakes
    ├── SpoolError         agent.spool: the agent's spool file cannot be used
    ├── MetricsListenError agent.metrics: a bad --metrics-listen address (also ValueError)
    ├── StoreError         collector.store: the store refuses an operation
    │   └── AgentExistsError
    ├── LoadError          analysis.load: data that cannot be loaded for analysis
    ├── MetricsError       analysis.metrics: bad metric parameters (also ValueError)
    ├── GeoDatabaseError   annotate: a geo database that cannot be read
    ├── LabError           lab: the emulated internet cannot be built or used
    ├── TopologyError      lab.topology: a lab topology that does not hold together
    ├── MailLabError       lab.mail: the lab's mail servers cannot be set up
    ├── LabDnsError        lab.dns: the lab's DNS servers cannot be set up
    ├── MailReadyError     measure.mailready: a bad zones file, resolver or domain (also ValueError)
    ├── SpecError          lab delay element: an invalid link spec (also ValueError)
    └── ControlError       lab delay element: a control request refused or unanswered

This module imports nothing: the sans-I/O protocol cores (``measure.proto``)
may import it and nothing else of the package.
"""

from __future__ import annotations

__all__ = ["NetvantageError", "PrivilegeError", "SchemaError", "TargetError"]


class NetvantageError(Exception):
    """Root of every error netvantage raises on purpose."""


class SchemaError(NetvantageError):
    """A record, a line or a file does not match the result schema.

    ``problems`` lists every problem found, each already naming its line
    where there is one.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class TargetError(NetvantageError, ValueError):
    """A target such as ``host:port`` could not be understood."""


class PrivilegeError(NetvantageError):
    """The kernel refused a socket a measurement needs; the message says what to change."""
