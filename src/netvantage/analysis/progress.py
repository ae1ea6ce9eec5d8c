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

import multiprocessing
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

__all__ = ["DELAY_S", "Bar", "configure", "enabled", "fork_cpus", "forkable", "note", "quiet",
           "step", "track"]

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

    # tqdm's monitor thread only tunes miniters (these bars are refreshed by their own
    # timer): without it, a step leaves no thread behind when its timer is paused.
    tqdm.monitor_interval = 0
    # A step that counts nothing shows its name and the time elapsed.
    fmt = "{desc}: {elapsed}" if total is None and unit == "it" else None
    bar: Any = tqdm(desc=name, total=total, unit=unit, unit_scale=scale, delay=DELAY_S,
                    file=sys.stderr, leave=True, dynamic_ncols=True, bar_format=fmt)
    timer = _Refresher(bar, name)
    _refreshers.append(timer)
    timer.start()
    try:
        yield bar
    finally:
        _refreshers.remove(timer)
        timer.stop()
        if bar._time() >= bar.start_t + DELAY_S:
            # tqdm's close() ends the line only if update() printed; the timer may have.
            bar.last_print_t = max(bar.last_print_t, bar.start_t + DELAY_S)
        bar.close()


class _Refresher:
    """A step's timer thread: redraws its bar every :data:`_REFRESH_S` once the step has
    run :data:`DELAY_S`; :meth:`stop` ends and joins the thread, :meth:`start` starts a
    new one (after :func:`forkable`, the first redraw when the delay is over)."""

    def __init__(self, bar: Any, name: str) -> None:
        self.bar = bar
        self.name = name
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.done = threading.Event()
        wait = max(0.0, self.bar.start_t + DELAY_S - self.bar._time())
        self.thread = threading.Thread(target=self._run, args=(self.done, wait),
                                       name=f"progress:{self.name}", daemon=True)
        self.thread.start()

    def _run(self, done: threading.Event, wait: float) -> None:
        if done.wait(wait):
            return
        while not done.is_set():
            self.bar.refresh()
            done.wait(_REFRESH_S)

    def stop(self) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None


#: The timers of the steps running now (innermost last).
_refreshers: list[_Refresher] = []


@contextmanager
def forkable() -> Iterator[None]:
    """No progress thread runs inside the block: every step's timer is stopped (joined)
    on entry and started again on exit.

    ``fork`` copies only the calling thread, and a lock another thread held at that
    moment (a bar's, stderr's) would stay locked in the child; a process that forks
    workers checks that it runs alone (``threading.active_count() == 1``).  The bars
    stand still for as long as the block lasts (a fork: milliseconds).
    """
    paused = list(_refreshers)
    for timer in paused:
        timer.stop()
    try:
        yield
    finally:
        for timer in paused:
            timer.start()


def fork_cpus() -> int:
    """How many processes may work at once if this one forks helpers now: the CPUs of its
    affinity mask; 1 when it may not fork (then it works alone, one thing after another).

    Forking is for Linux (elsewhere ``fork`` is unsafe or absent, and spawning would
    pickle the frames), never from a daemon process (a Dask worker's may start no
    children) and only while no other thread runs: ``fork`` copies only the calling
    thread, and a lock another one held (a bar's, see :func:`forkable`) would stay
    locked in the child.  The rule of the analysis' metrics child and the report's
    figure drawers.
    """
    if (sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods()
            or multiprocessing.current_process().daemon or threading.active_count() > 1):
        return 1
    return len(os.sched_getaffinity(0))


def track(iterable: Iterable[T], name: str, *, total: float | None = None,
          unit: str = "it") -> Iterator[T]:
    """``iterable``, counted in a :func:`step` (``total`` defaults to ``len(iterable)``)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with step(name, total=total, unit=unit) as bar:
        for item in iterable:
            yield item
            bar.update(1)
