"""Tables, figures and the HTML report built from a run's records."""

from mibench.reports.html import build_reports, write_report
from mibench.reports.results import results_frame, summary_frame, write_results

__all__ = ["build_reports", "results_frame", "summary_frame", "write_report", "write_results"]
