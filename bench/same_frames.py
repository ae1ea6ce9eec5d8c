"""Whether two source trees load a campaign into identical frames.

Each tree's ``netvantage.analysis.load.load`` runs in its own process (``PYTHONPATH=TREE/src``)
and pickles the frames into a temporary directory; they are then compared frame by frame:
``DataFrame.equals``, the dtypes, each categorical's categories in order, and
``pandas.testing.assert_frame_equal`` with ``check_exact``.  Exit status 0 when every frame
is identical.  ``--ids-as-text`` compares the child frames' ``id`` by its strings (a tree
whose loader holds it as a Categorical of the records' ids against one that holds strings).

    .venv/bin/python bench/same_frames.py OLD_TREE NEW_TREE campaign.jsonl
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

_DUMP = """
import pickle, sys
from netvantage.analysis.load import FRAME_NAMES, load
campaign = load(sys.argv[1])
with open(sys.argv[2], "wb") as fh:
    pickle.dump({name: getattr(campaign, name) for name in FRAME_NAMES}, fh, protocol=5)
"""


def _frames(tree: Path, source: Path, out: Path) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    subprocess.run([sys.executable, "-c", _DUMP, str(source), str(out)], env=env, check=True,
                   stderr=subprocess.DEVNULL)
    with open(out, "rb") as fh:
        frames: dict[str, object] = pickle.load(fh)  # (written just now, by us)
    out.unlink()
    return frames


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("old", type=Path, help="a source tree (holding src/netvantage)")
    parser.add_argument("new", type=Path, help="the other tree")
    parser.add_argument("source", type=Path, help="what load() reads")
    parser.add_argument("--ids-as-text", action="store_true",
                        help="compare the samples', hops' and phases' id as strings")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = _frames(args.old, args.source, Path(tmp) / "old.pkl")
        new = _frames(args.new, args.source, Path(tmp) / "new.pkl")
    if args.ids_as_text:
        for frames in (old, new):
            text = frames["measurements"]["id"].dtype  # type: ignore[index]
            for name in ("samples", "hops", "phases"):
                f = frames[name]
                assert isinstance(f, pd.DataFrame)
                frames[name] = f.assign(id=f["id"].astype(text))
    same_all = True
    for name, a in old.items():
        b = new[name]
        assert isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame)
        same = (a.equals(b) and a.dtypes.equals(b.dtypes)
                and list(a.columns) == list(b.columns))
        for column in a.columns:
            if same and isinstance(a[column].dtype, pd.CategoricalDtype):
                same = list(a[column].cat.categories) == list(b[column].cat.categories)
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        except AssertionError as exc:
            same = False
            print(exc)
        print(f"{name}: {len(a):,} rows, {'identical' if same else 'DIFFERENT'}")
        same_all &= same
    print("all frames identical" if same_all else "frames differ")
    sys.exit(0 if same_all else 1)


if __name__ == "__main__":
    main()
