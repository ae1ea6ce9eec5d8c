"""The notebooks are in sync with their sources, run top to bottom and find what they should.

Each notebook's source is a jupytext percent script, ``notebooks/NN-name.py``, paired with
the ``.ipynb`` beside it, committed without outputs; the two must hold the same cells.
Every script is executed once (cached for the module) through ``notebooks/render.py``
(nbclient, in an IPython kernel of *this* interpreter, with ``notebooks/`` as the working
directory and a timeout per cell), with a first cell added in memory that reports the
kernel's interpreter. A notebook passes when no cell errs; each one is also held to its key
result, read from its executed outputs, and written as HTML as ``make notebooks`` does.
What the notebooks share (the sample's paths, ``show``, display options) lives once, in
``notebooks/nbsetup.py``, which each imports from its working directory.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import jupytext
import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NAMES = ["01-explore-campaign", "02-rank-data-centres", "03-investigate-flagged-region",
         "04-placement"]
PAIRING = "ipynb,py:percent"
PROBE = "KERNEL-PYTHON"


def _load_render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notebooks_render", NOTEBOOK_DIR / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render()


@dataclass
class Run:
    nb: nbformat.NotebookNode
    error: CellExecutionError | None

    def stdout(self) -> str:
        return "".join(out.get("text", "") for cell in self.code_cells()
                       for out in cell.get("outputs", [])
                       if out.get("output_type") == "stream" and out.get("name") == "stdout")

    def errors(self) -> list[str]:
        return [f"cell {cell.get('id')}: {out.get('ename')}: {out.get('evalue')}"
                for cell in self.code_cells() for out in cell.get("outputs", [])
                if out.get("output_type") == "error"]

    def figures(self) -> int:
        return sum("image/png" in out.get("data", {}) for cell in self.code_cells()
                   for out in cell.get("outputs", []))

    def code_cells(self) -> list[nbformat.NotebookNode]:
        return [cell for cell in self.nb.cells if cell.cell_type == "code"]


def differences(source: nbformat.NotebookNode, paired: nbformat.NotebookNode) -> list[str]:
    """How the cells of ``paired`` differ from those of ``source`` (type and text)."""
    found = []
    for index, (a, b) in enumerate(zip(source.cells, paired.cells, strict=False), start=1):
        if (a.cell_type, a.source) != (b.cell_type, b.source):
            first = (a.source.splitlines() or [""])[0]
            found.append(f"cell {index} ({a.cell_type}, {first[:60]!r}) differs")
    if len(source.cells) != len(paired.cells):
        found.append(f"{len(source.cells)} cells in the script, {len(paired.cells)} in the .ipynb")
    return found


@pytest.fixture(scope="module")
def executed() -> Callable[[str], Run]:
    """``executed(name)``: the notebook's percent script, run once in this module."""
    runs: dict[str, Run] = {}

    def run(name: str) -> Run:
        if name not in runs:
            nb = render.read(NOTEBOOK_DIR / f"{name}.py")
            probe = nbformat.v4.new_code_cell(
                f"import sys\nprint({PROBE!r}, sys.prefix, sys.executable, sep='|')")
            probe["id"] = "test-kernel-probe"
            nb.cells.insert(0, probe)
            error = None
            try:
                render.execute(nb)
            except CellExecutionError as exc:
                error = exc
            runs[name] = Run(nb, error)
        return runs[name]

    return run


def test_there_are_the_four_notebooks_each_a_script_and_an_ipynb() -> None:
    assert [p.stem for p in render.notebooks()] == NAMES
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == NAMES
    assert not (NOTEBOOK_DIR / "build.py").exists()


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_is_paired_with_its_script_and_in_sync(name: str) -> None:
    script = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    ipynb = jupytext.read(NOTEBOOK_DIR / f"{name}.ipynb")
    assert script.metadata["jupytext"]["formats"] == PAIRING
    assert ipynb.metadata["jupytext"]["formats"] == PAIRING
    assert script.metadata["kernelspec"]["name"] == "python3"
    assert differences(script, ipynb) == [], (
        f"notebooks/{name}.ipynb is out of step with notebooks/{name}.py: edit the script "
        f"and run `jupytext --sync notebooks/{name}.py`")


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_is_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (name, cell.id)


def test_the_sync_check_sees_an_edit_a_new_cell_and_a_changed_type() -> None:
    script = jupytext.read(NOTEBOOK_DIR / f"{NAMES[0]}.py")
    assert differences(script, copy.deepcopy(script)) == []
    edited = copy.deepcopy(script)
    edited.cells[3].source += "\nprint('edited in Jupyter only')"
    found = differences(script, edited)
    assert len(found) == 1 and found[0].startswith("cell 4 ("), found
    longer = copy.deepcopy(script)
    longer.cells.append(nbformat.v4.new_markdown_cell("one more"))
    assert differences(script, longer) == [
        f"{len(script.cells)} cells in the script, {len(script.cells) + 1} in the .ipynb"]
    retyped = copy.deepcopy(script)
    retyped.cells[0] = nbformat.v4.new_code_cell(script.cells[0].source)
    assert len(differences(script, retyped)) == 1


def test_the_notebooks_take_their_shared_setup_from_nbsetup(tmp_path: Path) -> None:
    for name in NAMES:
        source = (NOTEBOOK_DIR / f"{name}.py").read_text(encoding="utf-8")
        assert re.search(r"^from nbsetup import .*\bSAMPLE\b", source, re.M), name
        copied = re.findall(r"^(?:def (?:show|naive)\b|(?:ROOT|SAMPLE|DEGRADED_AT) =|pd\.set_opt)",
                            source, re.M)
        assert copied == [], f"{name} repeats what nbsetup.py holds: {copied}"
    # Its paths do not depend on the working directory; importing it chooses Agg.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import nbsetup, matplotlib; "
            "print(nbsetup.SAMPLE, nbsetup.DEGRADED_AT.isoformat(), matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", code, str(NOTEBOOK_DIR)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sample, degraded_at, backend = done.stdout.split()
    assert sample == str(ROOT / "data" / "campaigns" / "lab-sample.jsonl")
    meta = json.loads((ROOT / "data" / "campaigns" / "lab-sample.meta.json").read_text())
    assert degraded_at == meta["degradation"]["at"]
    assert backend.lower() == "agg"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_without_errors(executed: Callable[[str], Run], name: str) -> None:
    run = executed(name)
    assert run.error is None, f"{name} failed:\n{run.error}"
    assert run.errors() == []
    probe = next(line for line in run.stdout().splitlines() if line.startswith(PROBE))
    _, prefix, executable = probe.split("|")
    assert os.path.abspath(prefix) == os.path.abspath(sys.prefix), (
        f"{name} ran in {executable}, not this interpreter ({sys.executable})")


@pytest.mark.parametrize("name", NAMES)
def test_html_page_has_every_output_and_loads_nothing(executed: Callable[[str], Run],
                                                      name: str) -> None:
    run = executed(name)
    page = render.to_html(run.nb)
    assert run.figures() >= 2
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == run.figures()
    assert re.findall(r"<script[^>]*\ssrc=", page) == []
    assert run.nb.cells[1].source.splitlines()[0].lstrip("# ") in page


def test_render_writes_an_executed_page_per_notebook(tmp_path: Path) -> None:
    out = tmp_path / "html"
    done = subprocess.run([sys.executable, str(NOTEBOOK_DIR / "render.py"), "--out", str(out),
                           "03-investigate-flagged-region"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in out.iterdir()] == ["03-investigate-flagged-region.html"]
    page = (out / "03-investigate-flagged-region.html").read_text(encoding="utf-8")
    assert "route changes during the campaign: 0" in page
    assert "Traceback" not in page


def test_render_fails_on_an_unknown_notebook(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(NOTEBOOK_DIR / "render.py"), "--out",
                           str(tmp_path), "04-no-such-notebook"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no notebook '04-no-such-notebook'" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_explore_shows_the_london_amsterdam_degradation(executed: Callable[[str], Run]) -> None:
    text = executed("01-explore-campaign").stdout()
    found = re.search(r"GB-LHR → dc-ams, ping: median (\d+) ms before 20:04:15, (\d+) ms after; "
                      r"loss ([\d.]+)% → ([\d.]+)%", text)
    assert found, text
    before, after, loss_before, loss_after = map(float, found.groups())
    assert before < 15 and after > before + 40  # 3 -> 30 ms each way
    assert loss_before == 0 and loss_after > 5


def test_rank_finds_johannesburg_for_the_african_mix(executed: Callable[[str], Run]) -> None:
    text = executed("02-rank-data-centres").stdout()
    assert "winner for the African mix: dc-jnb" in text, text
    assert "winner for the European mix before the degradation: dc-ams" in text, text


def test_investigation_finds_the_lagos_lisbon_segment(executed: Callable[[str], Run]) -> None:
    text = executed("03-investigate-flagged-region").stdout()
    lisbon = "TTL 5, 10.10.255.9 (AS64710 West Coast Cable, Lisbon)"
    assert f"RTT first jumps at {lisbon}" in text, text
    assert f"loss first shows at {lisbon}" in text, text
    assert "route changes during the campaign: 0" in text


def test_placement_finds_the_brute_force_pair(executed: Callable[[str], Run]) -> None:
    text = executed("04-placement").stdout()
    found = re.search(r"best pair for the equal mix: (\S+) \+ (\S+) \(score (\d+)", text)
    assert found, text
    # Independently: every pair of the ranking's costs, each region at its cheaper site,
    # pairs serving every region within the thresholds first (as placement).
    from netvantage import analysis as nva

    campaign = nva.load(str(ROOT / "data" / "campaigns" / "lab-sample.jsonl"))
    bd = nva.rank(campaign.measurements, nva.equal_weights(campaign), n_boot=0).breakdown
    sites = sorted(str(t) for t in bd["target"].unique())
    scored = []
    for i, a in enumerate(sites):
        for b in sites[i + 1:]:
            rows = bd[bd["target"].isin([a, b]) & bd["cost"].notna()]
            strict = rows[rows["meets_thresholds"].astype(bool)].groupby("region")["cost"].min()
            loose = rows.groupby("region")["cost"].min()
            within = len(strict) == bd["region"].nunique()
            scored.append((not within, float((strict if within else loose).mean()), {a, b}))
    best = min(scored, key=lambda x: (x[0], x[1]))
    assert {found.group(1), found.group(2)} == best[2]
    assert int(found.group(3)) == round(best[1])
    assert "relay legs without site-to-site measurements are ESTIMATED" in text
