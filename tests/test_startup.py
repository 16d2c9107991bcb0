"""A mistake on the command line is reported before the heavy imports (torch, pandas,
matplotlib): seconds of start-up spent on a typo made the one-line errors feel broken."""

import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "pandas", "matplotlib")

#: Runs the command line in a fresh interpreter (this one has long imported torch) and prints
#: the exit status, the error line and the heavy modules loaded by then.
SCRIPT = textwrap.dedent("""
    import sys
    from click.testing import CliRunner
    from mibench.cli import cli

    result = CliRunner().invoke(cli, sys.argv[1:])
    print(result.exit_code)
    print(result.output.strip().splitlines()[-1])
    print(",".join(m for m in {heavy!r} if m in sys.modules))
""").format(heavy=HEAVY)


def _run_cli(*args: str) -> tuple[int, str, list[str]]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    return int(out[0]), out[1], [m for m in out[2].split(",") if m]


@pytest.mark.parametrize(("args", "error"), [
    (("run", "--methods", "nmx"), "unknown method 'nmx'"),
    (("run", "-O", "nmi.bins=x"), "option 'bins' expects an int"),
    (("run", "--dataset", "nope"), "unknown dataset 'nope'"),
    (("estimators", "accuracy", "-e", "nope"), "unknown estimator 'nope'"),
    (("estimators", "cost", "-e", "nope"), "unknown estimator 'nope'"),
    (("estimators", "landscape", "-e", "nope"), "unknown estimator 'nope'"),
])
def test_a_bad_run_option_fails_before_torch_is_imported(args, error):
    code, line, heavy = _run_cli(*args)
    assert code == 2
    assert line.startswith("mibench: error:") and error in line, line
    assert heavy == [], f"{' '.join(args)} imported {heavy} before reporting: {line}"
