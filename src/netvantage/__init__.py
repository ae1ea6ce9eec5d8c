"""netvantage: how every client region reaches every candidate data centre."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
