"""The collector: the ingest service agents upload to, and the store behind it.

* :mod:`.store`  – the store interface, the embedded SQLite store (WAL mode), agent
  tokens and health;
* :mod:`.pgstore` – the same store in PostgreSQL (several collectors, one database);
* :mod:`.app`    – the HTTP API (Starlette), see its docstring for the contract;
* :mod:`.serve`  – running it under uvicorn (foreground or in a thread);
* :mod:`.export` – the store as Parquet, JSON Lines or CSV.

Nothing is imported here, so that ``netvantage export`` needs neither
Starlette nor uvicorn, and the collector never loads pyarrow.
"""

from __future__ import annotations

__all__: list[str] = []
