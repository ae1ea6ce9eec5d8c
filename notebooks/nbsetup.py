"""What every notebook here shares: the sample campaign's files, the moment the lab degraded
a link in it, and how figures and tables are shown.

Each notebook imports what it uses in its setup cell::

    from nbsetup import DEGRADED_AT, LOCATIONS, SAMPLE, show

It is found because a notebook runs with ``notebooks/`` as its working directory: Jupyter
starts the kernel in the notebook's folder, and ``render.py`` (so ``make notebooks`` and
``tests/test_notebooks.py``) does the same. Nothing here touches ``sys.path``.

Importing this module, once per kernel, also

* makes matplotlib draw off-screen (the Agg backend): no window opens, and a figure looks
  the same on a laptop, a server and in a test; ``show(fig)`` puts it in the notebook;
* sets pandas' display options: three significant digits below 10 (ratios, p-values), one
  decimal above, and rows up to 160 characters wide.

The paths are found from this file, not from the working directory, so they hold wherever
the module is imported from.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, display
from matplotlib.figure import Figure

__all__ = ["DEGRADED_AT", "LOCATIONS", "META", "ROOT", "SAMPLE", "naive", "show"]

# The repository's root: this file is notebooks/nbsetup.py.
ROOT = Path(__file__).resolve().parent.parent
# The bundled campaign, recorded in the lab, and where its regions and data centres are.
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
LOCATIONS = ROOT / "data" / "locations" / "lab.csv"
# How the campaign was recorded (the lab's topology, the degradation it applied).
META = json.loads(SAMPLE.with_name("lab-sample.meta.json").read_text(encoding="utf-8"))
# When the lab made the London-Amsterdam link slow and lossy (UTC, recorded with the campaign).
DEGRADED_AT = pd.Timestamp(META["degradation"]["at"])

# Draw off-screen. Switching is fine after pyplot's import (the notebooks import it first)
# as long as no figure is open yet.
matplotlib.use("Agg")

pd.set_option("display.float_format", lambda x: f"{x:.3g}" if abs(x) < 10 else f"{x:,.1f}")
pd.set_option("display.max_colwidth", 160)
pd.set_option("display.width", 160)


def show(fig: Figure) -> None:
    """Show a figure as a PNG in the notebook (Agg draws it; nothing opens a window)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    display(Image(buffer.getvalue()))


def naive(times: pd.Series | pd.Timestamp) -> pd.Series | pd.Timestamp:
    """UTC timestamps (a Series or one) without their zone, for matplotlib's date axis."""
    if isinstance(times, pd.Series):
        return times.dt.tz_convert(None)
    return pd.Timestamp(times).tz_convert(None)
