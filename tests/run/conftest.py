"""Fixtures of the run tests."""

import pytest

import mibench.reports


@pytest.fixture
def no_reports(monkeypatch):
    """The report is not what these tests check, and drawing it costs seconds."""
    monkeypatch.setattr(mibench.reports, "build_reports", lambda run_dir, **kw: None)
