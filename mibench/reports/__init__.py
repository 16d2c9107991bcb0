"""Tables, statistics, figures and the HTML report built from a run's records.

Layers, bottom to top (a module imports only from those below it): ``formatting`` and
``plotting``; ``results``; ``reference``; ``evaluation``; ``analysis`` (everything computed
once); the writers ``tables``, ``paper_table``, ``landmarks``, ``figures`` and ``overlays``;
``views`` and ``html`` (the page, from ``templates/``); ``build`` on top. ``merge`` stands
apart: it combines run directories before a report is built.
"""

from mibench.reports.analysis import RunAnalysis, analyse_run
from mibench.reports.build import Reports, build_reports
from mibench.reports.evaluation import evaluate
from mibench.reports.merge import merge_runs
from mibench.reports.results import results_frame, summary_frame
from mibench.reports.tables import write_results

__all__ = ["Reports", "RunAnalysis", "analyse_run", "build_reports", "evaluate", "merge_runs",
           "results_frame", "summary_frame", "write_results"]
