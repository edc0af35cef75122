"""Reports from stored results: one self-contained HTML file (inline CSS, PNGs as ``data:`` URIs, no network)."""

from __future__ import annotations

from tricklab.report.run_report import REPORT_FILE, build_run_report, write_run_report

__all__ = ["REPORT_FILE", "build_run_report", "write_run_report"]
