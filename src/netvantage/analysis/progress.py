"""Progress on stderr for the analysis steps that take more than a couple of seconds.

One switch for the whole process (:func:`configure`, set once by the CLI from
``--quiet`` / ``--progress``) and two ways to report:

* :func:`step` — a context manager around one step, with a bar when the step
  knows its total (``total=``) and a running count and rate otherwise::

      with progress.step("loading", unit="record") as bar:
          for chunk in chunks:
              ...
              bar.update(len(chunk))

  A step that never calls ``update`` still shows its name and the time elapsed.
* :func:`track` — the same around an iterable (``for x in progress.track(xs, "figures")``).

Nothing is drawn for a step shorter than :data:`DELAY_S` (tqdm's ``delay``), so
a quick run prints nothing.  By default bars are drawn only when stderr is a
terminal; ``configure(True)`` (``--progress``) draws them anyway (a log file then
gets tqdm's carriage-return updates), ``configure(False)`` (``--quiet``) never.
:func:`note` prints a one-line message (the report's "loading…", "wrote …")
unless quiet, terminal or not.

Built on tqdm (rates, ETA, terminal width); tqdm alone does not redraw a bar
that is not updated, so a step's bar is refreshed once a second by a daemon
timer thread until the step ends — the only thing written here by hand.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

__all__ = ["DELAY_S", "Bar", "configure", "enabled", "note", "quiet", "step", "track"]

T = TypeVar("T")

#: Steps shorter than this (seconds) draw nothing.
DELAY_S = 2.0
_REFRESH_S = 1.0

# None: bars when stderr is a terminal; True: always; False: never.
_bars: bool | None = None
_quiet = False


class Bar(Protocol):
    """What a step yields: ``update`` counts work done, ``set_postfix_str`` says what."""

    def update(self, n: float | None = 1) -> bool | None: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...


class _NoBar:
    """The bar of a disabled step: every call does nothing."""

    def update(self, n: float | None = 1) -> bool | None:
        return None

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        return None


def configure(bars: bool | None = None, *, quiet: bool = False) -> None:
    """Set the process-wide switch: ``quiet`` silences everything (bars and notes);
    ``bars`` True/False forces bars on/off, None draws them when stderr is a terminal."""
    global _bars, _quiet
    _quiet = quiet
    _bars = False if quiet else bars


def quiet() -> bool:
    """True when ``--quiet`` was given (nothing goes to stderr but errors)."""
    return _quiet


def enabled() -> bool:
    """True when steps draw bars (after the delay)."""
    if _bars is not None:
        return _bars
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def note(message: str) -> None:
    """One line on stderr (``netvantage: message``) unless quiet."""
    if not _quiet:
        print(f"netvantage: {message}", file=sys.stderr, flush=True)


@contextmanager
def step(name: str, *, total: float | None = None, unit: str = "it",
         scale: bool = False) -> Iterator[Bar]:
    """A step named ``name``; yields a bar to ``update`` (a no-op one when disabled).

    ``unit`` names what is counted ("record", "pair"); ``scale`` prints large
    counts as 1.2M.  The bar is drawn once the step has run :data:`DELAY_S`.
    """
    if not enabled():
        yield _NoBar()
        return
    from tqdm import tqdm  # type: ignore[import-untyped]

    # A step that counts nothing shows its name and the time elapsed.
    fmt = "{desc}: {elapsed}" if total is None and unit == "it" else None
    bar: Any = tqdm(desc=name, total=total, unit=unit, unit_scale=scale, delay=DELAY_S,
                    file=sys.stderr, leave=True, dynamic_ncols=True, bar_format=fmt)
    done = threading.Event()

    def refresh() -> None:
        if done.wait(DELAY_S):
            return
        while not done.is_set():
            bar.refresh()
            done.wait(_REFRESH_S)

    timer = threading.Thread(target=refresh, name=f"progress:{name}", daemon=True)
    timer.start()
    try:
        yield bar
    finally:
        done.set()
        timer.join()
        if bar._time() >= bar.start_t + DELAY_S:
            # tqdm's close() ends the line only if update() printed; the timer may have.
            bar.last_print_t = max(bar.last_print_t, bar.start_t + DELAY_S)
        bar.close()


def track(iterable: Iterable[T], name: str, *, total: float | None = None,
          unit: str = "it") -> Iterator[T]:
    """``iterable``, counted in a :func:`step` (``total`` defaults to ``len(iterable)``)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with step(name, total=total, unit=unit) as bar:
        for item in iterable:
            yield item
            bar.update(1)
