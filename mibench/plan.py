"""From settings to tasks: resolve a :class:`~mibench.settings.RunSettings` against the registry.

:func:`plan_run` checks every name and option, fills in defaults, opens the dataset, lists its
pairs and makes one :class:`~mibench.registration.RegistrationTask` per method x pair x seed
(one seed only for a method that does not use it), in the order :func:`task_order` gives. Its
:class:`RunPlan` holds the resolved configuration that ``run.json`` records.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mibench.callables import OpenDataset, open_dataset
from mibench.errors import UserError, as_user_error
from mibench.jsonio import canonical_json
from mibench.pairs import PairInfo
from mibench.paths import default_run_dir
from mibench.registration import RegistrationTask
from mibench.registry import Registry
from mibench.settings import ALL_METHODS, RunSettings
from mibench.specs import MethodSpec
from mibench.variants import base_name, parse_variant, variant_name

#: Pair ids become file names of records: nothing that could escape the run directory.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class RunPlan:
    """A resolved run: the settings, the configuration ``run.json`` records (names and options
    resolved), the run directory, every task, the methods ``default``/``all`` left out (with
    why) and the open dataset."""

    settings: RunSettings
    config: dict[str, Any]
    run_dir: Path
    tasks: list[RegistrationTask]
    skipped_methods: dict[str, str]
    dataset: OpenDataset


def dims_problem(spec: MethodSpec, dims: tuple[int, ...]) -> str | None:
    """Why a method cannot register a dataset whose pairs have one of ``dims`` (None if it
    can register at least one of them)."""
    if set(spec.dims) & set(dims):
        return None
    what = " or ".join(f"{d}-D {'volumes' if d == 3 else 'images'}" for d in dims)
    return f"does not register {what} (its dims are {spec.dims})"


def select_methods(registry: Registry, methods: tuple[str, ...], dims: tuple[int, ...] = (2,)
                   ) -> tuple[list[MethodSpec], dict[str, str]]:
    """The specs of ``("all",)`` or ``("default",)``: every available method (or every default
    one) that registers pairs of the dataset's ``dims``, and those left out because they cannot
    run here or on these pairs (name -> why)."""
    skipped: dict[str, str] = {}
    chosen = []
    for spec in registry.specs("method").values():
        if methods == ("default",) and not spec.default:
            continue
        why = spec.unavailable_reason() or dims_problem(spec, dims)
        if why:
            skipped[spec.name] = why
        else:
            chosen.append(spec)
    if not chosen:
        raise UserError(f"no {methods[0]} method is available here")
    return chosen, skipped


@dataclass(frozen=True)
class _Entry:
    """One method as the user named it: its spec, the options in its brackets, the text."""

    spec: MethodSpec
    options: dict[str, str]
    text: str


def _entries(registry: Registry, methods: tuple[str, ...], dims: tuple[int, ...]
             ) -> tuple[list[_Entry], dict[str, str]]:
    if methods in (("all",), ("default",)):
        specs, skipped = select_methods(registry, methods, dims)
        return [_Entry(s, {}, s.name) for s in specs], skipped
    entries = []
    for text in dict.fromkeys(methods):
        base, options = parse_variant(text)
        spec = registry.get("method", base)
        why = spec.unavailable_reason()
        if why:
            raise UserError(f"method {spec.name!r} is unavailable: {why}")
        why = dims_problem(spec, dims)
        if why:
            raise UserError(f"method {spec.name!r} {why}, which this dataset holds")
        entries.append(_Entry(spec, options, text))
    if not entries:
        raise UserError("no method selected")
    return entries, {}


def _variant(entry: _Entry, params: dict[str, Any]) -> str:
    """The canonical name of an entry whose resolved options are ``params``."""
    return variant_name(entry.spec.name, {k: params[k] for k in entry.options},
                        entry.spec.defaults())


def _resolve_methods(registry: Registry, settings: RunSettings, dims: tuple[int, ...] = (2,)
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``{canonical method name: resolved options}`` and the methods left out. A method's
    options are: ``-O option=...`` (every method that has it), then ``-O name.option=...``
    (the plain method ``name`` only), then a variant's own brackets."""
    entries, skipped = _entries(registry, settings.methods, dims)
    options = settings.method_options
    unknown = set(options) - {e.spec.name for e in entries if not e.options} - {ALL_METHODS}
    if unknown:
        hint = (" (a variant's options go in its brackets: nmi[bins=64])"
                if any("[" in u for u in unknown) else "")
        raise UserError(f"options given for methods not selected: {', '.join(sorted(unknown))}"
                        f"{hint}")
    for key in options.get(ALL_METHODS, {}):
        if not any(key in {p.name for p in e.spec.params} for e in entries):
            raise UserError(f"no selected method has an option {key!r}")
    planned: dict[str, dict[str, Any]] = {}
    given_as: dict[str, str] = {}
    for entry in entries:
        own = {} if entry.options else dict(options.get(entry.spec.name, {}))
        shared = {k: v for k, v in options.get(ALL_METHODS, {}).items()
                  if k in {p.name for p in entry.spec.params} and k not in own}
        params = entry.spec.resolve({**shared, **own, **entry.options}, from_text=True)
        name = _variant(entry, params)
        if name in planned:
            raise UserError(f"method {name!r} is given twice (as {given_as[name]!r} and "
                            f"{entry.text!r})")
        planned[name], given_as[name] = params, entry.text
    return planned, skipped


def _reference(registry: Registry, text: str | None, planned: dict[str, Any]) -> str | None:
    """``--reference`` by its canonical name (a variant spelt any way names the same method)."""
    if not text:
        return None
    base, options = parse_variant(text)
    name = base
    if options:
        spec = registry.get("method", base)
        name = _variant(_Entry(spec, options, text), spec.resolve(options, from_text=True))
    if name not in planned:
        raise UserError(f"--reference {text!r} is not one of the selected methods "
                        f"({', '.join(planned)})")
    return name


def _pairs(opened: OpenDataset, limit: int | None) -> list[PairInfo]:
    name = opened.name
    with as_user_error(opened.spec):  # the dataset's own checks of its files
        pairs = list(opened.dataset.pairs())
    odd = next((p for p in pairs if not isinstance(p, PairInfo)), None)
    if odd is not None:
        raise UserError(f"dataset {name!r}: pairs() must give PairInfo objects, got a "
                        f"{type(odd).__name__} ({odd!r:.60})")
    pairs = pairs[:limit] if limit is not None else pairs
    if not pairs:
        where = f" in {opened.data_dir}" if opened.data_dir else ""
        raise UserError(f"dataset {name!r} has no pairs{where}")
    for p in pairs:
        if not _SAFE_ID.fullmatch(p.id):
            raise UserError(f"dataset {name!r} gave the pair id {p.id!r}; ids may only "
                            "contain letters, digits, '.', '_' and '-', and must start with a "
                            "letter or digit")
    duplicates = [pid for pid, n in Counter(p.id for p in pairs).items() if n > 1]
    if duplicates:
        raise UserError(f"dataset {name!r} has duplicate pair ids: "
                        f"{', '.join(sorted(duplicates))}")
    return pairs


def run_digest(config: dict[str, Any]) -> str:
    """8 hex digits naming a configuration's default run directory: what the tasks and their
    scores depend on (not the device, executor or workers)."""
    identity = {k: config[k] for k in
                ("dataset", "dataset_params", "data_dir", "methods", "seeds", "limit")}
    # Hashed under its first name, so that a rerun of an older run's command finds its directory.
    identity["normalisation"] = config["naed_norm"]
    return hashlib.sha1(canonical_json(identity).encode()).hexdigest()[:8]


def plan_run(registry: Registry, settings: RunSettings) -> RunPlan:
    """Resolve ``settings``: check names and options, open the dataset, make the tasks."""
    dspec = registry.get("dataset", settings.dataset)
    try:
        method_params, skipped = _resolve_methods(registry, settings, dspec.dims)
        opened = open_dataset(dspec, settings.data_dir, settings.dataset_options,
                              from_text=True)
    except UserError as exc:
        raise settings.blame_file(exc) from None
    pairs = _pairs(opened, settings.limit)
    reference = _reference(registry, settings.reference, method_params)
    config = {
        "dataset": dspec.name,
        "dataset_params": opened.params,
        "data_dir": str(opened.data_dir) if opened.data_dir else None,
        "methods": method_params,
        "seeds": list(settings.seeds),
        "limit": settings.limit,
        "naed_norm": settings.naed_norm,
        "device": settings.device,
        "workers": settings.workers,
        "timeout": settings.timeout,
        "executor": settings.executor,
        "scheduler": settings.scheduler,
        "reference": reference,
        "plugins": list(settings.plugins),
        "skipped_methods": skipped,
    }
    run_dir = Path(settings.out) if settings.out else default_run_dir(dspec.name,
                                                                      run_digest(config))
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: is a file; the run directory (--out) must be a directory")
    single = single_seed_methods(registry, method_params)
    config["single_seed_methods"] = single
    tasks = [RegistrationTask(name, method_params[name], dspec.name, opened.params, pair, seed)
             for name, pair, seed in task_order(list(method_params), [p.id for p in pairs],
                                                list(settings.seeds), set(single))]
    return RunPlan(settings, config, run_dir, tasks, skipped, opened)


def single_seed_methods(registry: Registry, method_params: dict[str, dict[str, Any]]
                        ) -> list[str]:
    """The planned methods that do not use the seed with their options
    (:meth:`~mibench.specs.MethodSpec.seeded`): run once, with the first seed."""
    return [name for name, params in method_params.items()
            if not registry.get("method", base_name(name)).seeded(params)]


def task_order(methods: list[str], pairs: list[str], seeds: list[int],
               single_seed: set[str] = frozenset()) -> list[tuple[str, str, int]]:
    """``(method, pair, seed)`` in the order they run: pair by pair, every method on each pair,
    the methods' order rotated by one from one (pair, seed) to the next.

    Whatever slows the machine for a while (another job, a thermal throttle) then falls on every
    method alike instead of on whichever ran at the time; and the progress bar's first tasks are
    a sample of every method. Methods in ``single_seed`` run with the first seed only. The order
    is no part of a task's identity: a resumed run finds its records whatever order made them.
    """
    order = []
    step = 0
    for pair in pairs:
        for i, seed in enumerate(seeds):
            k = step % len(methods) if methods else 0
            step += 1
            for name in methods[k:] + methods[:k]:
                if i == 0 or name not in single_seed:
                    order.append((name, pair, seed))
    return order
