"""Files written whole or not at all."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replaced_whole(path: Path) -> Iterator[Path]:
    """A temporary name beside *path* to write to; it becomes *path* only on success.

    When the block ends normally the temporary file is renamed over *path*
    (``rename`` within a directory is atomic), so a reader sees the old file or
    the whole new one, never half of it; when the block raises, the temporary
    file is removed and *path* is untouched.  Syncing the data before the rename
    is the writer's part (``fsync`` on its own handle), where durability matters.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
