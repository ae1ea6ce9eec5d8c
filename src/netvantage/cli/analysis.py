"""``netvantage analyse`` and ``netvantage report``: the answer, for a terminal or a page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ._common import (
    CONTEXT,
    EXIT_USAGE,
    die,
    echo_json,
    load_campaign_and_places,
    parse_mixes,
    parse_weights,
    readiness_checks,
)

__all__ = ["analyse_cmd", "analysis_options", "partition_cmd", "report_cmd"]

F = TypeVar("F", bound=Callable[..., Any])


def _progress(quiet: bool, show_progress: bool) -> None:
    """Set the progress switch from --quiet / --progress (see netvantage.analysis.progress)."""
    from ..analysis import progress

    progress.configure(True if show_progress else None, quiet=quiet)


def analysis_options(what: str) -> Callable[[F], F]:
    """The options ``analyse`` and ``report`` share (``what``: the word their help uses for
    the rest of the output)."""
    options = [
        click.option("--weights", help="Client weights, GROUP=W,...: a region, a continent "
                     "(AF EU ...), a country (ZA, or country:NA), or a region glob (ZA-*); a "
                     "group's weight is split equally among its regions [every region equal]."),
        click.option("--mix", "mix", multiple=True, metavar="NAME=GROUP=W,...",
                     help="A named client mix to compare (repeatable): its winner, and where "
                     "the winner flips between it and --weights."),
        click.option("--keep-impossible", is_flag=True, help="Keep pairs whose minimum RTT "
                     "is below light in fibre in the ranking (flagged all the same) "
                     "[left out]."),
        click.option("--window", help="Time window of the history test [a tenth of the "
                     "campaign]."),
        click.option("--gaps", type=click.Choice(["exclude", "skip", "worst", "fail"]),
                     default="exclude", show_default=True, help="Weighted pairs never "
                     "measured: exclude (such a data centre cannot win), skip (score over the "
                     "regions that measured it), worst (a gap costs the region's worst cost), "
                     "fail (refuse)."),
        click.option("--same-city-floor", "same_city_floor", type=float, metavar="MS",
                     help="RTT assumed for an unmeasured pair whose region and data centre "
                     "are in the same city (needs --locations) [none: the pair needs its own "
                     "measurement]."),
        click.option("--compare", is_flag=True, help="DATA are two snapshots, earlier then "
                     f"later: compare them pair by pair (the rest of the {what} is of the "
                     "later)."),
        click.option("--compare-at", metavar="TIME", help="Compare the records before TIME "
                     f"with those after it, pair by pair (the rest of the {what} is of the "
                     "later)."),
        click.option("--episode-min-rise", type=float, default=0.08, show_default=True,
                     help="Smallest rise over the rolling baseline flagged as an episode "
                     "(a ratio)."),
        click.option("--episode-min-windows", type=int, default=3, show_default=True,
                     help="Shortest episode, in windows of the data's cadence."),
        click.option("-q", "--quiet", is_flag=True, help="Nothing on stderr but errors "
                     "(no progress)."),
        click.option("--progress", "show_progress", is_flag=True, help="Progress bars on "
                     "stderr even when it is not a terminal (they are drawn on a terminal "
                     "for any step over 2 s)."),
        click.option("--readiness-fail-on", "readiness_fail_on", default="dnsbl,dkim",
                     show_default=True, metavar="CHECK,...",
                     help="Mail-readiness checks (mailready records) whose failure fails a "
                     "candidate; 'none' switches the threshold off."),
    ]

    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


@click.command("analyse", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage analyse data/campaigns/lab-sample.jsonl --locations data/locations/lab.csv
  netvantage analyse results.db --weights ZM-LUN=0.45,ZA-JNB=0.45,GB-LHR=0.1
  netvantage analyse dataset/ --format json > analysis.json
  netvantage analyse --compare snapshot-2024.jsonl snapshot-2025.jsonl
  netvantage analyse results.db --locations places.csv --weights AF=0.7,EU=0.3 \\
      --mix africa=AF=1 --mix europe=EU=1 --mix even=*=1
  netvantage partition campaign.jsonl -o by-region/
  netvantage analyse --dask local --dask-memory 1GiB by-region/
\b
DATA: JSON Lines file(s), the collector's store, or an exported Parquet dataset.
With --dask: a dataset partitioned by region ('netvantage partition'); the answer is
the ranking and the per-pair table (--weights and --gaps apply; not the rest).""")
@click.argument("data", nargs=-1, required=True)
@click.option("--locations", "locations_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="CSV of regions and data centres (name, role, lat, lon "
              "or iata): enables the physical-bound tests.")
@analysis_options("analysis")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--full", is_flag=True, help="The whole text: every pair, flag, detour and path "
              "change [past a few hundred rows the text keeps a budget and says what it "
              "left out; --format json always has everything].")
@click.option("--dask", "dask", metavar="SCHEDULER|local", help="Run on a Dask cluster: "
              "a scheduler's address (tcp://HOST:8786) or 'local' (worker processes on this "
              "machine). DATA is one dataset written by 'netvantage partition'.")
@click.option("--dask-workers", type=click.IntRange(1), default=2, show_default=True,
              help="Worker processes of --dask local.")
@click.option("--dask-memory", default="2GiB", show_default=True,
              help="Memory limit of each worker of --dask local.")
def analyse_cmd(data: tuple[str, ...], locations_path: Path | None, weights: str | None,
                compare: bool, compare_at: str | None, episode_min_rise: float,
                episode_min_windows: int,
                mix: tuple[str, ...],
                window: str | None, fmt: str, keep_impossible: bool, gaps: str,
                same_city_floor: float | None, quiet: bool, show_progress: bool,
                readiness_fail_on: str, dask: str | None, dask_workers: int,
                dask_memory: str, full: bool) -> None:
    """Rank the data centres for the client mix and flag degraded regions, with evidence."""
    parsed = parse_weights(weights)  # a typo fails before pandas and the data are loaded
    mixes = parse_mixes(mix)
    fail_on = readiness_checks(readiness_fail_on)
    _progress(quiet, show_progress)
    if dask is not None:
        unsupported = [name for name, given in (
            ("--locations", locations_path), ("--mix", mix), ("--compare", compare),
            ("--compare-at", compare_at), ("--window", window),
            ("--same-city-floor", same_city_floor), ("--keep-impossible", keep_impossible))
            if given]
        if unsupported or len(data) != 1:
            die(f"--dask takes one DATA (a dataset partitioned by region) and not "
                f"{', '.join(unsupported) or 'several DATA'} (yet)", EXIT_USAGE)
        _analyse_on_cluster(data[0], dask, parsed, gaps, fmt, dask_workers, dask_memory,
                            fail_on)
        return
    from ..analysis import progress
    from ..analysis.codes import give_back
    from ..analysis.episodes import snapshots
    from ..analysis.summary import analyse

    earlier = None
    if compare:
        if len(data) != 2 or compare_at:
            die("--compare takes two DATA (the earlier snapshot, then the later) and no "
                "--compare-at", EXIT_USAGE)
        earlier, _ = load_campaign_and_places(data[:1], None)
        data = data[1:]
    campaign, places = load_campaign_and_places(data, locations_path)
    try:
        campaign, earlier = snapshots(campaign, earlier, compare_at)
    except ValueError as exc:
        die(f"--compare-at: {exc}", EXIT_USAGE)
    try:
        with progress.step("analysing"):
            result = analyse(campaign, compare=earlier, episode_min_rise=episode_min_rise,
                             episode_min_windows=episode_min_windows,
                             keep_impossible=keep_impossible, gaps=gaps,
                             same_city_floor_ms=same_city_floor,
                             weights=parsed, locations=places, window=window, mixes=mixes,
                             readiness_fail_on=fail_on)
    except ValueError as exc:
        if gaps != "fail":
            raise
        die(str(exc), EXIT_USAGE)
    # The answer holds none of the records: their frames (some 600 MiB at 1M records) go
    # back to the system before the output is built.
    del campaign, earlier
    give_back()
    if fmt == "json":
        echo_json(result.to_dict())
    else:
        click.echo(result.to_text(full=full))


def _analyse_on_cluster(data: str, address: str, weights: dict[str, float] | None, gaps: str,
                        fmt: str, workers: int, memory: str,
                        readiness_fail_on: tuple[str, ...]) -> None:
    from ..analysis.cluster import ClusterError, analyse_on_cluster

    try:
        result = analyse_on_cluster(data, address, weights=weights, gaps=gaps,
                                    workers=workers, memory=memory,
                                    readiness_fail_on=readiness_fail_on)
    except ClusterError as exc:
        die(str(exc), EXIT_USAGE)
    if fmt == "json":
        echo_json(result.to_dict())
    else:
        click.echo(result.to_text())


@click.command("partition", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage partition campaign.jsonl -o by-region/
  netvantage partition results.db dataset/ -o by-region/
\b
DATA: JSON Lines file(s), the collector's store, or an exported Parquet dataset.
The dataset has the columns of 'netvantage export --format parquet' (the body as JSON
text), one directory per region (by-region/region=ZA-JNB/part-N.parquet), so that every
pair is whole in one partition: what 'netvantage analyse --dask' reads.""")
@click.argument("data", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False,
              path_type=Path), help="The dataset directory to write (must not exist yet).")
@click.option("-q", "--quiet", is_flag=True, help="Nothing on stderr but errors.")
def partition_cmd(data: tuple[str, ...], output: Path, quiet: bool) -> None:
    """Write DATA as a Parquet dataset partitioned by region, for analyse --dask."""
    _progress(quiet, False)
    from ..analysis.cluster import ClusterError, write_partitioned
    from ..analysis.progress import note
    from ..errors import NetvantageError

    try:
        counts = write_partitioned(list(data), output)
    except (ClusterError, OSError) as exc:
        die(str(exc), EXIT_USAGE)
    except NetvantageError as exc:
        die(str(exc), EXIT_USAGE)
    note(f"partition: {sum(counts.values())} record(s) in {len(counts)} region(s) -> {output}")


@click.command("report", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage report data/campaigns/lab-sample.jsonl --locations data/locations/lab.csv \\
      -o report.html
  netvantage report results.db --weights ZM-LUN=0.45,ZA-JNB=0.45,GB-LHR=0.1 \\
      --locations data/locations/lab.csv --title "Mail host: where next?" -o report.html
  netvantage report dataset/ --format md --figures report-figures -o report.md
\b
DATA: JSON Lines file(s), the collector's store, or an exported Parquet dataset.
The HTML page is self-contained (figures embedded; nothing fetched when it is opened).
The recommendation and the flags are exactly those of `netvantage analyse` for the same
DATA, --weights and --locations. Progress goes to stderr (none with --quiet).""")
@click.argument("data", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The report file to write (HTML, or Markdown with --format md).")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), default="html",
              show_default=True)
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the figures as PNG files in DIR (Markdown links to them).")
@click.option("--locations", "locations_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="CSV of regions and data centres: enables the map and "
              "the physical-bound tests.")
@analysis_options("report")
@click.option("--title", help="Title of the report.")
def report_cmd(data: tuple[str, ...], output: Path, fmt: str, figures_dir: Path | None,
               locations_path: Path | None, weights: str | None, mix: tuple[str, ...],
               window: str | None, gaps: str, same_city_floor: float | None, compare: bool,
               compare_at: str | None, episode_min_rise: float, episode_min_windows: int,
               title: str | None, keep_impossible: bool, quiet: bool,
               show_progress: bool, readiness_fail_on: str) -> None:
    """Write the report a person reads: recommendation, flags, ranking, map and figures."""
    import time

    _progress(quiet, show_progress)
    from ..analysis.progress import note
    from ..report import make_report

    started = time.perf_counter()

    def progress(message: str) -> None:
        note(f"report: {message} ({time.perf_counter() - started:.1f} s)")

    parsed = parse_weights(weights)
    mixes = parse_mixes(mix)
    fail_on = readiness_checks(readiness_fail_on)
    if compare and (len(data) != 2 or compare_at):
        die("--compare takes two DATA (the earlier snapshot, then the later) and no "
            "--compare-at", EXIT_USAGE)
    progress("loading…")
    earlier = load_campaign_and_places(data[:1], None)[0] if compare else None
    later = data[1:] if compare else data
    campaign, places = load_campaign_and_places(later, locations_path)
    try:
        report = make_report(campaign, keep_impossible=keep_impossible,
                             weights=parsed, locations=places, title=title,
                             mixes=mixes, window=window, sources=[Path(d).name for d in data],
                             progress=progress, gaps=gaps,
                             same_city_floor_ms=same_city_floor, compare=earlier,
                             compare_at=compare_at, episode_min_rise=episode_min_rise,
                             episode_min_windows=episode_min_windows,
                             readiness_fail_on=fail_on)
    except ValueError as exc:
        die(str(exc), EXIT_USAGE)
    progress(f"writing {output}…")
    files = report.write(output, fmt=fmt, figures_dir=figures_dir)
    progress(f"wrote {', '.join(str(f) for f in files)}; recommended: "
             f"{report.analysis.winner or 'none'}, {len(report.analysis.flags)} flag(s)")
