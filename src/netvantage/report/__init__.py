"""The report a person reads: one self-contained HTML page (or Markdown) from a campaign.

    from netvantage.report import build_report, make_report
    build_report("data/campaigns/lab-sample.jsonl", "report.html",
                 locations="data/locations/lab.csv")          # files in, file out
    report = make_report(campaign, weights={...}, locations=places)  # frames in
    report.html(), report.markdown(), report.analysis.winner

Needs the ``analysis`` extra (pandas, matplotlib, Jinja2, basemap-data).
"""

from __future__ import annotations

from .build import Report, build_report, make_report

__all__ = ["Report", "build_report", "make_report"]
