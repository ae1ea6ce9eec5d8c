"""The JSON Schema of a record, as text the project owns.

msgspec generates the schema from the record types, descriptions from their
docstrings.  The text committed under ``docs/`` must depend on the record types
alone, not on the versions of msgspec and Python that generated it, and two
things have changed between versions:

* a docstring's indentation: older msgspec keep the indentation of every line
  after the first, newer ones dedent it (and Python 3.13 strips it already
  when compiling).  Every description is cleaned with :func:`inspect.cleandoc`.
* where ``null`` stands among the alternatives of an optional struct
  (``X | None``): msgspec 0.18 writes it first, later versions last.  It is
  always put last.

The keys are sorted when the text is written.
"""

from __future__ import annotations

import inspect
import io
import json
from typing import Any

import msgspec

from .structs import SCHEMA_VERSION, AnyRecord

__all__ = ["canonical_schema", "json_schema", "json_schema_text"]

# Keywords whose values are instances (data), not schemas: a "description" key
# inside them is data and stays as it is.
_INSTANCE_KEYWORDS = frozenset({"const", "default", "enum", "examples"})
# Keywords whose values map names (a property's, a definition's) to schemas: the
# names are not keywords, even a property called "default" or "description".
_NAMED_SCHEMAS = frozenset({"$defs", "definitions", "dependentSchemas", "patternProperties",
                            "properties"})
_NULL = {"type": "null"}


def canonical_schema(node: Any) -> Any:
    """A copy of a JSON Schema (or any part of one), written the project's way.

    Every ``description`` text goes through :func:`inspect.cleandoc` (the common
    indentation of its lines after the first removed, tabs expanded, blank lines
    at either end dropped), so an indented and a dedented docstring give the same
    text.  In every ``anyOf`` / ``oneOf`` the ``{"type": "null"}`` alternative
    comes last, the others keep their order (the order of alternatives carries no
    meaning in JSON Schema).
    """
    if isinstance(node, list):
        return [canonical_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "description" and isinstance(value, str):
            out[key] = inspect.cleandoc(value)
        elif key in _INSTANCE_KEYWORDS:
            out[key] = value
        elif key in _NAMED_SCHEMAS and isinstance(value, dict):
            out[key] = {name: canonical_schema(sub) for name, sub in value.items()}
        elif key in ("anyOf", "oneOf") and isinstance(value, list):
            alternatives = [canonical_schema(sub) for sub in value]
            out[key] = ([a for a in alternatives if a != _NULL]
                        + [a for a in alternatives if a == _NULL])
        else:
            out[key] = canonical_schema(value)
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a record (any kind), generated from the record types."""
    schema: dict[str, Any] = canonical_schema(msgspec.json.schema(AnyRecord))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"netvantage result record, schema {SCHEMA_VERSION}"
    return schema


def json_schema_text() -> str:
    """The JSON Schema as the stable text committed under ``docs/result.schema.json``."""
    buf = io.StringIO()
    json.dump(json_schema(), buf, indent=2, sort_keys=True)
    buf.write("\n")
    return buf.getvalue()
