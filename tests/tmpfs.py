"""A small tmpfs of its own for a test: a disk that really fills up, removed afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from netns import missing


@contextmanager
def small_tmpfs(size_kib: int) -> Iterator[Path]:
    """Mount a ``size_kib`` KiB tmpfs on a fresh temporary folder; unmount and remove it after.

    Needs root (``mount``): skips otherwise, and fails under ``CI=true``.
    """
    if os.geteuid() != 0 or shutil.which("mount") is None:
        missing("needs root and mount(8) for a small tmpfs", "the full-disk tests")
    where = Path(tempfile.mkdtemp(prefix="nvt-tmpfs-"))
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs",
                        str(where)], check=True, capture_output=True, timeout=30)
        try:
            yield where
        finally:
            subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True,
                           timeout=30)
    finally:
        where.rmdir()


def fill(where: Path, leave_bytes: int) -> Path:
    """A filler file that leaves about ``leave_bytes`` free on ``where``'s file system."""
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    filler = where / "filler"
    with filler.open("ab") as f:
        f.write(b"\0" * max(0, free - leave_bytes))
    return filler
