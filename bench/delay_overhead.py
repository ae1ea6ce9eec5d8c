"""How much the userspace delay element adds on top of the delay it is set to.

Two throw-away namespaces (``nvt-db-*``, 10.232.250.0/24 only, no link to the
root namespace) are joined by one delay link; for each one-way delay of 0, 1,
10 and 40 ms, iputils ``ping -c 50 -i 0.02`` runs across it and we print
min/avg/max/mdev, the overhead of min and avg over the configured 2 × delay,
and the CPU seconds the delay process used meanwhile (``/proc/PID/stat``).
Both wake-up strategies of the element are measured (``--timer timerfd``, the
default, and ``--timer poll``), plus a plain veth pair as the kernel's own
floor.  Then the element's real-time scheduling is put to the test: with
``--load N`` CPU-bound processes running beside it (3 by default, 0 skips this
part), ``ping -c 500 -i 0.01`` crosses a 40 ms link once with the element at
normal priority (``--rt-priority 0``) and once at its default ``SCHED_FIFO``,
and the RTT percentiles are printed side by side.  Needs root; removes
everything it made, even when interrupted.

    .venv/bin/python bench/delay_overhead.py [--count 50] [--timer timerfd|poll|both]
                                             [--load 3]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from netvantage.lab.delay import LinkSpec, set_link, write_spec

PREFIX = "nvt-db-"
NS_A, NS_B = PREFIX + "a", PREFIX + "b"
ADDR_A, ADDR_B = "10.232.250.1", "10.232.250.2"
DELAYS_MS = (0.0, 1.0, 10.0, 40.0)
_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_TIME = re.compile(r"time=([\d.]+)")
_TICK = os.sysconf("SC_CLK_TCK")


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout


def cleanup() -> None:
    for line in sh("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def make_namespaces() -> None:
    for ns in (NS_A, NS_B):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def address(dev_a: str, dev_b: str) -> None:
    for ns, dev, addr in ((NS_A, dev_a, ADDR_A), (NS_B, dev_b, ADDR_B)):
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)


def ping(count: int) -> tuple[float, float, float, float]:
    out = sh("ip", "netns", "exec", NS_A, "ping", "-q", "-n", "-c", str(count), "-i", "0.02",
             "-W", "2", ADDR_B)
    m = _RTT.search(out)
    if m is None:
        raise RuntimeError(f"no RTT summary in ping output:\n{out}")
    mn, avg, mx, mdev = (float(x) for x in m.groups())
    return mn, avg, mx, mdev


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def row(label: str, rtt: tuple[float, float, float, float], base: float, cpu: str) -> None:
    mn, avg, mx, mdev = rtt
    print(f"{label:>16} {mn:8.3f} {avg:8.3f} {mx:8.3f} {mdev:7.3f} "
          f"{mn - base:+8.3f} {avg - base:+8.3f} {cpu:>8}")


def veth_floor(count: int) -> None:
    sh("ip", "link", "add", "vb-a", "netns", NS_A, "type", "veth", "peer", "name", "vb-b",
       "netns", NS_B)
    try:
        address("vb-a", "vb-b")
        row("veth (no delay)", ping(count), 0.0, "-")
    finally:
        subprocess.run(["ip", "-n", NS_A, "link", "del", "vb-a"], check=False,
                       capture_output=True)


@contextlib.contextmanager
def element(workdir: Path, *options: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A delay process with one link between the namespaces, addressed and warm."""
    spec, control = workdir / "spec.json", workdir / "control.sock"
    write_spec([LinkSpec("bench", NS_A, "db-a", NS_B, "db-b", delay_ms=0.0)], spec)
    log = workdir / "element.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "netvantage.lab.delay", "--spec", str(spec),
             "--control", str(control), *options],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"delay process did not start (exit {proc.wait(10)}): "
                               f"{log.read_text().strip()}")
        if "refused" in log.read_text():
            print(f"  note: {log.read_text().strip()}")
        address("db-a", "db-b")
        ping(3)  # neighbour-free TUN, but let the first packets warm the path
        yield proc, control
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def run_element(timer: str, count: int, workdir: Path, spin_us: int | None) -> None:
    spin = [] if spin_us is None else ["--spin-us", str(spin_us)]
    with element(workdir, "--timer", timer, *spin) as (proc, control):
        for delay in DELAYS_MS:
            set_link(control, "bench", delay_ms=delay, jitter_ms=0.0)
            c0 = cpu_s(proc.pid)
            t0 = time.monotonic()
            rtt = ping(count)
            cpu = cpu_s(proc.pid) - c0
            wall = time.monotonic() - t0
            row(f"{timer} {delay:g} ms", rtt, 2 * delay, f"{cpu:.2f}s/{100 * cpu / wall:.0f}%")


def _burn() -> None:
    while True:
        sum(range(10_000))


def under_load(load: int, workdir: Path) -> None:
    """RTT percentiles across a 40 ms link with *load* CPU hogs, normal vs SCHED_FIFO."""
    delay, count = 40.0, 500
    print(f"\nping -c {count} -i 0.01 across one {delay:g} ms link, {load} CPU-bound "
          f"processes beside it ({os.cpu_count()} CPUs); RTT percentiles (ms)")
    print(f"{'scheduling':>16} {'min':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    for priority in (0, 10):
        with element(workdir, "--rt-priority", str(priority)) as (_proc, control):
            set_link(control, "bench", delay_ms=delay, jitter_ms=0.0)
            hogs = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(load)]
            for hog in hogs:
                hog.start()
            try:
                time.sleep(0.5)
                out = sh("ip", "netns", "exec", NS_A, "ping", "-n", "-c", str(count), "-i",
                         "0.01", "-W", "2", ADDR_B)
            finally:
                for hog in hogs:
                    hog.terminate()
                for hog in hogs:
                    hog.join(timeout=10)
        rtts = sorted(float(m) for m in _TIME.findall(out))
        if len(rtts) < count // 2:
            raise RuntimeError(f"only {len(rtts)} of {count} replies:\n{out[-500:]}")
        label = f"SCHED_FIFO {priority}" if priority else "normal"
        pct = [rtts[min(len(rtts) - 1, int(q * len(rtts)))] for q in (0.5, 0.9, 0.99)]
        print(f"{label:>16} {rtts[0]:8.3f} " + " ".join(f"{v:8.3f}" for v in pct)
              + f" {rtts[-1]:8.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--timer", choices=("timerfd", "poll", "both"), default="both")
    parser.add_argument("--spin-us", type=int, default=None,
                        help="passed to the delay process (default: its own)")
    parser.add_argument("--load", type=int, default=3,
                        help="CPU-bound processes for the scheduling comparison (0: skip it)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    timers = ("timerfd", "poll") if args.timer == "both" else (args.timer,)
    cleanup()
    try:
        make_namespaces()
        print(f"ping -c {args.count} -i 0.02 across one link; overhead = RTT - 2 x delay (ms)")
        print(f"{'one-way delay':>16} {'min':>8} {'avg':>8} {'max':>8} {'mdev':>7} "
              f"{'ovh.min':>8} {'ovh.avg':>8} {'CPU':>8}")
        veth_floor(args.count)
        with tempfile.TemporaryDirectory(prefix="nvt-delay-bench-") as tmp:
            for timer in timers:
                run_element(timer, args.count, Path(tmp), args.spin_us)
            if args.load > 0:
                under_load(args.load, Path(tmp))
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
