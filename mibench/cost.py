"""The cost task: how long one estimator takes, and how much memory, on images of one size.

``mibench estimators cost`` plans one :class:`CostTask` per estimator (variants included, e.g.
``mmi[bins=128]`` to vary the bins) x image side, and runs them through the same runner as
every other benchmark. A task times the estimator on two random images after a warm-up call:
the forward pass, and forward + backward where the estimator is differentiable, each the
median of ``repeats`` calls; and its peak memory above the worker's level before the call:
on CUDA the allocator's peak, on the CPU the process's resident memory sampled every
millisecond (an estimate: short peaks between samples are missed).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mibench.errors import UserError
from mibench.estimator_sets import EstimatorPlan, resolve_estimators, run_dir_for
from mibench.paths import record_path
from mibench.registry import Registry
from mibench.settings import ExecutionSettings
from mibench.tasks import TaskRecord, Workspace, note_failure, now, task_key
from mibench.usage import PeakRss
from mibench.variants import base_name

SCHEMA_VERSION = 1
#: Image sides when none are given: 64^2 to 2048^2 pixels.
DEFAULT_SIDES = (64, 128, 256, 512, 1024, 2048)
#: Timed calls per measurement (after one warm-up call); the median is kept.
DEFAULT_REPEATS = 5


@dataclass(frozen=True)
class CostTask:
    """Time estimator ``estimator`` (resolved options) on ``side`` x ``side`` images."""

    estimator: str
    estimator_params: dict[str, Any]
    side: int
    repeats: int
    seed: int

    @property
    def key(self) -> str:
        return task_key({**asdict(self), "kind": CostRecord.kind, "schema": SCHEMA_VERSION})

    @property
    def group(self) -> str:
        return self.estimator

    def record_path(self, run_dir: Path) -> Path:
        return record_path(run_dir, self.estimator, f"side{self.side}.s{self.seed}.{self.key}")

    def run(self, workspace: Workspace, on_started: Callable[[Any], None] | None = None
            ) -> CostRecord:
        return run_cost_task(self, workspace)

    def failure(self, workspace: Workspace, error: str) -> CostRecord:
        return CostRecord(self, status="failed", error=error, finished_at=now())


@dataclass
class CostRecord(TaskRecord):
    """Seconds per call (median over the repeats) forward and, where the estimator is
    differentiable, forward + backward; peak memory above the level before the calls (bytes);
    ``pixels`` = side^2."""

    kind: ClassVar[str] = "cost"
    task_type: ClassVar[type] = CostTask

    task: CostTask
    status: str
    error: str | None = None
    pixels: int = 0
    forward_s: float | None = None
    backward_s: float | None = None
    peak_bytes: int | None = None
    memory_source: str = ""
    wall_s: float | None = None
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)
    finished_at: str = ""
    schema: int = SCHEMA_VERSION



def _median_time(call: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_cost_task(task: CostTask, workspace: Workspace) -> CostRecord:
    """Warm up, then time and measure the estimator. Never raises for the estimator's failure."""
    import torch

    from mibench.callables import Estimator
    from mibench.seeds import seed_everything
    from mibench.tensors import resolve_device

    record = task.failure(workspace, "not run")
    device = resolve_device(workspace.ctx.device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    t_start = time.perf_counter()
    try:
        spec = workspace.registry.get("estimator", base_name(task.estimator))
        estimator = Estimator(spec, task.estimator_params)
        seed_everything(task.seed)
        shape = (1, 1, task.side, task.side)
        fixed = torch.rand(shape, device=device)
        moving = torch.rand(shape, device=device, requires_grad=spec.differentiable)

        def forward() -> Any:
            return estimator(fixed, moving).sum()

        def forward_backward() -> None:
            moving.grad = None
            forward().backward()

        forward()  # warm-up: imports, kernel selection, allocator growth
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        with PeakRss() as rss:
            record.forward_s = _median_time(forward, task.repeats, sync)
            if spec.differentiable:
                forward_backward()
                record.backward_s = _median_time(forward_backward, task.repeats, sync)
        if cuda:
            record.peak_bytes = int(torch.cuda.max_memory_allocated(device) - base)
            record.memory_source = "cuda allocator peak"
        else:
            record.peak_bytes = int(rss.peak - rss.base)
            record.memory_source = "process RSS, sampled every 1 ms"
        record.status, record.error = "ok", None
    except Exception as exc:
        note_failure(record, exc)
    record.pixels = task.side * task.side
    record.wall_s = time.perf_counter() - t_start
    record.device, record.finished_at = str(device), now()
    record.info["torch_threads"] = torch.get_num_threads()
    return record


@dataclass(frozen=True)
class CostSettings(ExecutionSettings):
    """``mibench estimators cost``: the :class:`ExecutionSettings`, the estimators, the image
    sides (px) and the timed calls per measurement."""

    estimators: tuple[str, ...] = ("all",)
    sides: tuple[int, ...] = DEFAULT_SIDES
    repeats: int = DEFAULT_REPEATS

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [s for s in self.sides if isinstance(s, bool) or not isinstance(s, int) or s < 8]
        if bad or not self.sides:
            raise UserError(f"sides (--sides) must be integers >= 8 (pixels), got "
                            f"{bad[0] if bad else '()'}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise UserError(f"repeats (--repeats) must be an integer >= 1, got {self.repeats!r}")


def plan_cost(registry: Registry, settings: CostSettings) -> EstimatorPlan:
    """One task per estimator x side x seed."""
    estimators = resolve_estimators(registry, settings.estimators)
    config = {"command": "estimators cost", "estimators": estimators,
              "sides": list(settings.sides), "repeats": settings.repeats,
              **settings.execution_config()}
    run_dir = run_dir_for(settings.out, "cost", {k: config[k] for k in (
        "estimators", "sides", "repeats", "seeds", "device")})
    planned = [CostTask(name, params, side, settings.repeats, seed)
               for name, params in estimators.items() for side in settings.sides
               for seed in settings.seeds]
    return EstimatorPlan(config, run_dir, planned)
