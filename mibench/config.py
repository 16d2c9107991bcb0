"""What a run is asked to do, and how that request is resolved against the registry.

``RunConfig`` is the raw request (from the CLI, a config file or the Python API). ``plan_run``
checks every name and option, fills in defaults and returns a ``RunPlan``: the resolved
configuration (recorded in the run manifest) plus the task list.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mibench.errors import UserError
from mibench.metrics import NAED_NORMS
from mibench.pairs import PairInfo
from mibench.records import Task, canonical_json
from mibench.registry import Registry
from mibench.tensors import parse_device

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class RunConfig:
    """A benchmark request.

    Attributes
    ----------
    methods : str or list of str
        ``"default"`` (the methods marked default), ``"all"`` (every available method) or names.
    dataset : str
        Dataset name; ``dataset_options`` are its options (strings from the command line are
        parsed to the option's type).
    method_options : dict
        ``{method: {option: value}}``; the key ``"*"`` applies an option to every selected method
        that has it.
    seeds : list of int
        Every (method, pair) runs once per seed.
    timeout : float or None
        Seconds per task (loading the pair and registering it); None for no limit.
    workers : int
        Worker processes; 0 runs tasks in this process (no time-out, no crash isolation).
        With the ``dask`` executor and no scheduler: the ``LocalCluster``'s worker count.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    executor : str
        ``local`` (worker processes here) or ``dask`` (a Dask cluster); see
        :mod:`mibench.executors`. Neither it nor ``scheduler`` changes the run directory.
    scheduler : str or None
        Dask scheduler address (``tcp://host:8786``); None starts a ``LocalCluster``.
    reference : str or None
        The method the report tests every other method against (default: ``drmime`` when it
        runs, else the method with the lowest mean NAED other than ``identity``). Changes neither
        the run directory nor the tasks.
    retry_failed : bool
        On resume, run the tasks whose record says ``failed`` again (their new record replaces
        the old one); by default a failure is a result like any other and is kept.
    """

    methods: str | list[str] = "default"
    dataset: str = "synthetic"
    data_dir: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    workers: int = 1
    timeout: float | None = 600.0
    limit: int | None = None
    out: str | None = None
    normalisation: str = "diagonal"
    plugins: list[str] = field(default_factory=list)
    executor: str = "local"
    scheduler: str | None = None
    reference: str | None = None
    retry_failed: bool = False


#: Seeds are 32-bit (``torch.manual_seed``, NumPy); more seeds than this is a typo.
MAX_SEED = 2**32 - 1
MAX_SEEDS = 10_000


@dataclass
class RunPlan:
    """A resolved run: checked names and options, the run directory and every task."""

    config: dict[str, Any]
    run_dir: Path
    tasks: list[Task]
    skipped_methods: dict[str, str]
    dataset_obj: Any


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON run configuration (keys as in :class:`RunConfig`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        elif path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(path.read_text())
        else:
            raise UserError(f"{path}: config file must end in .toml or .json")
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: cannot parse config file: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a table of settings (keys as the run flags), got a "
                        f"{type(data).__name__}")
    known = set(RunConfig.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        hints = []
        for key in sorted(map(str, unknown)):
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise UserError(f"{path}: unknown config keys: {', '.join(hints)}")
    for key, value in data.items():
        problem = _config_value_problem(key, value)
        if problem:
            raise UserError(f"{path}: {key} {problem}, got {value!r}")
    if isinstance(data.get("seeds"), int):
        data["seeds"] = [data["seeds"]]
    if isinstance(data.get("method_options"), dict):
        # A plain `option = value` applies to every selected method, like `-O option=value`.
        shared = {k: v for k, v in data["method_options"].items() if not isinstance(v, dict)}
        data["method_options"] = {k: v for k, v in data["method_options"].items()
                                  if isinstance(v, dict)}
        if shared:
            data["method_options"]["*"] = {**data["method_options"].get("*", {}), **shared}
    return data


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _config_value_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be the config file's ``key``, or None."""
    text = ("dataset", "device", "executor", "normalisation")
    optional_text = ("data_dir", "out", "scheduler", "reference")
    if key in text and not isinstance(value, str):
        return "must be a string"
    if key in optional_text and not (value is None or isinstance(value, str)):
        return "must be a string"
    if key == "methods" and not (isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(m, str) for m in value))):
        return "must be a string or a list of method names"
    if key == "plugins" and not (isinstance(value, list)
                                 and all(isinstance(m, str) for m in value)):
        return "must be a list of module names"
    ints = isinstance(value, int) and not isinstance(value, bool)
    if key == "seeds" and not (ints or (isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value))):
        return "must be an integer or a list of integers"
    if key in ("workers", "limit") and not (ints or (key == "limit" and value is None)):
        return "must be an integer"
    if key == "timeout" and (isinstance(value, bool)
                             or not (value is None or isinstance(value, (int, float)))):
        return "must be a number of seconds (0 or null: none)"
    if key == "retry_failed" and not isinstance(value, bool):
        return "must be true or false"
    if key == "dataset_options" and not (isinstance(value, dict)
                                         and all(_is_scalar(v) for v in value.values())):
        return "must be a table of option = value"
    if key == "method_options" and not (isinstance(value, dict) and all(
            _is_scalar(v) or (isinstance(v, dict) and all(_is_scalar(x) for x in v.values()))
            for v in value.values())):
        return "must be a table of method = { option = value } (or option = value for all)"
    return None


def resolve_data_dir(spec, data_dir: str | Path | None) -> Path | None:
    """The absolute data directory for dataset ``spec``; a missing one is a :class:`UserError`."""
    if data_dir is None:
        if spec.needs_data_dir:
            where = (f"expected layout: {spec.layout}" if spec.layout else
                     f"plugin {spec.plugin!r} describes no layout; a dataset that generates its "
                     "data should declare needs_data_dir=False")
            raise UserError(f"dataset {spec.name!r} needs --data-dir (data_dir= in Python; "
                            f"{where})")
        return None
    path = Path(data_dir).expanduser().resolve()
    if not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise UserError(f"{data_dir}: data directory {what}")
    return path


def _select_methods(registry: Registry, methods: str | list[str]) -> tuple[list, dict[str, str]]:
    specs = registry.specs("method")
    skipped: dict[str, str] = {}
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m.strip()]
    names = [m.strip().lower() for m in methods]
    if names in (["all"], ["default"]):
        chosen = []
        for spec in specs.values():
            if names == ["default"] and not spec.default:
                continue
            why = spec.unavailable_reason()
            if why:
                skipped[spec.name] = why
            else:
                chosen.append(spec)
        if not chosen:
            raise UserError(f"no {names[0]} method is available here")
        return chosen, skipped
    chosen = []
    for name in dict.fromkeys(names):
        spec = registry.get("method", name)
        why = spec.unavailable_reason()
        if why:
            raise UserError(f"method {spec.name!r} is unavailable: {why}")
        chosen.append(spec)
    if not chosen:
        raise UserError("no method selected")
    return chosen, skipped


def _method_params(spec, options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    own = dict(options.get(spec.name, {}))
    shared = {k: v for k, v in options.get("*", {}).items()
              if k in {p.name for p in spec.params} and k not in own}
    return spec.resolve({**shared, **own}, from_text=True)


def plan_run(registry: Registry, cfg: RunConfig) -> RunPlan:
    """Resolve ``cfg``: check names and options, load the dataset's pair list, make the tasks."""
    if cfg.normalisation not in NAED_NORMS:
        choices = ", ".join(NAED_NORMS)
        raise UserError(f"unknown NAED normalisation {cfg.normalisation!r}; choose from {choices}")
    if cfg.workers < 0:
        raise UserError(f"workers (--workers) must be >= 0, got {cfg.workers}")
    if cfg.timeout is not None and not cfg.timeout > 0:
        raise UserError(f"timeout (--timeout) must be positive, got {cfg.timeout}")
    if not cfg.seeds:
        raise UserError("at least one seed is needed")
    bad = [s for s in cfg.seeds if not 0 <= int(s) <= MAX_SEED]
    if bad:
        raise UserError(f"seeds must lie in 0 .. {MAX_SEED} (32-bit), got {bad[0]}")
    if len(set(cfg.seeds)) > MAX_SEEDS:
        raise UserError(f"{len(set(cfg.seeds))} seeds asked for; at most {MAX_SEEDS}")
    device = parse_device(cfg.device)
    if cfg.executor not in ("local", "dask"):
        raise UserError(f"unknown executor {cfg.executor!r}; choose from local, dask")
    if cfg.scheduler and cfg.executor != "dask":
        raise UserError("--scheduler needs --executor dask")
    if cfg.executor == "dask" and cfg.workers == 0:
        raise UserError("--workers 0 (in-process) cannot be combined with --executor dask")

    dspec = registry.get("dataset", cfg.dataset)
    factory = dspec.load()
    data_dir = resolve_data_dir(dspec, cfg.data_dir)
    dparams = dspec.resolve(cfg.dataset_options, from_text=True)

    mspecs, skipped = _select_methods(registry, cfg.methods)
    unknown = set(cfg.method_options) - {s.name for s in mspecs} - {"*"}
    if unknown:
        raise UserError(f"options given for methods not selected: {', '.join(sorted(unknown))}")
    if "*" in cfg.method_options:
        for key in cfg.method_options["*"]:
            if not any(key in {p.name for p in s.params} for s in mspecs):
                raise UserError(f"no selected method has an option {key!r}")
    method_params = {s.name: _method_params(s, cfg.method_options) for s in mspecs}

    try:
        dataset_obj = factory(data_dir, **dparams)
    except ValueError as exc:  # the factory's own check of its options (docs/plugins.md)
        raise UserError(f"dataset {dspec.name!r}: {exc}") from None
    pairs = list(dataset_obj.pairs())
    odd = next((p for p in pairs if not isinstance(p, PairInfo)), None)
    if odd is not None:
        raise UserError(f"dataset {dspec.name!r}: pairs() must give PairInfo objects, got a "
                        f"{type(odd).__name__} ({odd!r:.60})")
    if cfg.limit is not None:
        if cfg.limit < 1:
            raise UserError("--limit must be >= 1")
        pairs = pairs[: cfg.limit]
    if not pairs:
        raise UserError(f"dataset {dspec.name!r} has no pairs"
                        + (f" in {data_dir}" if data_dir else ""))
    for p in pairs:
        # Pair ids become file names of records: refuse anything that could escape the run dir.
        if not _SAFE_ID.fullmatch(p.id):
            raise UserError(f"dataset {dspec.name!r} gave the pair id {p.id!r}; ids may only "
                            "contain letters, digits, '.', '_' and '-', and must start with a "
                            "letter or digit")
    duplicates = [pid for pid, n in Counter(p.id for p in pairs).items() if n > 1]
    if duplicates:
        raise UserError(f"dataset {dspec.name!r} has duplicate pair ids: "
                        f"{', '.join(sorted(duplicates))}")

    seeds = sorted({int(s) for s in cfg.seeds})
    reference = cfg.reference.strip().lower() if cfg.reference else None
    if reference and reference not in method_params:
        raise UserError(f"--reference {reference!r} is not one of the selected methods "
                        f"({', '.join(method_params)})")
    config = {
        "dataset": dspec.name,
        "dataset_params": dparams,
        "data_dir": str(data_dir) if data_dir else None,
        "methods": method_params,
        "seeds": seeds,
        "limit": cfg.limit,
        "normalisation": cfg.normalisation,
        "device": device,
        "workers": cfg.workers,
        "timeout": cfg.timeout,
        "executor": cfg.executor,
        "scheduler": cfg.scheduler,
        "reference": reference,
        "plugins": list(cfg.plugins),
        "skipped_methods": skipped,
    }
    identity = {k: config[k] for k in
                ("dataset", "dataset_params", "data_dir", "methods", "seeds", "limit",
                 "normalisation")}
    digest = hashlib.sha1(canonical_json(identity).encode()).hexdigest()[:8]
    run_dir = Path(cfg.out) if cfg.out else Path("runs") / f"{dspec.name}-{digest}"
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: is a file; the run directory (--out) must be a directory")
    tasks = [
        Task(name, params, dspec.name, dparams, p.id, seed)
        for name, params in method_params.items()
        for p in pairs
        for seed in seeds
    ]
    return RunPlan(config, run_dir, tasks, skipped, dataset_obj)
