"""The importers' places agree with the analysis without loading it (no pandas at import time)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from netvantage.analysis import frames, geo
from netvantage.importers import places


def test_locations_columns_are_the_analysis_ones() -> None:
    assert places.LOCATION_COLUMNS == frames.LOCATION_COLUMNS


def test_continents_are_the_analysis_ones() -> None:
    table = places._continents()
    assert len(table) > 240 and table["NA"] == "AF" and table["ZA"] == "AF"
    codes = sorted(table)
    assert [places._continent(c.lower()) for c in codes] == geo.continent_of(codes)
    assert places._continent("XX") is None


def test_great_circle_is_the_analysis_one() -> None:
    assert places.EARTH_RADIUS_KM == geo.EARTH_RADIUS_KM
    for a, b in [((-15.4, 28.3), (52.3, 4.8)), ((0.0, 0.0), (0.0, 180.0)),
                 ((51.5, -0.1), (51.5, -0.1)), ((-33.9, 18.4), (35.7, 139.7))]:
        assert math.isclose(places._great_circle_km(*a, *b), geo.great_circle_km(*a, *b),
                            rel_tol=1e-12, abs_tol=1e-9)


def test_importing_and_resolving_loads_no_analysis(tmp_path: Path) -> None:
    code = ("import sys, os\n"
            "from netvantage.importers import atlas, matrix, globalping, scamper, places\n"
            "p = [places.from_iata('LUN'), places.from_country('ZA'),\n"
            "     places.from_city('Lusaka', 'ZM'), places.from_coordinates(-26.1, 28.2)]\n"
            "assert all(x is not None and x.continent == 'AF' for x in p), p\n"
            "places.write_locations(p, os.path.join(sys.argv[1], 'l.csv'))\n"
            "bad = [m for m in ('pandas', 'numpy', 'netvantage.analysis') if m in sys.modules]\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    assert (tmp_path / "l.csv").read_text().startswith("name,")
