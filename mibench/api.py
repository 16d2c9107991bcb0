"""The Python API, mirroring the command line.

>>> import mibench
>>> nmi = mibench.estimator("ncc")
>>> value = nmi(fixed, moving)                          # doctest: +SKIP
>>> out = mibench.method("ncc", iterations=100)(fixed, moving)  # doctest: +SKIP
>>> out.transform.moving_to_fixed(points)               # doctest: +SKIP
>>> df = mibench.run(methods="identity,ncc", dataset="synthetic", limit=2)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mibench.callables import Estimator, Method, open_dataset
from mibench.registry import Registry, split_plugin_names


def estimator(name: str, *, plugins: Iterable[str] = (), **options: Any) -> Estimator:
    """A similarity measure by name with its options, e.g. ``estimator("ncc")``."""
    spec = Registry(plugins).get("estimator", name)
    return Estimator(spec, spec.resolve(options))


def method(name: str, *, device: str = "auto", plugins: Iterable[str] = (),
           **options: Any) -> Method:
    """A registration method by name with its options, bound to ``device``."""
    spec = Registry(plugins).get("method", name)
    spec.load()  # a missing requirement is reported now, not at the first call
    return Method(spec, spec.resolve(options), device)


def dataset(name: str = "synthetic", data_dir: str | None = None, *,
            plugins: Iterable[str] = (), **options: Any):
    """A dataset by name: an object with ``pairs()`` (ids and metadata) and ``load(pair_id)``."""
    return open_dataset(Registry(plugins).get("dataset", name), data_dir, options).dataset


def run(methods: str | list[str] | None = None, dataset: str | None = None,
        data_dir: str | None = None, *, config: str | None = None,
        dataset_options: dict | None = None, method_options: dict | None = None,
        seeds: int | Iterable[int] | str | None = None, device: str | None = None,
        workers: int | None = None, timeout: float | None = None,
        executor: str | None = None, scheduler: str | None = None, limit: int | None = None,
        out: str | None = None, naed_norm: str | None = None, reference: str | None = None,
        retry_failed: bool | None = None, plugins: Iterable[str] | str = (),
        save_transforms: bool | None = None, save_warped: bool | None = None,
        progress: bool = False):
    """Run a benchmark (as ``mibench run``) and return its results as a pandas DataFrame.

    The arguments are ``mibench run``'s flags, with the same defaults and meanings (None: not
    given, so the config file's value or the default applies): ``methods="default"``,
    ``dataset="synthetic"``, ``seeds=0`` (an int, a list or a text like ``"0-4"``),
    ``device="auto"``, ``workers=1``, ``timeout=600`` seconds (0 for no limit),
    ``naed_norm="diagonal"``, ``executor="local"``. ``config`` is a TOML or JSON file of
    settings, as ``--config``; explicit arguments override it. ``method_options`` is
    ``{method: {option: value}}``, and a plain ``{option: value}`` applies to every selected
    method that has the option (``-O option=value``).

    One row per method x pair x seed (the ``results.csv`` of the run); the run directory is in
    ``df.attrs["run_dir"]`` and the report in ``df.attrs["report"]``. ``executor="dask"`` runs
    the tasks on a Dask cluster (``scheduler`` address, or a ``LocalCluster`` of ``workers``
    processes); the results and the run directory are the same as with the local executor.

    Worker processes are *spawned* (they import the calling script again), so a script that
    calls ``run()`` with ``workers`` >= 1 must do so under ``if __name__ == "__main__":``;
    ``workers=0`` runs in-process and needs no guard. ``plugins`` is a list of module names or
    one string; an item may hold several separated by commas. ``save_transforms`` and
    ``save_warped`` write each task's ITK transform file and warped moving image beside its
    record (``--save-transforms``, ``--save-warped``).
    """
    import pandas as pd

    from mibench.paths import RESULTS_CSV
    from mibench.runner import run_benchmark
    from mibench.settings import settings_from

    settings = settings_from(
        config, methods=methods, dataset=dataset, data_dir=data_dir,
        dataset_options=dataset_options, method_options=method_options, seeds=seeds,
        device=device, workers=workers, timeout=timeout, executor=executor,
        scheduler=scheduler, limit=limit, out=out, naed_norm=naed_norm, reference=reference,
        retry_failed=retry_failed, plugins=split_plugin_names(plugins),
        save_transforms=save_transforms, save_warped=save_warped)
    result = run_benchmark(settings, progress=progress)
    df = pd.read_csv(result.run_dir / RESULTS_CSV)
    df.attrs["run_dir"] = str(result.run_dir)
    df.attrs["report"] = str(result.report.html)
    return df


def list_plugins(plugins: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Every estimator, method and dataset with its kind, options and availability.

    Built-ins come first, then installed (entry-point) plugins, then ``plugins``, each kind in
    registration order. A plugin that failed to load, installed or named in ``plugins`` (it
    does not import, a hook raises or returns something wrong, a name is invalid or taken), is a
    row of kind ``"plugin"`` with ``available`` False and the reason, after the others: listing
    is how one finds out what is wrong, so it does not stop at the first broken plugin.
    """
    registry = Registry(plugins, strict=False)
    rows = []
    for kind in ("estimator", "method", "dataset"):
        for spec in registry.specs(kind).values():
            why = spec.unavailable_reason()
            row = {
                "kind": kind, "name": spec.name, "description": spec.description,
                "plugin": spec.plugin, "available": why is None, "reason": why,
                "options": {p.name: {"default": p.default, "help": p.help,
                                     **({"choices": list(p.choices)} if p.choices else {}),
                                     **({"bounds": p.bounds_text} if p.has_bounds else {})}
                            for p in spec.params},
            }
            if kind == "method":
                row.update(default=spec.default, preferred_reference=spec.preferred_reference,
                           baseline=spec.baseline, derived_from=spec.derived_from)
            if kind == "estimator":
                row["higher_is_better"] = spec.higher_is_better
            if kind == "dataset":
                row.update(needs_data_dir=spec.needs_data_dir, layout=spec.layout,
                           source=spec.source)
            rows.append(row)
    for name, why in registry.broken.items():
        rows.append({"kind": "plugin", "name": name, "available": False, "reason": why})
    return rows
