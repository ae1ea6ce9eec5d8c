"""The notebooks run top to bottom on the sample campaign and find what they should.

Every ``notebooks/*.ipynb`` is executed once (cached for the module) with nbclient, in
the ``python3`` kernel of *this* interpreter (the venv's ipykernel), with ``notebooks/``
as the working directory, a timeout per cell, and a first cell added in memory that
reports the kernel's interpreter. A notebook passes when no cell errs; each one is also
held to its key result, read from its executed outputs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "python3"
CELL_TIMEOUT_S = 120
BUDGET_S = 90.0  # all notebooks together, kernel start-ups included
PROBE = "KERNEL-PYTHON"

# argv[0] values jupyter_client replaces with the launching interpreter (sys.executable).
_LAUNCHER_PYTHONS = {"python", f"python{sys.version_info[0]}",
                     f"python{sys.version_info[0]}.{sys.version_info[1]}"}


@dataclass
class Run:
    nb: nbformat.NotebookNode
    seconds: float
    error: CellExecutionError | None

    def stdout(self) -> str:
        return "".join(out.get("text", "") for cell in self.nb.cells if cell.cell_type == "code"
                       for out in cell.get("outputs", [])
                       if out.get("output_type") == "stream" and out.get("name") == "stdout")

    def errors(self) -> list[str]:
        return [f"cell {cell.get('id')}: {out.get('ename')}: {out.get('evalue')}"
                for cell in self.nb.cells if cell.cell_type == "code"
                for out in cell.get("outputs", []) if out.get("output_type") == "error"]


def _ours(spec_dir: Path) -> bool:
    """Whether the kernelspec in ``spec_dir`` starts this interpreter."""
    try:
        argv = json.loads((spec_dir / "kernel.json").read_text())["argv"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(argv) and (argv[0] in _LAUNCHER_PYTHONS
                           or os.path.abspath(argv[0]) == os.path.abspath(sys.executable))


@pytest.fixture(scope="module")
def kernel() -> Iterator[str]:
    """The kernel name, its spec this interpreter's (installed into sys.prefix if need be).

    Idempotent: the spec is installed only when missing or pointing at another Python, and
    ``JUPYTER_PATH`` puts sys.prefix's kernels first so a user-wide ``python3`` cannot win.
    """
    data_dir = Path(sys.prefix) / "share" / "jupyter"
    spec_dir = data_dir / "kernels" / KERNEL
    if not _ours(spec_dir):
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix",
                        "--name", KERNEL], check=True, capture_output=True, timeout=60)
    with pytest.MonkeyPatch.context() as mp:
        paths = [str(data_dir), *filter(None, [os.environ.get("JUPYTER_PATH")])]
        mp.setenv("JUPYTER_PATH", os.pathsep.join(paths))
        try:
            spec = KernelSpecManager().get_kernel_spec(KERNEL)
        except NoSuchKernel:
            pytest.fail(f"no {KERNEL} kernelspec even after installing one in {spec_dir}")
        argv0 = spec.argv[0]
        assert argv0 in _LAUNCHER_PYTHONS or os.path.abspath(argv0) == os.path.abspath(
            sys.executable), f"kernel {KERNEL} would start {argv0}, not {sys.executable}"
        yield KERNEL


@pytest.fixture(scope="module")
def executed(kernel: str) -> Callable[[str], Run]:
    """``executed(name)``: the notebook run once in this module, with its duration."""
    runs: dict[str, Run] = {}

    def run(name: str) -> Run:
        if name not in runs:
            nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
            probe = nbformat.v4.new_code_cell(
                f"import sys\nprint({PROBE!r}, sys.prefix, sys.executable, sep='|')")
            probe["id"] = "test-kernel-probe"
            nb.cells.insert(0, probe)
            client = nbclient.NotebookClient(
                nb, kernel_name=kernel, timeout=CELL_TIMEOUT_S,
                resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
            start = time.monotonic()
            error = None
            try:
                client.execute()
            except CellExecutionError as exc:
                error = exc
            runs[name] = Run(nb, time.monotonic() - start, error)
        return runs[name]

    return run


def test_there_are_the_three_notebooks() -> None:
    assert NOTEBOOKS == ["01-explore-campaign.ipynb", "02-rank-data-centres.ipynb",
                         "03-investigate-flagged-region.ipynb"]


def test_notebooks_are_built_by_build_py_without_outputs() -> None:
    check = subprocess.run([sys.executable, str(NOTEBOOK_DIR / "build.py"), "--check"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    for name in NOTEBOOKS:
        nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (name, cell.id)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_without_errors(executed: Callable[[str], Run], name: str) -> None:
    run = executed(name)
    assert run.error is None, f"{name} failed:\n{run.error}"
    assert run.errors() == []
    probe = next(line for line in run.stdout().splitlines() if line.startswith(PROBE))
    _, prefix, executable = probe.split("|")
    assert os.path.abspath(prefix) == os.path.abspath(sys.prefix), (
        f"{name} ran in {executable}, not this interpreter ({sys.executable})")


def test_notebooks_run_within_the_budget(executed: Callable[[str], Run]) -> None:
    seconds = {name: executed(name).seconds for name in NOTEBOOKS}
    assert sum(seconds.values()) < BUDGET_S, seconds


def test_explore_shows_the_london_amsterdam_degradation(executed: Callable[[str], Run]) -> None:
    text = executed("01-explore-campaign.ipynb").stdout()
    found = re.search(r"GB-LHR → dc-ams, ping: median (\d+) ms before 20:04:15, (\d+) ms after; "
                      r"loss ([\d.]+)% → ([\d.]+)%", text)
    assert found, text
    before, after, loss_before, loss_after = map(float, found.groups())
    assert before < 15 and after > before + 40  # 3 -> 30 ms each way
    assert loss_before == 0 and loss_after > 5


def test_rank_finds_johannesburg_for_the_african_mix(executed: Callable[[str], Run]) -> None:
    text = executed("02-rank-data-centres.ipynb").stdout()
    assert "winner for the African mix: dc-jnb" in text, text
    assert "winner for the European mix before the degradation: dc-ams" in text, text


def test_investigation_finds_the_lagos_lisbon_segment(executed: Callable[[str], Run]) -> None:
    text = executed("03-investigate-flagged-region.ipynb").stdout()
    lisbon = "TTL 5, 10.10.255.9 (AS64710 West Coast Cable, Lisbon)"
    assert f"RTT first jumps at {lisbon}" in text, text
    assert f"loss first shows at {lisbon}" in text, text
    assert "route changes during the campaign: 0" in text
