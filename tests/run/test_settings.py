"""Run settings: one constructor for the command line, a config file and the Python API, so
that the three say the same thing the same way."""

import json

import pytest
from click.testing import CliRunner

import mibench
from mibench.cli import cli
from mibench.errors import UserError
from mibench.records import iter_records
from mibench.settings import RunSettings, settings_from

TOY = dict(dataset="toy", plugins=["helpers.fakeplugin"], dataset_options={"pairs": 2})


def _cli_settings(monkeypatch, *args):
    """The settings ``mibench run ARGS`` builds (the run itself is not started)."""
    seen = []

    def capture(settings, **kw):
        seen.append(settings)
        raise SystemExit(0)

    monkeypatch.setattr("mibench.runner.run_benchmark", capture)
    res = CliRunner().invoke(cli, ["run", *args])
    assert res.exit_code == 0, res.output
    return seen[0]


def test_timeout_zero_means_no_limit_everywhere(monkeypatch, tmp_path):
    """`--timeout 0` is documented as no limit; `mibench.run(timeout=0)` and a config file's
    `timeout = 0` mean the same (the API used to refuse it with a message naming the flag)."""
    config = tmp_path / "bench.json"
    config.write_text(json.dumps({"timeout": 0}))
    assert _cli_settings(monkeypatch, "--timeout", "0").timeout is None
    assert settings_from(timeout=0).timeout is None
    assert settings_from(config).timeout is None
    assert settings_from(timeout=None).timeout == 600.0  # not given: the default
    with pytest.raises(UserError, match=r"timeout \(--timeout\) must be >= 0"):
        settings_from(timeout=-1)


def test_a_plain_method_option_applies_to_every_method_that_has_it(monkeypatch, tmp_path):
    """`method_options={"iterations": 100}` is what a config file's plain `iterations = 100`
    and `-O iterations=100` say (the API used to raise a raw TypeError)."""
    config = tmp_path / "bench.toml"
    config.write_text("[method_options]\niterations = 100\n")
    from_cli = _cli_settings(monkeypatch, "-O", "iterations=100")
    assert from_cli.method_options == {"*": {"iterations": "100"}}
    assert settings_from(method_options={"iterations": 100}).method_options == {
        "*": {"iterations": 100}}
    assert settings_from(config).method_options == {"*": {"iterations": 100}}
    both = settings_from(config, method_options={"ncc": {"lr": 0.1}})
    assert both.method_options == {"*": {"iterations": 100}, "ncc": {"lr": 0.1}}


def test_api_and_cli_runs_give_the_same_records(tmp_path):
    """The same request through mibench.run and through the command line: same tasks, same
    options resolved, same scores."""
    api_dir, cli_dir = tmp_path / "api", tmp_path / "cli"
    mibench.run("identity,noisy", **TOY, out=str(api_dir), workers=0, timeout=0,
                method_options={"delay": 0.0})
    res = CliRunner().invoke(cli, ["run", "-m", "identity,noisy", "-d", "toy", "-o", "pairs=2",
                                   "--plugin", "helpers.fakeplugin", "--out", str(cli_dir),
                                   "--workers", "0", "--timeout", "0", "-O", "delay=0.0", "-q"])
    assert res.exit_code == 0, res.output

    def scores(run_dir):
        return {r.key: (r.status, r.metrics) for r in iter_records(run_dir)}

    assert scores(api_dir) == scores(cli_dir) and len(scores(api_dir)) == 4
    config = [json.loads((d / "run.json").read_text())["config"] for d in (api_dir, cli_dir)]
    assert config[0]["methods"] == config[1]["methods"] and config[0]["timeout"] is None


@pytest.mark.parametrize("values, message", [
    (dict(workers=-1), r"workers \(--workers\) must be >= 0, got -1"),
    (dict(workers="2"), r"workers \(--workers\) must be an integer"),
    (dict(limit=0), r"limit \(--limit\) must be >= 1"),
    (dict(seeds=[2**32]), r"seeds must lie in 0 \.\. 4294967295"),
    (dict(seeds="3-1"), r"the range is reversed"),
    (dict(naed_norm="diag"), r"naed_norm \(--naed-norm\) must be one of diagonal, max-side"),
    (dict(executor="ray"), r"executor \(--executor\) must be one of local, dask"),
    (dict(scheduler="tcp://x:1"), r"--scheduler needs --executor dask"),
    (dict(executor="dask", workers=0), r"cannot be combined with --executor dask"),
    (dict(device="gpu"), r"unknown device 'gpu'"),
    (dict(method_options={"ncc": [1]}), r"method_options \(-O\) must be a table"),
])
def test_every_value_is_checked_once_whoever_gives_it(values, message):
    """The API, the CLI and RunSettings itself share the checks: one line naming the flag."""
    with pytest.raises(UserError, match=message):
        settings_from(**values)
    with pytest.raises(UserError, match=message):
        RunSettings(**values)


def test_a_config_files_value_is_blamed_on_the_file(tmp_path):
    config = tmp_path / "bench.json"
    config.write_text(json.dumps({"workers": "two"}))
    with pytest.raises(UserError, match=f"{config}: workers must be an integer"):
        settings_from(config)
    config.write_text(json.dumps({"normalisation": "none"}))
    with pytest.raises(UserError, match=r"normalisation \(did you mean naed_norm\?\)"):
        settings_from(config)


def test_settings_are_normalised_and_stable():
    """Methods, seeds and plugins in one form whatever form they were given in; building the
    settings again from themselves changes nothing."""
    s = settings_from(methods="NCC, identity", seeds="2,0-1,2", plugins=["a,b", "a"],
                      reference=" NCC ")
    assert s.methods == ("ncc", "identity") and s.seeds == (0, 1, 2)
    assert s.plugins == ("a", "b") and s.reference == "ncc"
    assert RunSettings(**{k: getattr(s, k) for k in s.__dataclass_fields__}) == s


def test_export_flags_reach_the_settings(monkeypatch, tmp_path):
    """--save-transforms and --save-warped: off by default, on from the flag, the API or a
    config file, checked as true/false."""
    off = _cli_settings(monkeypatch)
    assert (off.save_transforms, off.save_warped) == (False, False)
    on = _cli_settings(monkeypatch, "--save-transforms", "--save-warped")
    assert (on.save_transforms, on.save_warped) == (True, True)
    config = tmp_path / "bench.json"
    config.write_text(json.dumps({"save_warped": True}))
    from_file = settings_from(config)
    assert (from_file.save_transforms, from_file.save_warped) == (False, True)
    assert settings_from(save_transforms=True).save_transforms is True
    with pytest.raises(UserError, match=r"save_warped \(--save-warped\) must be true or false"):
        settings_from(save_warped="yes")
    help_text = CliRunner().invoke(cli, ["run", "--help"]).output
    assert "--save-transforms" in help_text and "--save-warped" in help_text
