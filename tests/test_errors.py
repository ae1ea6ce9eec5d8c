"""One exception tree: every error the package raises on purpose is a NetvantageError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import netvantage
from netvantage.errors import NetvantageError
from netvantage.importers.atlas import AtlasFormatError
from netvantage.measure.certs import CertError
from netvantage.measure.proto import ProtocolError


def public_modules() -> list[ModuleType]:
    """Every module of the package whose dotted name has no ``_`` part."""
    names = ["netvantage"] + [
        info.name for info in pkgutil.walk_packages(netvantage.__path__, "netvantage.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return [importlib.import_module(name) for name in names]


def exported_exceptions(module: ModuleType) -> dict[str, type[BaseException]]:
    """The exception classes a module offers: its ``__all__``, else its public names.

    Only classes of netvantage itself count (a module may re-export
    ``ValueError`` or a dependency's error without owning it).
    """
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    found = {}
    for name in names:
        obj = getattr(module, name, None)
        if (inspect.isclass(obj) and issubclass(obj, BaseException)
                and obj.__module__.split(".")[0] == "netvantage"):
            found[f"{module.__name__}.{name}"] = obj
    return found


def test_walk_finds_the_modules_and_errors_it_is_meant_to_check():
    modules = {m.__name__ for m in public_modules()}
    assert {"netvantage.importers.atlas", "netvantage.measure.certs", "netvantage.measure.proto",
            "netvantage.results", "netvantage.collector.store"} <= modules
    found = {cls for m in public_modules() for cls in exported_exceptions(m).values()}
    # The three that used to stand outside the tree, and a few that never did.
    assert {AtlasFormatError, CertError, ProtocolError, NetvantageError} <= found
    assert len(found) >= 15


def test_every_exported_exception_is_a_netvantage_error():
    outside = sorted(
        f"{where} ({', '.join(b.__name__ for b in cls.__mro__[1:])})"
        for module in public_modules()
        for where, cls in exported_exceptions(module).items()
        if not issubclass(cls, NetvantageError)
    )
    assert outside == [], "derive these from netvantage.errors.NetvantageError"


def test_every_exception_class_defined_in_a_module_is_in_the_tree():
    # Also the public ones a module forgot to list in __all__ (private ones, like
    # an internal abort signal, are the module's own business).
    outside = sorted(
        f"{module.__name__}.{name}"
        for module in public_modules()
        for name, obj in vars(module).items()
        if not name.startswith("_") and inspect.isclass(obj)
        and issubclass(obj, BaseException) and obj.__module__ == module.__name__
        and not issubclass(obj, NetvantageError)
    )
    assert outside == []


@pytest.mark.parametrize("cls", [AtlasFormatError, CertError])
def test_errors_callers_catch_as_value_error_still_are_value_errors(cls):
    # atlas and the mail probe's certificate reading are caught as ValueError by callers.
    assert issubclass(cls, NetvantageError) and issubclass(cls, ValueError)


def test_the_new_members_keep_their_messages_and_fields():
    err = AtlasFormatError("bad rtt value", "'x'")
    assert (str(err), err.reason, err.detail) == ("bad rtt value: 'x'", "bad rtt value", "'x'")
    with pytest.raises(NetvantageError, match="line longer than 8 bytes"):
        from netvantage.measure.proto import take_line
        take_line(bytearray(b"x" * 9), 8, "reply")
