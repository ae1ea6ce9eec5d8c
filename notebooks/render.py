"""Execute the notebooks and write each one, with its outputs, as an HTML page.

    python notebooks/render.py                         # all of them, into out/notebooks/
    python notebooks/render.py --out DIR 03-investigate-flagged-region

The percent scripts (``notebooks/NN-name.py``) are the notebooks' source; jupytext pairs
each with the ``.ipynb`` beside it, which is committed without outputs. Every notebook runs
top to bottom in an IPython kernel of *this* interpreter (not whatever ``python3`` kernel a
user has installed elsewhere), with ``notebooks/`` as its working directory, and is written
as ``DIR/NN-name.html`` by nbconvert's HTMLExporter. The pages load nothing from the
network: the figures are inline PNGs and the template's CDN scripts (MathJax, require.js,
Mermaid, none of which these notebooks use) are left out.

A notebook that fails is still written, up to and including the failing cell and its
traceback, and the command exits 1 once every notebook has been tried.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import jupytext
import nbclient
import nbformat
from jinja2 import DictLoader
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

__all__ = ["NOTEBOOK_DIR", "execute", "main", "notebooks", "read", "to_html"]

NOTEBOOK_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = NOTEBOOK_DIR.parent / "out" / "notebooks"
CELL_TIMEOUT_S = 120

# The lab template without its <script src=...> tags for MathJax, require.js and Mermaid.
_OFFLINE = DictLoader({"offline.html.j2": """{%- extends "lab/index.html.j2" -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""})


def notebooks() -> list[Path]:
    """The notebooks' percent scripts, in order (``NN-name.py``; this script is not one)."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]-*.py"))


def read(path: Path) -> nbformat.NotebookNode:
    """The notebook of a percent script (or of an .ipynb), without outputs."""
    return jupytext.read(path)


def _kernel(connection_file: Path) -> KernelManager:
    # With no kernel directories to search, "python3" can only be ipykernel's built-in
    # spec, which starts sys.executable: a user-wide python3 kernelspec cannot win.
    # The connection file goes where the caller removes it (left to itself, jupyter_client
    # writes a temporary file that its shutdown leaves behind).
    return KernelManager(kernel_name="python3", connection_file=str(connection_file),
                         kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


def execute(nb: nbformat.NotebookNode, *, timeout: int = CELL_TIMEOUT_S) -> None:
    """Run ``nb`` top to bottom in place, from ``notebooks/``.

    Raises nbclient's CellExecutionError at the first cell that fails; ``nb`` then holds
    the outputs up to and including that cell's traceback.
    """
    with tempfile.TemporaryDirectory(prefix="nvt-kernel-") as runtime:
        client = nbclient.NotebookClient(nb, km=_kernel(Path(runtime) / "kernel.json"),
                                         timeout=timeout,
                                         resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
        client.execute()


def to_html(nb: nbformat.NotebookNode) -> str:
    """The notebook as one self-contained HTML page, with its outputs."""
    exporter = HTMLExporter(extra_loaders=[_OFFLINE], template_file="offline.html.j2")
    body, _ = exporter.from_notebook_node(nb)
    return body


def _resolve(name: str) -> Path:
    """A notebook named by its stem (``02-rank-data-centres``) or a path to its .py/.ipynb."""
    path = Path(name)
    if path.suffix in (".py", ".ipynb") and path.exists():
        return path.with_suffix(".py")
    matches = [p for p in notebooks() if name in (p.stem, p.name)]
    if not matches:
        known = ", ".join(p.stem for p in notebooks())
        raise SystemExit(f"render.py: no notebook {name!r} (known: {known})")
    return matches[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NOTEBOOK",
                        help="notebooks to render, by name (01-explore-campaign) or path; "
                             "default: all")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for the HTML pages (default: out/notebooks)")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S,
                        help=f"seconds allowed per cell (default: {CELL_TIMEOUT_S})")
    args = parser.parse_args(argv)
    paths = [_resolve(name) for name in args.names] or notebooks()
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in paths:
        nb = read(path)
        try:
            execute(nb, timeout=args.timeout)
        except CellExecutionError as exc:
            failed.append(path.stem)
            print(f"{path.stem}: a cell failed:\n{exc}", file=sys.stderr)
        page = args.out / f"{path.stem}.html"
        page.write_text(to_html(nb), encoding="utf-8")
        print(f"wrote {page}")
    if failed:
        print(f"failed: {', '.join(failed)} (their pages show the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
