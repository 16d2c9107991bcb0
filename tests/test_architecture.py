"""The package's shape: the import-linter contracts of pyproject.toml (no import cycle, the
layers of a run) and the size of its modules."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Modules that are one algorithm each may be longer than the rest (issue 17's rule of thumb).
ONE_ALGORITHM = {"estimators/binning.py", "estimators/cmif.py"}
MAX_LINES = 500


def test_import_contracts_hold(monkeypatch):
    """A cycle or an import against the layers fails here as it fails `lint-imports` in CI."""
    cli = pytest.importorskip("importlinter.cli")
    monkeypatch.chdir(ROOT)
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_modules_stay_readable():
    """No module over ~500 lines unless it is one algorithm: a longer one does several jobs."""
    package = ROOT / "mibench"
    long = {str(p.relative_to(package)): n for p in package.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= ONE_ALGORITHM, long
