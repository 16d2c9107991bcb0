"""Tables, statistics, figures and the HTML report built from a run's records."""

from mibench.reports.evaluation import evaluate
from mibench.reports.html import build_reports, write_report
from mibench.reports.merge import merge_runs
from mibench.reports.results import results_frame, summary_frame, write_results

__all__ = ["build_reports", "evaluate", "merge_runs", "results_frame", "summary_frame",
           "write_report", "write_results"]
