"""What a run is asked to do: :class:`RunSettings`, the one constructor of a run request.

The command line, a config file (TOML or JSON, a key per flag) and the Python API all end in
:func:`settings_from`, which merges a file with explicit values (explicit wins) and builds a
:class:`RunSettings`; every value is checked once, in :meth:`RunSettings.__post_init__`, with
one-line errors naming the flag (or the config file, for a value that came from it). Whether
names and options exist is the planner's business (:mod:`mibench.plan`): it needs the registry.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mibench.errors import UserError
from mibench.metrics import DEFAULT_NAED_NORM, NAED_NORMS
from mibench.registry import split_plugin_names
from mibench.seeds import MAX_SEED, MAX_SEEDS
from mibench.variants import normalise as normalise_method
from mibench.variants import split_methods

#: Where tasks can run (:mod:`mibench.executors`).
EXECUTORS = ("local", "dask")
#: The key of ``method_options`` whose options apply to every selected method that has them.
ALL_METHODS = "*"
#: Pair pages a report writes by default: enough to see the spread, few enough to build in
#: seconds (``mibench report --pair-pages``).
MAX_PAIR_PAGES = 24
#: The default time-out of one task, in seconds.
DEFAULT_TIMEOUT = 600.0
#: Config keys that were renamed: an old file gets the new name as its hint.
RENAMED = {"normalisation": "naed_norm"}


def _parse_device(value: Any) -> str:
    """:func:`mibench.tensors.parse_device`, without importing torch for the usual spellings:
    a mistake elsewhere in the settings is then reported at once, not after seconds of imports."""
    text = str(value or "auto").strip().lower()
    if text in ("auto", "cpu", "cuda"):
        return text
    from mibench.tensors import parse_device

    return parse_device(value)


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _optional_text(value: Any) -> str | None:
    return None if value is None or isinstance(value, str | Path) else "must be a string"


def _methods(value: Any) -> str | None:
    if isinstance(value, str) or (isinstance(value, list | tuple)
                                  and all(isinstance(m, str) for m in value)):
        return None
    return "must be a string or a list of method names"


def _plugins(value: Any) -> str | None:
    if isinstance(value, str) or (isinstance(value, list | tuple)
                                  and all(isinstance(m, str) for m in value)):
        return None
    return "must be a list of module names"


_SEED_TEXT = re.compile(r"\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*")


def _seeds(value: Any) -> str | None:
    if _is_int(value) or (isinstance(value, str) and _SEED_TEXT.fullmatch(value)) or (
            isinstance(value, list | tuple | range) and all(_is_int(v) for v in value)):
        return None
    return "must be an integer, a list of integers or a text like 0,1,2 or 0-4"


def _workers(value: Any) -> str | None:
    if not _is_int(value):
        return "must be an integer"
    return None if value >= 0 else "must be >= 0"


def _limit(value: Any) -> str | None:
    if value is None:
        return None
    if not _is_int(value):
        return "must be an integer"
    return None if value >= 1 else "must be >= 1"


def _timeout(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return "must be a number of seconds (0 or null: none)"
    return None if value >= 0 else "must be >= 0 seconds (0: no limit)"


def _choice(choices: Iterable[str]) -> Callable[[Any], str | None]:
    choices = tuple(choices)

    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _dataset_options(value: Any) -> str | None:
    if isinstance(value, dict) and all(_scalar(v) for v in value.values()):
        return None
    return "must be a table of option = value"


def _method_options(value: Any) -> str | None:
    if isinstance(value, dict) and all(
            _scalar(v) or (isinstance(v, dict) and all(_scalar(x) for x in v.values()))
            for v in value.values()):
        return None
    return "must be a table of method = { option = value } (or option = value for all)"


#: Each setting: its command-line flag (for messages) and the check of its value's type/range.
FIELDS: dict[str, tuple[str, Callable[[Any], str | None]]] = {
    "methods": ("--methods", _methods),
    "dataset": ("--dataset", _text),
    "data_dir": ("--data-dir", _optional_text),
    "dataset_options": ("-o", _dataset_options),
    "method_options": ("-O", _method_options),
    "seeds": ("--seed", _seeds),
    "device": ("--device", _text),
    "workers": ("--workers", _workers),
    "timeout": ("--timeout", _timeout),
    "limit": ("--limit", _limit),
    "out": ("--out", _optional_text),
    "naed_norm": ("--naed-norm", _choice(NAED_NORMS)),
    "plugins": ("--plugin", _plugins),
    "executor": ("--executor", _choice(EXECUTORS)),
    "scheduler": ("--scheduler", _optional_text),
    "reference": ("--reference", _optional_text),
    "retry_failed": ("--retry-failed", _flag),
    "save_transforms": ("--save-transforms", _flag),
    "save_warped": ("--save-warped", _flag),
}


def parse_seeds(text: str) -> list[int]:
    """``"0"``, ``"0,1,2"``, ``"0-4"`` or a mix (``"0-2,7"``) -> the list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise UserError(f"--seed expects integers like 0, 0,1,2 or 0-4; got {text!r}") from None
        if last < first:
            raise UserError(f"--seed {part.strip()}: the range is reversed (write {last}-{first})")
        if last - first + 1 + len(seeds) > MAX_SEEDS:
            raise UserError(f"--seed {text}: more than {MAX_SEEDS} seeds")
        seeds.extend(range(first, last + 1))
    return seeds


def _method_options_by_method(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{method: {option: value}}`` with plain ``option = value`` entries (a config file's and
    the API's shorthand) gathered under :data:`ALL_METHODS`, like ``-O option=value``."""
    shared = {k: v for k, v in options.items() if not isinstance(v, dict)}
    out = {k.strip().lower() if k != ALL_METHODS else k: dict(v)
           for k, v in options.items() if isinstance(v, dict)}
    if shared:
        out[ALL_METHODS] = {**out.get(ALL_METHODS, {}), **shared}
    return out


@dataclass(frozen=True)
class ExecutionSettings:
    """How tasks run, whatever they compute: the settings every command that runs tasks shares
    (``mibench run``, ``mibench estimators ...``), checked.

    Attributes
    ----------
    seeds : tuple of int
        Every task runs once per seed; given as an int, a list or a text (``0-4``).
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    workers : int
        Worker processes; 0 runs tasks in this process (no time-out, no crash isolation). With
        the ``dask`` executor and no scheduler: the ``LocalCluster``'s worker count.
    timeout : float or None
        Seconds per task (loading its inputs and computing it); None (given as 0 or None) for
        no limit.
    out : str or None
        The run directory (None: the command's default).
    plugins : tuple of str
        Extra plugin modules (``--plugin``).
    executor, scheduler : str, str or None
        ``local`` (worker processes here) or ``dask`` (a Dask cluster at ``scheduler``, or a
        ``LocalCluster``). Neither changes the run directory.
    retry_failed : bool
        On resume, run the tasks whose record says ``failed`` again.
    """

    seeds: tuple[int, ...] = (0,)
    device: str = "auto"
    workers: int = 1
    timeout: float | None = DEFAULT_TIMEOUT
    out: str | None = None
    plugins: tuple[str, ...] = ()
    executor: str = "local"
    scheduler: str | None = None
    retry_failed: bool = False

    def __post_init__(self) -> None:
        for key, (flag, check) in FIELDS.items():
            if not hasattr(self, key):
                continue
            value = getattr(self, key)
            problem = check(value)
            if problem:
                raise UserError(f"{key} ({flag}) {problem}, got {value!r}")
        seeds = parse_seeds(self.seeds) if isinstance(self.seeds, str) else (
            [self.seeds] if _is_int(self.seeds) else list(self.seeds))
        if not seeds:
            raise UserError("at least one seed is needed")
        bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
        if bad:
            raise UserError(f"seeds must lie in 0 .. {MAX_SEED} (32-bit), got {bad[0]}")
        if len(set(seeds)) > MAX_SEEDS:
            raise UserError(f"{len(set(seeds))} seeds asked for; at most {MAX_SEEDS}")
        if self.scheduler and self.executor != "dask":
            raise UserError("--scheduler needs --executor dask")
        if self.executor == "dask" and self.workers == 0:
            raise UserError("--workers 0 (in-process) cannot be combined with --executor dask")
        self._set(seeds=tuple(sorted(set(seeds))), device=_parse_device(self.device),
                  timeout=None if not self.timeout else float(self.timeout),
                  out=None if self.out is None else str(self.out),
                  plugins=split_plugin_names(self.plugins))

    def execution_config(self) -> dict[str, Any]:
        """How the tasks ran, as ``run.json``'s ``config`` of an estimator benchmark states it."""
        return {"seeds": list(self.seeds), "device": self.device, "workers": self.workers,
                "timeout": self.timeout, "executor": self.executor,
                "plugins": list(self.plugins)}

    def _set(self, **values: Any) -> None:
        """Store normalised values (the dataclass is frozen once built)."""
        for key, value in values.items():
            object.__setattr__(self, key, value)


@dataclass(frozen=True)
class RunSettings(ExecutionSettings):
    """A registration benchmark request (``mibench run``), checked: the
    :class:`ExecutionSettings` and what to register.

    Attributes
    ----------
    methods : str or tuple of str
        ``"default"`` (the methods marked default), ``"all"`` (every available method) or names
        (a list, or one comma-separated string); a name may be a variant, ``nmi[bins=64]``
        (:mod:`mibench.variants`).
    dataset : str
        Dataset name; ``dataset_options`` are its options (strings from the command line are
        parsed to the option's type by the planner).
    method_options : dict
        ``{method: {option: value}}``; the key ``"*"`` (:data:`ALL_METHODS`), or a plain
        ``option: value`` entry, applies an option to every selected method that has it.
    limit : int or None
        Only the first ``limit`` pairs.
    naed_norm : str
        The NAED normaliser D (:data:`mibench.metrics.NAED_NORMS`).
    reference : str or None
        The method the report tests every other method against (None: the report's rule).
    config_file, file_options : str or None, tuple of str
        Where settings came from: the config file, and the dataset and method option names whose
        value it gave (an error about one of them names the file).
    save_transforms, save_warped : bool
        Write each task's transform as an ITK transform file, and its warped moving image
        (NIfTI for volumes, PNG for 2-D), beside its record (:mod:`mibench.export`). Outputs
        only: neither changes what is registered nor the run directory.
    """

    methods: str | tuple[str, ...] = "default"
    dataset: str = "synthetic"
    data_dir: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    limit: int | None = None
    naed_norm: str = DEFAULT_NAED_NORM
    reference: str | None = None
    config_file: str | None = None
    file_options: tuple[str, ...] = ()
    save_transforms: bool = False
    save_warped: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        methods = split_methods(self.methods) if isinstance(self.methods, str) else self.methods
        self._set(methods=tuple(normalise_method(m) for m in methods if m.strip()),
                  data_dir=None if self.data_dir is None else str(self.data_dir),
                  reference=normalise_method(self.reference) if self.reference else None,
                  dataset_options=dict(self.dataset_options),
                  method_options=_method_options_by_method(self.method_options))

    def blame_file(self, exc: UserError) -> UserError:
        """``exc`` with ``(set in FILE)`` appended when it is about an option whose value came
        from the config file; ``exc`` itself otherwise."""
        named = next((k for k in sorted(self.file_options) if f"option {k!r}" in str(exc)), None)
        if named is None or self.config_file is None:
            return exc
        return UserError(f"{exc} (set in {self.config_file})")


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """A TOML or JSON run configuration (a key per :class:`RunSettings` field), checked."""
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
    unknown = set(data) - set(FIELDS)
    if unknown:
        hints = []
        for key in sorted(map(str, unknown)):
            close = [RENAMED[key]] if key in RENAMED else difflib.get_close_matches(
                key, sorted(FIELDS), n=1)
            hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise UserError(f"{path}: unknown config keys: {', '.join(hints)}")
    for key, value in data.items():
        problem = FIELDS[key][1](value)
        if problem:
            raise UserError(f"{path}: {key} {problem}, got {value!r}")
    return data


def settings_from(config_file: str | Path | None = None, **values: Any) -> RunSettings:
    """The settings of a run: ``config_file`` (if any) overridden by ``values`` (``None`` means
    not given). ``dataset_options`` and ``method_options`` are merged option by option, and
    ``plugins`` added to the file's, so that a flag changes one option, not the whole table."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown run settings: {', '.join(sorted(unknown))}")
    base = read_settings_file(config_file) if config_file is not None else {}
    given = {k: v for k, v in values.items() if v is not None}
    for key in ("dataset_options", "method_options"):
        problem = FIELDS[key][1](given.get(key, {}))
        if problem:
            raise UserError(f"{key} ({FIELDS[key][0]}) {problem}, got {given[key]!r}")
    dataset_options = {**base.get("dataset_options", {}), **given.get("dataset_options", {})}
    file_methods = _method_options_by_method(base.get("method_options", {}))
    given_methods = _method_options_by_method(given.get("method_options", {}))
    method_options = {k: dict(v) for k, v in file_methods.items()}
    for name, opts in given_methods.items():
        method_options.setdefault(name, {}).update(opts)
    file_options = {k for k in base.get("dataset_options", {})
                    if k not in given.get("dataset_options", {})}
    file_options |= {k for name, opts in file_methods.items() for k in opts
                     if k not in given_methods.get(name, {})}
    plugins = [*split_plugin_names(base.get("plugins", ())),
               *split_plugin_names(given.get("plugins", ()))]
    merged = {**base, **given, "dataset_options": dataset_options,
              "method_options": method_options, "plugins": tuple(plugins)}
    settings = RunSettings(**merged)
    if config_file is not None:
        settings = replace(settings, config_file=str(config_file),
                           file_options=tuple(sorted(file_options)))
    return settings

