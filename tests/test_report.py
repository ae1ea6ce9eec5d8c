"""The report command on the recorded lab campaign: content, self-containment, a real browser."""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import invoke_cli
from netns import missing
from netvantage import __version__
from netvantage import analysis as nva
from netvantage.report.content import (
    _by_pair,
    _flag_groups,
    _text_in,
    _typical_hops,
    _typical_paths,
    anchor,
    distinct_text,
)
from netvantage.report.figures import FIGURES

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
LOCATIONS = ROOT / "data" / "locations" / "lab.csv"
AFRICA = "ZM-LUN=0.45,ZA-JNB=0.45,GB-LHR=0.1"
SECTIONS = ("coverage", "question", "recommendation", "events", "flags", "ranking",
            "breakdown", "map", "latency", "loss", "timeseries", "detours", "mixes", "physics",
            "flag-details", "gathering")
HEADINGS = ("Coverage", "Question and recommendation", "Events and episodes",
            "Flagged regions", "Ranking", "Per-region breakdown", "Map", "Latency distributions",
            "Loss and handshake phases", "Over time", "Detours", "Client mixes",
            "Physical checks", "Flag details", "How the data were gathered")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What the tests look at: ids and their text, headings, every src/href, images, text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: dict[str, list[str]] = {}
        self.headings: list[str] = []
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.images: list[str] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self._open: list[tuple[str, str | None]] = []
        self._heading: list[str] | None = None
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("src", "href", "action", "poster", "data", "srcset"):
            if a.get(name):
                self.links.append((tag, name, str(a[name])))
        if tag == "img":
            self.images.append(str(a.get("src", "")))
        if tag in ("h1", "h2", "h3"):
            self._heading = []
        if tag == "style":
            self._in_style = True
        if tag in ("img", "meta", "link", "br", "hr", "input"):
            return
        ident = a.get("id")
        if ident:
            self.ids[ident] = []
        self._open.append((tag, ident))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None
        if tag == "style":
            self._in_style = False
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)
            return
        self.text.append(data)
        if self._heading is not None:
            self._heading.append(data)
        for _, ident in self._open:
            if ident:
                self.ids[ident].append(data)

    def text_of(self, ident: str) -> str:
        return " ".join(" ".join(self.ids[ident]).split())

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture(scope="module")
def analysis_result() -> nva.Analysis:
    weights = {k: float(v) for k, v in (p.split("=") for p in AFRICA.split(","))}
    return nva.analyse(nva.load(SAMPLE), weights=weights, locations=nva.locations(LOCATIONS))


@pytest.fixture(scope="module")
def html_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    proc = invoke_cli("report", str(SAMPLE), "--locations", str(LOCATIONS), "--weights", AFRICA,
                   "--mix", "africa=AF=1", "--mix", "north=CA-*=0.5,GB-*=0.5",
                   "--title", "Mail host <test> & choice", "-o", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stderr


@pytest.fixture(scope="module")
def page(html_report: tuple[Path, str]) -> Page:
    parser = Page()
    parser.feed(html_report[0].read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_progress_on_stderr(html_report: tuple[Path, str]) -> None:
    stderr = html_report[1]
    for step in ("loading", "analysing", f"drawing {len(FIGURES)} figures", "wrote"):
        assert step in stderr, stderr


def test_sections_and_title(page: Page) -> None:
    for ident in SECTIONS:
        assert ident in page.ids, f"no element with id={ident!r}"
    for heading in HEADINGS:
        assert heading in page.headings, page.headings
    assert page.headings[0] == "Mail host <test> & choice"  # escaped, then parsed back
    assert f"netvantage {__version__}" in page.text_of("gathering")


def test_recommendation_is_the_analysis_winner(page: Page, analysis_result: nva.Analysis
                                              ) -> None:
    assert analysis_result.winner == "dc-jnb"
    assert page.text_of("winner") == analysis_result.winner
    rec = page.text_of("recommendation")
    assert "ZM-LUN 45%" in page.text_of("question")
    assert "CI" in rec and "bootstrap" in rec and "perturbed client mixes" in rec
    assert "runner-up" in rec
    first_row = page.text_of("ranking-table").split("service thresholds", 1)[1]
    assert first_row.split()[:2] == ["1", analysis_result.winner]


def test_every_flag_is_in_the_report(page: Page, analysis_result: nva.Analysis) -> None:
    flags = analysis_result.flags
    assert not flags.empty
    headline = page.text_of("flags")
    for region, target in set(zip(flags["region"], flags["target"], strict=True)):
        assert region in headline and target in headline
        ident = anchor(str(region), str(target))
        assert ident in page.ids, ident
        section = page.text_of(ident)
        assert f"{region} → {target}" in section
        for evidence in flags.loc[(flags["region"] == region) & (flags["target"] == target),
                                  "evidence"]:
            assert " ".join(str(evidence).split()) in section
    assert "Clients in ZA-JNB and ZM-LUN are degraded towards dc-ams" in headline
    assert "loss first shows at TTL 5, 10.10.255.9 (AS64710 West Coast Cable, Lisbon)" \
        in headline
    assert "Lisbon" in page.all_text and "AS64710" in page.all_text


def test_detours_section_names_the_lisbon_hop(page: Page) -> None:
    section = page.text_of("detours")
    assert "ZM-LUN → dc-ams: 32 of 32 traces" in section
    assert "10.10.255.9 (AS64710 West Coast Cable, Lisbon, PT)" in section
    assert "ZA-JNB → dc-ams" not in section  # the direct route, congested but no detour
    assert "ZM-LUN" in page.text_of("detours-by-region")


def test_physical_checks_section(page: Page) -> None:
    text = page.text_of("physics")
    assert "No impossible measurement: every one of the 12 located pairs" in text
    assert "Median inflation (minimum RTT over the fibre floor): 1.77 over 9 pairs" in text
    assert "AF → EU" in page.text_of("inflation-table")
    assert "figure-inflation" in page.ids


def test_figures_are_embedded_pngs(page: Page) -> None:
    assert len(page.images) >= 5
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == PNG_SIGNATURE


def test_nothing_fetched_from_the_network(page: Page) -> None:
    for tag, attribute, value in page.links:
        low = value.strip().lower()
        assert not low.startswith(("http:", "https:", "//", "ftp:")), (tag, attribute, value)
        assert low.startswith(("#", "data:")), (tag, attribute, value[:60])
    css = " ".join(page.styles)
    assert "url(" not in css and "@import" not in css


def test_mixes_section_names_each_mix_winner(page: Page) -> None:
    table = page.text_of("mixes-table")
    assert "africa ZA-JNB 50%, ZM-LUN 50% dc-jnb" in table, table
    assert "north" in table and "flips at" in table
    section = page.text_of("mixes")
    assert "AF (continent) = 1: 2 region(s), 0.5 each: ZA-JNB, ZM-LUN" in section
    assert "Smallest change of the given mix that flips the winner" in section
    assert "figure-mixes" in page.ids


def test_markdown_and_figures(tmp_path: Path, analysis_result: nva.Analysis) -> None:
    out = tmp_path / "out" / "report.md"
    figures = tmp_path / "figs"
    proc = invoke_cli("report", str(SAMPLE), "--locations", str(LOCATIONS), "--weights", AFRICA,
                   "--format", "md", "--figures", str(figures), "-o", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text(encoding="utf-8")
    assert f"**Recommendation: {analysis_result.winner}**" in text
    assert "## Flag details" in text and "Lisbon" in text
    assert "## Detours" in text and "AS64710 West Coast Cable, Lisbon, PT" in text
    assert "## Client mixes" in text and "Smallest change of the given mix" in text
    names = {p.name for p in figures.iterdir()}
    assert names == {f"{name}.png" for name in FIGURES}
    for name in names:
        assert (figures / name).read_bytes()[:8] == PNG_SIGNATURE
        assert f"](../figs/{name})" in text
        assert (out.parent / "../figs" / name).resolve().is_file()


def test_html_with_figures_dir_and_no_locations(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    proc = invoke_cli("report", str(SAMPLE), "--figures", str(tmp_path / "f"), "-o", str(out),
                   timeout=120)
    assert proc.returncode == 0, proc.stderr
    parser = Page()
    parser.feed(out.read_text(encoding="utf-8"))
    assert "the map needs --locations" in parser.text_of("map")
    assert not (tmp_path / "f" / "map.png").exists()
    assert (tmp_path / "f" / "latency.png").is_file()


def test_bad_weights_is_a_usage_error(tmp_path: Path) -> None:
    proc = invoke_cli("report", str(SAMPLE), "--weights", "ZM-LUN", "-o", str(tmp_path / "x.html"))
    assert proc.returncode == 2
    assert "REGION=NUMBER" in proc.stderr


# --------------------------------------------------------------------------- in a browser


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    if found is None:
        missing("needs chromium (Debian package chromium)")
    return found


def _browse(browser: str, tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", f"--user-data-dir={tmp / 'profile'}",
         "--enable-logging=stderr", "--v=0", *extra, url],
        capture_output=True, text=True, timeout=120, cwd=tmp)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line or "Uncaught" in line or "Failed to load resource" in line]


def test_report_in_headless_chromium(html_report: tuple[Path, str], tmp_path: Path) -> None:
    browser = _chromium()
    url = html_report[0].resolve().as_uri()
    shot = tmp_path / "report.png"
    proc = _browse(browser, tmp_path, url, f"--screenshot={shot}", "--window-size=1280,4000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not _console_errors(proc.stderr), _console_errors(proc.stderr)
    data = shot.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1280, 4000)
    assert len(data) > 50_000  # a rendered page with figures, not a blank one

    dom = _browse(browser, tmp_path, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)
    parsed = Page()
    parsed.feed(dom.stdout)
    for heading in HEADINGS:
        assert heading in parsed.headings, parsed.headings
    assert parsed.text_of("winner") == "dc-jnb"
    # Every section of issue 14, as the browser rendered it.
    assert "every weighted pair was measured" in parsed.text_of("coverage")
    assert "No impossible measurement: every one of the 12 located pairs" in parsed.text_of(
        "physics")
    assert "AF → EU" in parsed.text_of("inflation-table")
    assert "Lisbon" in parsed.text_of("detours")
    events = parsed.text_of("events")
    assert "Event 1: 2 pairs from 2026-11-28 20:04:" in events  # the mid-run degradation
    assert "GB-LHR -> dc-ams" in events and "CA-YYZ -> dc-ams" in events
    assert "Episodes by pair (window 15 s)" in events
    assert "dc-jnb" in parsed.text_of("mixes-table")
    assert "africa" in parsed.text_of("mixes-table")
    assert all(f"figure-{name}" in parsed.ids for name in ("inflation", "mixes"))
    # The page leads with coverage, then the answer, then events before the flagged pairs.
    order = parsed.headings
    assert (order.index("Coverage") < order.index("Question and recommendation")
            < order.index("Events and episodes") < order.index("Flagged regions"))


def test_one_record_per_pair_report_says_what_it_cannot_tell(tmp_path: Path) -> None:
    """A latency matrix (one summary record per pair, means only): no resampling, no minimum
    RTT, no series; the page says so instead of claiming tests it could not run."""
    data, places = tmp_path / "m.jsonl", tmp_path / "m.locations.csv"
    imported = invoke_cli("import", "matrix", str(ROOT / "tests" / "data" / "matrix" /
                                                  "pings.csv"),
                          "--from", "source", "--to", "destination", "--rtt", "avg",
                          "-o", str(data), timeout=120)
    assert imported.returncode == 0, imported.stderr
    out = tmp_path / "m.html"
    proc = invoke_cli("report", str(data), "--locations", str(places), "-o", str(out),
                      timeout=120)
    assert proc.returncode == 0, proc.stderr
    page = Page()
    page.feed(out.read_text(encoding="utf-8"))
    text = page.all_text
    assert "Best in – of bootstrap" not in text and "CI –" not in text
    assert "No bootstrap resampling: every candidate has a weighted pair measured by a " \
        "single record" in text
    assert "No 95 % CI and no p(best)" in page.text_of("ranking")
    assert "Nothing to check: no pair has both a minimum RTT" in page.text_of("physics")
    assert "No episode could be looked for" in page.text_of("events")
    assert "Not tested: the physical bound" in page.text_of("flags")
    assert "its own recent past (every record was taken at one time)" in page.text_of("flags")
    assert "(nan)" not in page.text_of("gathering")
    assert "no score CIs" in page.text_of("gathering")
    assert "Confidence: low" in page.text_of("coverage")
    text_out = invoke_cli("analyse", str(data), "--locations", str(places), timeout=120)
    assert text_out.returncode == 0, text_out.stderr
    assert "Impossible measurements: nothing to check" in text_out.stdout
    assert "0 of 0 located pairs" not in text_out.stdout


def test_a_flagged_pairs_typical_path_per_ttl() -> None:
    """The usual responder of each TTL (the address of most traces' rows; of equals the first
    in text order), its first row's AS and place, its median minimum RTT, the pooled loss
    and the traces it answered in; a TTL nobody answered is silent."""
    na = pd.NA
    rows = [  # region, target, id, ttl, address, sent, replies, rtt_min_ms, asn, org, city
        ("R", "T", "a", 1, "10.0.0.1", 2, 2, 1.0, 64500, "Lusaka Net", "Lusaka"),
        ("R", "T", "a", 2, na, 2, 0, np.nan, na, na, na),
        ("R", "T", "b", 1, "10.0.0.2", 2, 2, 3.0, na, na, "Harare"),
        ("R", "T", "b", 2, "10.0.0.9", 2, 1, np.nan, 64501, "Transit", na),
        ("R", "T", "c", 1, "10.0.0.2", 2, 1, 5.0, 64502, "Other", "Elsewhere"),
        ("R", "U", "d", 1, "10.0.0.5", 2, 2, 7.0, na, na, na),
        ("R", "U", "e", 1, "10.0.0.10", 2, 2, 9.0, na, na, na),
        ("S", "T", "f", 1, na, 3, 0, np.nan, na, na, na),
        ("Q", "T", "g", 1, "10.9.9.9", 1, 1, 2.0, na, na, na),  # not asked for
    ]
    hops = pd.DataFrame(rows, columns=["region", "target", "id", "ttl", "address", "sent",
                                       "replies", "rtt_min_ms", "asn", "as_org", "city"])
    hops["country"] = hops["city"].map({"Lusaka": "ZM", "Harare": "ZW"}).astype("string")
    for c in ("region", "target"):
        hops[c] = hops[c].astype("category")
    hops["asn"] = hops["asn"].astype("Int64")
    for c in ("address", "as_org", "city"):
        hops[c] = hops[c].astype("string")
    paths = _typical_paths(hops, {("R", "T"), ("R", "U"), ("S", "T"), ("S", "U")})
    assert set(paths) == {("R", "T"), ("R", "U"), ("S", "T")}  # ("S", "U") has no hops
    assert [cells for _, cells in paths[("R", "T")]] == [
        ("1", "10.0.0.2", "", "", "Harare, ZW", "4.0", "16.7%", "2/3"),
        ("2", "10.0.0.9", "AS64501", "Transit", "", "–", "75.0%", "1/3")]
    assert [cells for _, cells in paths[("R", "U")]] == [
        ("1", "10.0.0.10", "", "", "", "9.0", "0.0%", "1/2")]
    assert [cells for _, cells in paths[("S", "T")]] == [
        ("1", "(silent)", "", "", "", "–", "100.0%", "0/1")]
    only_silent = _typical_paths(hops[hops["region"] == "S"], {("S", "T")})
    assert only_silent == {("S", "T"): paths[("S", "T")]}  # no answered hop at all
    table = _typical_hops(paths[("R", "T")], [2])
    assert table is not None and table.marks == ("", "flagged")
    assert _typical_hops(paths.get(("S", "U")), [2]) is None


def test_flags_read_per_pair_in_one_pass() -> None:
    """The pairs' flags come in the group-by's order (pairs sorted, a row without a region
    left out), each pair's rows in frame order; the headline prefers the ping flag per (test,
    metric), dates a history-only pair by its earliest 'since', and quotes the first 'where'."""
    t0 = pd.Timestamp("2026-11-28 20:05", tz="UTC")
    cols = ["region", "target", "kind", "metric", "test", "value", "reference", "effect",
            "evidence", "since", "p_value", "where"]
    flags = pd.DataFrame([
        ("S", "dc-b", "tcp", "rtt_ms", "history", 90.0, 40.0, 50.0, "e1", t0, 1e-4, pd.NA),
        ("R", "dc-b", "tcp", "loss_ratio", "peers", 0.3, 0.01, 0.29, "e2", pd.NaT, 1e-3,
         "loss first shows at TTL 4, 10.0.0.4: x"),
        (None, "dc-b", "ping", "rtt_ms", "peers", 1.0, 1.0, 0.0, "e3", pd.NaT, 0.5, pd.NA),
        ("S", "dc-b", "ping", "rtt_ms", "history", 80.0, 40.0, 40.0, "e4",
         t0 - pd.Timedelta(minutes=2), 1e-5, "RTT first jumps at TTL 3, 10.0.0.3: y"),
        ("R", "dc-b", "ping", "loss_ratio", "peers", 0.2, 0.01, 0.19, "e5", pd.NaT, 1e-3,
         "RTT first jumps at TTL 2, 10.0.0.2: z"),
        ("R", "dc-a", "ping", "rtt_ms", "peers", 70.0, 30.0, 40.0, "e6", pd.NaT, 1e-6, pd.NA),
    ], columns=cols).astype({"where": "string"})
    pairs = _by_pair(flags)
    assert [key for key, _ in pairs] == [("R", "dc-a"), ("R", "dc-b"), ("S", "dc-b")]
    assert [[f.evidence for f in rows] for _, rows in pairs] == [["e6"], ["e2", "e5"],
                                                                 ["e1", "e4"]]
    reference = [((str(r), str(t)), list(g["evidence"]))
                 for (r, t), g in flags.groupby(["region", "target"], sort=True)]
    assert [(key, [f.evidence for f in rows]) for key, rows in pairs] == reference
    groups = _flag_groups(flags)
    assert [(g.target, g.since) for g in groups] == [
        ("dc-a", None), ("dc-b", None), ("dc-b", "2026-11-28 20:03:00 UTC")]
    assert groups[1].lines == (
        "R: loss 20.0% vs 1.0% at peers — loss first shows at TTL 4, 10.0.0.4",)
    assert groups[2].lines[0].startswith("S: median RTT 80 ms since 20:03:00 UTC vs 40 ms")
    assert groups[2].lines[0].endswith(" — RTT first jumps at TTL 3, 10.0.0.3")


def test_text_in_reads_categories_as_text() -> None:
    values = ["R1", None, "R2", "R1", "R3"]
    categorical = pd.Series(values, dtype="category")
    for column in (categorical, pd.Series(values, dtype="string"),
                   pd.Series(values, dtype="object")):
        for texts in ({"R1"}, {"R2", "R3"}, {"R9"}, {"R1", "nan", "None"}):
            got = _text_in(column, texts)
            assert got.dtype == bool
            # Never fewer rows than the text of every row would give (a prefilter).
            assert not (column.astype(str).isin(list(texts)).to_numpy() & ~got).any()
            assert list(got[[0, 2, 3, 4]]) == [v in texts for v in ("R1", "R2", "R1", "R3")]
    assert _text_in(categorical, {"R9"})[1]  # no value: kept, for the exact test after


def test_distinct_text_is_the_rows_text() -> None:
    values = ["R2", None, "R1", "R2", "R3"]
    categorical = pd.Series(pd.Categorical(values, categories=["R0", "R1", "R2", "R3"]))
    for column in (categorical, pd.Series(values, dtype="string"),
                   pd.Series(values, dtype="object"), pd.Series([3, 1, None, 3])):
        got = distinct_text(column)
        assert got == list(column.dropna().astype(str).unique())
        assert all(isinstance(v, str) for v in got)
    assert distinct_text(categorical) == ["R2", "R1", "R3"]  # no unused category, no NaN
