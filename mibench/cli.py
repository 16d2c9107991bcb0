"""The ``mibench`` command line: ``run``, ``list``, ``report`` and ``estimate``.

User errors (unknown names, bad options, missing files) print one line and exit with status 2;
they never show a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mibench.errors import UserError, as_user_error, one_line_warnings
from mibench.metrics import NAED_NORMS
from mibench.settings import EXECUTORS, MAX_PAIR_PAGES
from mibench.variants import normalise as normalise_method


def _fail(message: str) -> None:
    click.echo(f"mibench: error: {message}", err=True)
    sys.exit(2)


class _Group(click.Group):
    """Turns :class:`UserError` from any command into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            _fail(str(exc))


def _parse_options(items: tuple[str, ...], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _parse_method_options(items: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``-O drmime.iterations=100`` -> {"drmime": {"iterations": "100"}}; no dot -> all methods."""
    out: dict[str, dict[str, str]] = {}
    for key, value in _parse_options(items, "-O").items():
        method, dot, option = key.rpartition(".")
        out.setdefault(method.lower() if dot else "*", {})[option] = value
    return out


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mibench")
def cli() -> None:
    """Benchmark mutual-information similarity measures and image registration methods."""


@cli.command()
@click.option("--methods", "-m", default=None,
              help="'default', 'all' (every available method) or a comma list, e.g. identity,ncc.")
@click.option("--dataset", "-d", default=None, help="Dataset name (default: synthetic).")
@click.option("--data-dir", type=click.Path(), default=None, help="Where the dataset lies.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto).")
@click.option("--out", type=click.Path(), default=None,
              help="Run directory (default runs/<dataset>-<config hash>; rerun to resume).")
@click.option("--workers", type=int, default=None,
              help="Worker processes (default 1; 0 runs in-process without time-outs).")
@click.option("--timeout", type=float, default=None,
              help="Seconds per task before it is killed and marked failed (default 600).")
@click.option("--executor", type=click.Choice(list(EXECUTORS)), default=None,
              help="Where tasks run: local worker processes (default) or a Dask cluster.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Dask scheduler address, e.g. tcp://host:8786 (with --executor dask; "
                   "without it a LocalCluster of --workers processes is started).")
@click.option("--seed", "seed_text", default=None,
              help="Seed(s) for the methods: 0, 0,1,2 or 0-4 (default 0).")
@click.option("--limit", type=int, default=None, help="Use only the first N pairs.")
@click.option("--naed-norm", "naed_norm", default=None, type=click.Choice(list(NAED_NORMS)),
              help="NAED normaliser D (default diagonal of the fixed image).")
@click.option("-o", "dataset_opts", multiple=True, metavar="KEY=VALUE",
              help="Dataset option, e.g. -o size=512 (repeatable).")
@click.option("-O", "method_opts", multiple=True, metavar="[METHOD.]KEY=VALUE",
              help="Method option, e.g. -O ncc.iterations=100; without METHOD. it applies to "
                   "every selected method that has KEY (repeatable).")
@click.option("--config", "config_file", type=click.Path(), default=None,
              help="TOML or JSON file with any of these settings; flags override it.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import MODULE as an extra plugin (repeatable, or a comma list: a,b).")
@click.option("--reference", default=None, metavar="METHOD",
              help="Method the report tests the others against (default drmime when it runs, "
                   "else the one with the lowest mean NAED, identity excluded; methods that "
                   "failed on every scored task are skipped).")
@click.option("--retry-failed", is_flag=True, default=None,
              help="On resume, run the tasks whose record says failed again.")
@click.option("--save-transforms", is_flag=True, default=None,
              help="Write each task's transform as an ITK transform file beside its record "
                   "(records/<method>/<task>.tfm, read by SimpleITK's ReadTransform): fixed -> "
                   "moving points in LPS physical coordinates when the pair has a geometry, "
                   "else in pixels. Tasks a resumed run keeps are not rerun, so they get no "
                   "file: use a new --out.")
@click.option("--save-warped", is_flag=True, default=None,
              help="Write each task's moving image warped onto the fixed grid beside its "
                   "record: NIfTI with the fixed volume's affine for volumes, PNG for 2-D.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bar (nor, when stderr is not a terminal, progress lines).")
def run(methods, dataset, data_dir, device, out, workers, timeout, executor, scheduler, seed_text,
        limit, naed_norm, dataset_opts, method_opts, config_file, plugins, reference,
        retry_failed, save_transforms, save_warped, quiet) -> None:
    """Register every pair of a dataset with each method and write records and reports."""
    from mibench.runner import run_benchmark
    from mibench.settings import settings_from

    settings = settings_from(
        config_file, methods=methods, dataset=dataset, data_dir=data_dir, device=device,
        out=out, workers=workers, timeout=timeout, limit=limit, executor=executor,
        scheduler=scheduler, reference=reference, naed_norm=naed_norm,
        retry_failed=retry_failed, save_transforms=save_transforms, save_warped=save_warped,
        seeds=seed_text, dataset_options=_parse_options(dataset_opts, "-o"),
        method_options=_parse_method_options(method_opts), plugins=plugins)
    try:
        result = run_benchmark(settings, progress=not quiet)
    except KeyboardInterrupt:
        _interrupted()
    click.echo(f"{result.completed} task(s) run, {result.failed} failed, "
               f"{result.skipped_existing} already done; results in {result.run_dir}")
    _echo_paper_table(result.report)
    click.echo(f"report: {result.report.html}")


def _interrupted() -> None:
    """Ctrl-C during a run: one line, exit status 130; the records written are kept."""
    click.echo("mibench: interrupted; the records written so far are kept: run the same "
               "command again to resume", err=True)
    sys.exit(130)


def _echo_paper_table(report: Any) -> None:
    """Print the paper-style NAED table of ``report``, a :class:`mibench.reports.Reports` (what
    ``paper_table.md`` opens with) to the terminal, so that a run's outcome is visible without
    opening the report; nothing when no pair is scored."""
    if report.naed_table_markdown is not None:
        click.echo("\n" + report.naed_table_markdown + "\n")


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import MODULE as an extra plugin (repeatable, or a comma list: a,b).")
def list_cmd(as_json: bool, plugins: tuple[str, ...]) -> None:
    """List every estimator, method and dataset, and whether it can run here."""
    from mibench.api import list_plugins

    rows = list_plugins(plugins)
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
        return
    kind = None
    for row in rows:
        if row["kind"] != kind:
            kind = row["kind"]
            click.echo(f"\n{kind}s:")
        mark = "" if row["available"] else f"  [unavailable: {row['reason']}]"
        default = " (default)" if row.get("default") else ""
        click.echo(f"  {row['name']:<16} {row.get('description', '')}{default}{mark}")
        if kind == "dataset":
            if row.get("layout"):
                click.echo(f"  {'':<16}   layout: {row['layout']}")
            if row.get("source"):
                click.echo(f"  {'':<16}   get it: {row['source']}")
        if row.get("options"):
            opts = ", ".join(f"{k}={v['default']}" for k, v in row["options"].items())
            click.echo(f"  {'':<16}   options: {opts}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(), default=None,
              help="Merge the run directories into this one and report there (same dataset "
                   "and options; identical tasks once).")
@click.option("--reference", default=None, metavar="METHOD",
              help="Method the others are tested against (default: the run's --reference (of a "
                   "merge: only when every run set the same one), else the method its plugin "
                   "prefers as reference (drmime) when it ran, else the lowest mean NAED, "
                   "baselines (identity) excluded; methods that failed on every scored task "
                   "are skipped).")
@click.option("--overlays", "overlay_methods", default=None, metavar="M1,M2",
              help="Methods drawn side by side in the overlays and pair pages (default: every "
                   "method that ran).")
@click.option("--pair-pages", type=click.IntRange(min=0), default=None, metavar="N",
              help=f"Pages of all methods on one pair, pairs/<pair>.html: at most N, spread "
                   f"over the reference's ranking (default {MAX_PAIR_PAGES}; 0: none).")
@click.option("--all-pair-pages", is_flag=True, help="A page for every pair.")
def report(run_dirs: tuple[str, ...], out: str | None, reference: str | None,
           overlay_methods: str | None, pair_pages: int | None, all_pair_pages: bool) -> None:
    """Rebuild results.csv, summary.csv, stats.csv, metrics.json, the paper tables (.tex, .md),
    the figures, the pair pages and report.html of each run directory from its records, or of
    their merge with --out."""
    from mibench.paths import RECORDS_DIR, record_files, records_dir
    from mibench.reports import build_reports, merge_runs

    for run_dir in run_dirs:
        if not records_dir(run_dir).is_dir():
            raise UserError(f"{run_dir}: not a run directory (no {RECORDS_DIR}/ folder)")
        if not record_files(run_dir):
            raise UserError(f"{run_dir}: no records to report on (in {RECORDS_DIR}/)")
    if out and Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"{out}: is a file; --out must be a directory")
    # A variant is named as the tables name it (nmi[bins=64]); the base name in lower case.
    reference = normalise_method(reference) if reference else None
    chosen = ([normalise_method(m) for m in overlay_methods.split(",") if m.strip()]
              if overlay_methods else None)
    pages = MAX_PAIR_PAGES if pair_pages is None else pair_pages
    targets = [merge_runs([Path(d) for d in run_dirs], Path(out))] if out else run_dirs
    for run_dir in targets:
        built = build_reports(Path(run_dir), reference=reference, overlay_methods=chosen,
                              pair_pages=None if all_pair_pages else pages)
        _echo_paper_table(built)
        click.echo(f"report: {built.html}")


def read_image(path: str, channels: str = "grey") -> Any:
    """Read an image file as a run's datasets do (:func:`mibench.io.read_image`): float32 in
    [0, 1], ``(H, W)`` (``channels="grey"``: ITU-R 601 luma) or ``(H, W, 3)`` (``"rgb"``).
    A file that cannot be read is a one-line :class:`UserError` naming it."""
    from mibench.io import read_image as read

    try:
        return read(Path(path), channels)
    except ValueError as exc:
        raise UserError(str(exc)) from None


@cli.command()
@click.option("--estimator", "-e", "name", required=True, help="Estimator name, e.g. ncc.")
@click.option("-o", "opts", multiple=True, metavar="KEY=VALUE", help="Estimator option.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import MODULE as an extra plugin (repeatable, or a comma list: a,b).")
@click.option("--channels", type=click.Choice(["grey", "rgb"]), default="grey",
              show_default=True,
              help="What the estimator sees of colour images: luma, as a run's datasets by "
                   "default, or the three channels.")
@click.argument("fixed_image", type=click.Path())
@click.argument("moving_image", type=click.Path())
def estimate(name, opts, plugins, channels, fixed_image, moving_image) -> None:
    """Print the similarity of two image files of the same size, read as a run reads them."""
    from mibench.callables import Estimator
    from mibench.io import same_channels
    from mibench.registry import Registry

    spec = Registry(plugins).get("estimator", name)
    est = Estimator(spec, spec.resolve(_parse_options(opts, "-o"), from_text=True))
    fixed, moving = read_image(fixed_image, channels), read_image(moving_image, channels)
    if fixed.shape[:2] != moving.shape[:2]:
        raise UserError(f"{moving_image}: size {moving.shape[:2]} differs from "
                        f"{fixed_image}: {fixed.shape[:2]}")
    # With --channels rgb, a colour and a grey image are compared in grey, as a run does.
    fixed, moving = same_channels(fixed, moving)
    with as_user_error(spec):  # the estimator's own checks (e.g. of its options: lo < hi)
        value = est(fixed, moving)
    # Name, value and direction: a value alone does not say whether more is more similar.
    direction = "higher" if spec.higher_is_better else "lower"
    click.echo(f"{spec.name} {value:.6g} ({direction} is more similar)")


@cli.group()
def estimators() -> None:
    """Benchmark the estimators themselves (issue 19: accuracy on data of known MI)."""


def _execution_options(command: Callable) -> Callable:
    """The options of how tasks run, shared by the ``mibench estimators`` commands."""
    options = [
        click.option("--estimators", "-e", "names", default=None,
                     help="'all' (every available estimator; the default of accuracy and "
                          "cost), 'objectives' (those that drive a registration method; the "
                          "default of landscape) or a comma list; variants as in run, e.g. "
                          "jhmi,jhmi[bins=64]."),
        click.option("--seed", "seed_text", default=None,
                     help="Seed(s): 0, 0,1,2 or 0-4 (default 0)."),
        click.option("--out", type=click.Path(), default=None,
                     help="Run directory (default runs/<command>-<config hash>; rerun to "
                          "resume)."),
        click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)."),
        click.option("--workers", type=int, default=None, help="Worker processes (default 1)."),
        click.option("--timeout", type=float, default=None,
                     help="Seconds per task (default 600, 0 for none)."),
        click.option("--executor", type=click.Choice(list(EXECUTORS)), default=None,
                     help="Local worker processes (default) or a Dask cluster."),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Dask scheduler address."),
        click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
                     help="Import MODULE as an extra plugin (repeatable, or a comma list)."),
        click.option("--retry-failed", is_flag=True, default=None,
                     help="On resume, run the tasks whose record says failed again."),
        click.option("--quiet", "-q", is_flag=True,
                     help="No progress bar (nor, when stderr is not a terminal, progress "
                          "lines)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        raise UserError(f"{flag} expects integers like 64,256; got {text!r}") from None


def _run_estimators(run: Callable, settings_type: Any, quiet: bool, names: str,
                    seed_text: str | None, **given: Any) -> None:
    """Build the settings of a ``mibench estimators`` command, run it, say what it did."""
    from mibench.variants import split_methods

    given.update(seeds=seed_text, estimators=split_methods(names) if names else None)
    settings = settings_type(**{k: v for k, v in given.items() if v is not None})
    try:
        done, report = run(settings, progress=not quiet)
    except KeyboardInterrupt:
        _interrupted()
    click.echo(f"{done.completed} task(s) run, {done.failed} failed, {done.kept} already "
               f"done; results in {report.run_dir}")
    click.echo(f"report: {report.html}")


@estimators.command()
@click.option("--families", default=None, metavar="A,B",
              help="Known-MI task families (default: gaussian, gaussian-cdf, student, "
                   "uniform-noise and the image tasks).")
@click.option("--sizes", default=None, metavar="N,N",
              help="Values per variable, perfect squares (default 4096,65536).")
@_execution_options
def accuracy(families, sizes, quiet, names, seed_text, **given) -> None:
    """Score every estimator on samples of pairs with closed-form MI; write records, CSVs
    (bias, SD, RMSE, rank agreement) and report.html."""
    from mibench.accuracy import AccuracySettings
    from mibench.runner import run_accuracy

    if families:
        given["families"] = tuple(f.strip() for f in families.split(",") if f.strip())
    _run_estimators(run_accuracy, AccuracySettings, quiet, names, seed_text,
                    sizes=_ints(sizes, "--sizes"), **given)


@estimators.command()
@click.option("--sides", default=None, metavar="N,N",
              help="Image sides in pixels (default 64,128,256,512,1024,2048).")
@click.option("--repeats", type=int, default=None,
              help="Timed calls per measurement after a warm-up (default 5; the median).")
@_execution_options
def cost(sides, repeats, quiet, names, seed_text, **given) -> None:
    """Time (forward, and forward + backward where differentiable) and peak memory of every
    estimator against image size, with the fitted log-log slopes; CSVs and report.html."""
    from mibench.cost import CostSettings
    from mibench.runner import run_cost

    _run_estimators(run_cost, CostSettings, quiet, names, seed_text,
                    sides=_ints(sides, "--sides"), repeats=repeats, **given)


@estimators.command()
@click.option("--dataset", "-d", default=None,
              help="Dataset with a gold standard: a true transform or landmarks (default "
                   "synthetic).")
@click.option("--data-dir", type=click.Path(), default=None, help="Where the dataset lies.")
@click.option("-o", "dataset_opts", multiple=True, metavar="KEY=VALUE",
              help="Dataset option, e.g. -o size=128 (repeatable).")
@click.option("--limit", type=int, default=None, help="The first N pairs (default all).")
@click.option("--space", type=click.Choice(["rigid", "affine"]), default=None,
              help="Parameters of the lines: rigid (default) or affine.")
@click.option("--lines", type=int, default=None, help="Random lines (default 10).")
@click.option("--points", type=int, default=None, help="Points on each side (default 10).")
@click.option("--radius", type=float, default=None,
              help="Half-length of a line, normalised px (default 10).")
@_execution_options
def landscape(dataset, data_dir, dataset_opts, limit, space, lines, points, radius, quiet,
              names, seed_text, **given) -> None:
    """The similarity landscape of every estimator around each pair's gold standard: the five
    properties of Skerl et al. (2006) and the 1-D profiles; CSVs and report.html."""
    from mibench.landscape import LandscapeSettings
    from mibench.runner import run_landscape

    options = _parse_options(dataset_opts, "-o")
    _run_estimators(run_landscape, LandscapeSettings, quiet, names, seed_text, dataset=dataset,
                    data_dir=data_dir, dataset_options=options or None, limit=limit,
                    space=space, lines=lines, points=points, radius=radius, **given)


def main() -> None:
    """The ``mibench`` command: Click's usage errors (a bad flag value, a missing argument) are
    printed as one line too, like every other user error."""
    one_line_warnings()
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.UsageError as exc:
        help_only = getattr(click.exceptions, "NoArgsIsHelpError", ())
        if isinstance(exc, help_only):  # bare `mibench`: the help text, as Click prints it
            exc.show()
            sys.exit(exc.exit_code)
        where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        _fail(exc.format_message() + where)
    except click.ClickException as exc:
        _fail(exc.format_message())
    except click.exceptions.Abort:
        click.echo("mibench: aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
