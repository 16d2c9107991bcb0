"""The landscape task: one estimator's similarity landscape around one pair's gold standard.

``mibench estimators landscape`` plans one :class:`LandscapeTask` per estimator (variants
included) x pair of a dataset with a gold standard x seed, and runs them through the same runner
as every other benchmark. A task evaluates the estimator on N random lines through the gold
standard in a normalised parameter space (Škerl, Likar and Pernuš 2006;
:mod:`mibench.assessment.landscape`, whose definitions ``docs/estimator_landscape.md`` states)
and along each parameter alone (the 1-D profiles registration papers draw), many poses per call.

The gold standard is the pair's exact transform where the dataset knows it (the synthetic
pairs' ``true_transform``), else the least-squares affine of its landmarks, whose RMS residual
(px) the record keeps: a landscape is only as sharp as its gold standard.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mibench.callables import open_dataset
from mibench.errors import UserError
from mibench.estimator_sets import EstimatorPlan, resolve_estimators, run_dir_for
from mibench.paths import record_path
from mibench.registry import Registry
from mibench.settings import ExecutionSettings
from mibench.tasks import TaskRecord, Workspace, note_failure, now, task_key
from mibench.variants import base_name

SCHEMA_VERSION = 1
#: The parameter spaces (:class:`mibench.assessment.parameter_space.ParameterSpace`).
SPACES = ("rigid", "affine")


@dataclass(frozen=True)
class LandscapeTask:
    """The landscape of an estimator (name and resolved options) around pair ``pair_id`` of a
    dataset (name and resolved options): ``lines`` random lines of ``2 * points + 1`` points
    within ``radius`` normalised px of the gold standard in the ``space`` parameters, drawn
    with ``seed``."""

    estimator: str
    estimator_params: dict[str, Any]
    dataset: str
    dataset_params: dict[str, Any]
    pair_id: str
    space: str
    lines: int
    points: int
    radius: float
    seed: int

    @property
    def key(self) -> str:
        return task_key({**asdict(self), "kind": LandscapeRecord.kind, "schema": SCHEMA_VERSION})

    @property
    def group(self) -> str:
        return self.estimator

    def record_path(self, run_dir: Path) -> Path:
        return record_path(run_dir, self.estimator, f"{self.pair_id}.s{self.seed}.{self.key}")

    def run(self, workspace: Workspace, on_started: Callable[[Any], None] | None = None
            ) -> LandscapeRecord:
        return run_landscape_task(self, workspace)

    def failure(self, workspace: Workspace, error: str) -> LandscapeRecord:
        return LandscapeRecord(self, status="failed", error=error, finished_at=now())


@dataclass
class LandscapeRecord(TaskRecord):
    """The five properties (distances in normalised px; ``do`` and ``ron`` in the measure's
    units per normalised px, for the measure turned higher-is-better), the 1-D profiles
    (physical offsets per parameter, and the values), and where the gold standard came from."""

    kind: ClassVar[str] = "landscape"
    task_type: ClassVar[type] = LandscapeTask

    task: LandscapeTask
    status: str
    error: str | None = None
    gold_source: str = ""
    gold_residual_px: float | None = None
    higher_is_better: bool = True
    acc: float | None = None
    cr: float | None = None
    nom: float | None = None
    ron: float | None = None
    do_radii: list[float] = field(default_factory=list)
    do: list[float] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    profile_offsets: list[list[float]] = field(default_factory=list)
    profile_values: list[list[float]] = field(default_factory=list)
    wall_s: float | None = None
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)
    finished_at: str = ""
    schema: int = SCHEMA_VERSION



def gold_standard(pair: Any) -> tuple[np.ndarray, str, float | None]:
    """The pair's gold-standard fixed px -> moving px matrix (working scale), where it comes
    from, and the RMS residual (moving px) of a landmark fit."""
    from mibench.assessment.landmarks import fit_affine

    if "true_transform" in pair.meta:
        return np.asarray(pair.meta["true_transform"], dtype=np.float64), "true transform", None
    if pair.fixed_landmarks is None or pair.moving_landmarks is None:
        raise ValueError(f"pair {pair.id!r} has neither a true transform nor landmarks: no "
                         "gold standard")
    k = min(len(pair.fixed_landmarks), len(pair.moving_landmarks))
    matrix, rms = fit_affine(pair.fixed_landmarks[:k], pair.moving_landmarks[:k])
    return matrix, "least-squares affine of the landmarks", float(rms)


def run_landscape_task(task: LandscapeTask, workspace: Workspace) -> LandscapeRecord:
    """Load the pair, evaluate the estimator on the lines and the profiles, compute the five
    properties. Never raises for the estimator's failure."""
    import torch

    from mibench.assessment.landscape import properties
    from mibench.assessment.parameter_space import ParameterSpace, sample_lines
    from mibench.assessment.pose_evaluation import evaluate, profiles
    from mibench.callables import Estimator
    from mibench.pairs import check_pair
    from mibench.seeds import seed_everything
    from mibench.tensors import image_to_tensor, mask_to_tensor, resolve_device

    record = task.failure(workspace, "not run")
    device = resolve_device(workspace.ctx.device)
    t0 = time.perf_counter()
    try:
        dataset = workspace.dataset(task.dataset, task.dataset_params)
        pair = check_pair(dataset.load(task.pair_id), task.pair_id)
        gold, record.gold_source, record.gold_residual_px = gold_standard(pair)
        spec = workspace.registry.get("estimator", base_name(task.estimator))
        estimator = Estimator(spec, task.estimator_params)
        record.higher_is_better = spec.higher_is_better
        fixed = image_to_tensor(pair.fixed, device)
        moving = image_to_tensor(pair.moving, device)
        if fixed.shape[1] != moving.shape[1]:  # one colour and one grey image: compare in grey
            fixed, moving = fixed.mean(1, keepdim=True), moving.mean(1, keepdim=True)
        mask = mask_to_tensor(pair.fixed_mask, device)
        space = ParameterSpace.for_image(task.space, pair.fixed.shape[:2])
        lines = sample_lines(space.dim, task.lines, task.points, task.radius, task.seed)
        seed_everything(task.seed)
        values = evaluate(estimator, fixed, moving, gold, space, lines.points, fixed_mask=mask)
        props = properties(values, lines.positions, higher_is_better=spec.higher_is_better)
        curves = profiles(estimator, fixed, moving, gold, space, extent=task.radius,
                          points_per_side=task.points, fixed_mask=mask)
        record.acc, record.cr, record.nom, record.ron = (float(props.acc), float(props.cr),
                                                         float(props.nom), float(props.ron))
        record.do_radii, record.do = props.do_radii.tolist(), props.do.tolist()
        record.parameters, record.units = list(curves.names), list(curves.units)
        record.profile_offsets = curves.offsets.tolist()
        record.profile_values = curves.values.tolist()
        record.status, record.error = "ok", None
    except Exception as exc:
        note_failure(record, exc)
    record.wall_s = time.perf_counter() - t0
    record.device, record.finished_at = str(device), now()
    record.info["torch_threads"] = torch.get_num_threads()
    return record


@dataclass(frozen=True)
class LandscapeSettings(ExecutionSettings):
    """``mibench estimators landscape``: the :class:`ExecutionSettings`, the estimators (by
    default the registration objectives: :func:`mibench.estimator_sets.resolve_estimators`), the
    dataset (with a gold standard), its options and how many pairs, and the protocol's
    sampling: the parameter space, N lines of 2M + 1 points within a radius (normalised px:
    one unit moves a point at the image's inscribed radius by about 1 px)."""

    estimators: tuple[str, ...] = ("objectives",)
    dataset: str = "synthetic"
    data_dir: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    space: str = "rigid"
    lines: int = 10
    points: int = 10
    radius: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.space not in SPACES:
            raise UserError(f"space (--space) must be one of {', '.join(SPACES)}, got "
                            f"{self.space!r}")
        for name, value, low in (("lines", self.lines, 1), ("points", self.points, 1),
                                 ("limit", self.limit, 1)):
            if name == "limit" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"{name} (--{name}) must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.radius, int | float) and 0 < self.radius < float("inf")):
            raise UserError(f"radius (--radius) must be a positive number, got {self.radius!r}")


def plan_landscape(registry: Registry, settings: LandscapeSettings) -> EstimatorPlan:
    """One task per estimator x pair (the first ``limit``) x seed."""
    estimators = resolve_estimators(registry, settings.estimators)
    opened = open_dataset(registry.get("dataset", settings.dataset), settings.data_dir,
                          settings.dataset_options, from_text=True)
    pairs = list(opened.dataset.pairs())[: settings.limit]
    if not pairs:
        raise UserError(f"dataset {opened.name!r} has no pairs")
    config = {"command": "estimators landscape", "estimators": estimators,
              "dataset": opened.name, "dataset_params": opened.params,
              "data_dir": str(opened.data_dir) if opened.data_dir else None,
              "limit": settings.limit, "space": settings.space, "lines": settings.lines,
              "points": settings.points, "radius": float(settings.radius),
              **settings.execution_config()}
    run_dir = run_dir_for(settings.out, "landscape", {k: config[k] for k in (
        "estimators", "dataset", "dataset_params", "limit", "space", "lines", "points",
        "radius", "seeds")})
    planned = [LandscapeTask(name, params, opened.name, opened.params, p.id, settings.space,
                             settings.lines, settings.points, float(settings.radius), seed)
               for name, params in estimators.items() for p in pairs
               for seed in settings.seeds]
    return EstimatorPlan(config, run_dir, planned, opened)
