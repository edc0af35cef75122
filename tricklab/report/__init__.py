"""Reports from stored results: one self-contained HTML file (inline CSS, PNGs as ``data:`` URIs, no network)."""

from __future__ import annotations

from tricklab.report.export import export_csv, export_markdown
from tricklab.report.run_report import REPORT_FILE, build_run_report, write_run_report
from tricklab.report.study_report import build_study_report, write_study_report

__all__ = ["REPORT_FILE", "build_run_report", "build_study_report", "export_csv", "export_markdown",
           "write_run_report", "write_study_report"]
