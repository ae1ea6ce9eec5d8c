"""The install matches the code: every import declared, each room in the extra of its users.

* every third-party module the package imports belongs to a distribution that
  pyproject.toml declares (directly, not through another package's requirements);
* each room imports only what its extra (plus the base dependencies) declares: an
  agent on a small board installs ``netvantage[agent]`` and nothing more;
* the probe commands really run with only the agent's distributions importable
  (a subprocess in which every other distribution's modules refuse to import).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TypedDict

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "netvantage"

# Which extra a module's users install: the first matching path prefix wins.
ROOMS: list[tuple[str, frozenset[str]]] = [
    ("measure/", frozenset({"agent"})),
    ("agent/", frozenset({"agent"})),
    # Block decoding (numpy) for the collector's batches and the loader's blocks.
    ("results/bulk.py", frozenset({"collector"})),
    ("results", frozenset()),
    ("errors.py", frozenset()),
    ("files.py", frozenset()),
    ("text.py", frozenset()),
    ("collector/", frozenset({"collector"})),
    ("analysis/cluster.py", frozenset({"analysis", "cluster"})),
    ("analysis/", frozenset({"analysis"})),
    ("report/", frozenset({"analysis"})),
    ("importers/", frozenset({"analysis"})),
    ("annotate.py", frozenset({"analysis"})),
    ("lab/", frozenset({"lab"})),
    ("campaign.py", frozenset({"lab"})),
]
# The command and the demo load each room on first use: any declared extra will do.
EVERYWHERE = ("cli", "demo.py", "__init__.py", "__main__.py")


# The keys of pyproject.toml's [project] table that these tests read.
Project = TypedDict("Project", {"dependencies": list[str],
                                "optional-dependencies": dict[str, list[str]]})


@cache
def project() -> Project:
    with (ROOT / "pyproject.toml").open("rb") as f:
        table: Project = tomllib.load(f)["project"]
    return table


def declared(extras: frozenset[str]) -> set[str]:
    """Distributions named by the base dependencies and the given extras (self-references
    such as ``netvantage[agent]`` followed)."""
    proj = project()
    optional = proj["optional-dependencies"]
    todo = list(extras)
    seen: set[str] = set()
    names: set[str] = {canonicalize_name(Requirement(r).name) for r in proj["dependencies"]}
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in optional[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "netvantage":
                todo.extend(req.extras)
            else:
                names.add(canonicalize_name(req.name))
    return names


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the non-stdlib modules a file imports (TYPE_CHECKING blocks too:
    mypy reads them, so their stubs must be declared as well)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(n.split(".")[0] for n in names)
    return {n for n in found if n not in sys.stdlib_module_names and n != "netvantage"}


def module_distributions() -> dict[str, list[str]]:
    return {mod: [canonicalize_name(d) for d in dists]
            for mod, dists in metadata.packages_distributions().items()}


def room_of(rel: str) -> frozenset[str] | None:
    if rel.startswith(EVERYWHERE) or ("/" not in rel and rel in EVERYWHERE):
        return None
    for prefix, extras in ROOMS:
        if rel.startswith(prefix):
            return extras
    raise AssertionError(f"{rel}: no room in tests/test_packaging.py ROOMS; say which extra "
                         "its users install")


def test_every_import_is_declared_by_the_extra_of_its_room():
    owners = module_distributions()
    everything = declared(frozenset(project()["optional-dependencies"]))
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        extras = room_of(rel)
        allowed = everything if extras is None else declared(extras)
        for module in sorted(third_party_imports(path)):
            dists = owners.get(module)
            if not dists:
                problems.append(f"{rel}: imports {module!r}, which no installed distribution "
                                "provides")
            elif not set(dists) & allowed:
                where = "any extra" if extras is None else f"extras {sorted(extras) or ['base']}"
                problems.append(f"{rel}: imports {module!r} ({', '.join(dists)}), "
                                f"not declared in {where}")
    assert not problems, "\n".join(problems)


def test_the_room_table_can_fail():
    """The check above really looks: a lab-only import in an agent module is refused."""
    agent = declared(frozenset({"agent"}))
    assert "cryptography" not in agent and "pandas" not in agent
    assert {"icmplib", "scapy", "asn1crypto", "click", "msgspec"} <= agent
    assert "pyarrow" in declared(frozenset({"collector"}))


def closure(names: set[str]) -> set[str]:
    """The installed distributions these need, following their requirements here."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


BLOCKER = r"""
import importlib.abc, json, sys
blocked = set(json.loads(sys.argv[1]))
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name}: not part of netvantage[agent]")
        return None
sys.meta_path.insert(0, Refuse())
from click.testing import CliRunner
from netvantage.cli import cli
import netvantage.agent, netvantage.agent.run, netvantage.agent.upload
import netvantage.measure.ping, netvantage.measure.tcp, netvantage.measure.trace
import netvantage.measure.mail
runner = CliRunner()
for args in (["--help"], ["measure", "--help"], ["measure", "tcp", "127.0.0.1:9", "--attempts", "1",
             "--timeout", "1"], ["agent", "run", "--help"], ["schema", "--help"]):
    result = runner.invoke(cli, args)
    if result.exit_code != 0:
        print(args, result.output, repr(result.exception), file=sys.stderr)
        sys.exit(1)
    if args[1:2] == ["tcp"]:
        record = json.loads(result.output.splitlines()[0])
        assert record["kind"] == "tcp", record
print("agent ok")
"""


def test_the_agent_runs_with_only_its_extra():
    allowed = closure(declared(frozenset({"agent"}))) | {"netvantage"}
    blocked = sorted({mod for mod, dists in module_distributions().items()
                      if not set(dists) & allowed and re.fullmatch(r"\w+", mod)})
    assert "pandas" in blocked and "cryptography" in blocked and "starlette" in blocked
    done = subprocess.run([sys.executable, "-c", BLOCKER, json.dumps(blocked)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "agent ok" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("extra", ["agent", "collector", "analysis", "lab", "notebooks", "all",
                                   "dev"])
def test_the_users_extras_exist(extra):
    assert extra in project()["optional-dependencies"]
    assert declared(frozenset({extra}))
