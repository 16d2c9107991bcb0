"""Helpers shared by test modules: builders of pairs, records, runs, plugins and datasets.

``tests/`` is on ``sys.path`` (pytest's rootdir conftest), so these import as ``helpers.x``;
worker processes and CLI subprocesses get it through ``PYTHONPATH`` (see ``helpers.TESTS``).
"""

from pathlib import Path

#: The ``tests/`` directory: what subprocesses need on ``PYTHONPATH`` to import ``helpers``.
TESTS = Path(__file__).resolve().parents[1]
