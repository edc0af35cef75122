"""Reports from stored results: one self-contained HTML file (inline CSS, PNGs as ``data:`` URIs, no network).

The public names are read lazily (``tricklab.lazy``): ``tricklab.report.outputs`` alone does not load matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tricklab.lazy import lazy_exports

if TYPE_CHECKING:
    from tricklab.report.export import export_csv, export_markdown
    from tricklab.report.run_report import REPORT_FILE, build_run_report, write_run_report
    from tricklab.report.study_report import build_study_report, write_study_report

__all__ = ["REPORT_FILE", "build_run_report", "build_study_report", "export_csv", "export_markdown",
           "write_run_report", "write_study_report"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "REPORT_FILE": "tricklab.report.run_report:REPORT_FILE",
    "build_run_report": "tricklab.report.run_report:build_run_report",
    "build_study_report": "tricklab.report.study_report:build_study_report",
    "export_csv": "tricklab.report.export:export_csv",
    "export_markdown": "tricklab.report.export:export_markdown",
    "write_run_report": "tricklab.report.run_report:write_run_report",
    "write_study_report": "tricklab.report.study_report:write_study_report",
})
