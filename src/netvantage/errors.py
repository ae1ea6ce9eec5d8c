"""The one exception tree of netvantage.

Network failures are *results* (a status in a record), never exceptions.
Exceptions are for bad input, bad configuration and missing privileges, and
their messages say what to do::

    NetvantageError
    ├── SchemaError        a record or a JSON Lines file does not fit the schema
    ├── TargetError        a target string cannot be parsed
    └── PrivilegeError     the OS refuses the socket a measurement needs
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
