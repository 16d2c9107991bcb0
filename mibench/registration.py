"""The registration task: register one pair with one method and seed, then score the result.

A :class:`RegistrationTask` is what the runner executes (the :class:`mibench.tasks.Task`
protocol); its :class:`Record` is what it leaves in the run directory. Scoring follows the
failure policy (the README's *Conventions*): a task that raises, returns NaN or a singular
transform, exceeds its time-out or kills its worker is recorded as ``failed`` and scored with
the pair's initial error, so that every method has a value on every pair and paired tests stay
paired. :func:`failed_record` is the one place such a record is built.
"""

from __future__ import annotations

import gc
import hashlib
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mibench.jsonio import canonical_json
from mibench.metrics import (
    DEFAULT_NAED_NORM,
    landmark_errors,
    norm_length,
    pair_scores,
    start_transform,
)
from mibench.pairs import Pair, check_pair
from mibench.paths import BSPLINE_SUFFIX, beside_record, record_path
from mibench.tasks import TaskRecord, WorkerContext, Workspace, failure_text, now
from mibench.transform import MatrixTransform, Transform
from mibench.usage import MIB, Usage, UsageMeter
from mibench.variants import base_name

#: The record fields that measure the machine rather than the result: they differ between two
#: runs of the same task (compare records without them).
USAGE_FIELDS = ("wall_s", "device_s", "cpu_s", "peak_rss_mb", "peak_gpu_mb", "load_cpus", "cpus",
                "contended")

#: Part of every task key: bump it only when the meaning of a record changes (it makes every
#: existing record a record of another task, so nothing is resumed across the change).
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RegistrationTask:
    """Register pair ``pair_id`` of a dataset (name and resolved options) with a method (name
    and resolved options) and a seed. ``method`` may name a variant, ``nmi[bins=64]``
    (:mod:`mibench.variants`)."""

    method: str
    method_params: dict[str, Any]
    dataset: str
    dataset_params: dict[str, Any]
    pair_id: str
    seed: int

    @property
    def group(self) -> str:
        """The method: records are filed, and failures tallied, by method."""
        return self.method

    @property
    def key(self) -> str:
        """16 hex digits of SHA-1 over exactly the fields above (and the schema version)."""
        ident = {"method": self.method, "method_params": self.method_params,
                 "dataset": self.dataset, "dataset_params": self.dataset_params,
                 "pair": self.pair_id, "seed": self.seed, "schema": SCHEMA_VERSION}
        return hashlib.sha1(canonical_json(ident).encode()).hexdigest()[:16]

    def record_path(self, run_dir: Path) -> Path:
        """``records/<method>/<pair>.s<seed>.<key>.json``."""
        return record_path(run_dir, self.method, f"{self.pair_id}.s{self.seed}.{self.key}")

    def transform_path(self, run_dir: Path) -> Path:
        """Where a non-matrix result (a B-spline) is stored beside the record:
        ``records/<method>/<pair>.s<seed>.<key>.bspline.npz``."""
        return beside_record(self.record_path(run_dir), BSPLINE_SUFFIX)

    def run(self, workspace: Workspace, on_started: Callable[[Record], None] | None = None
            ) -> Record:
        return run_registration(self, workspace, on_started)

    def failure(self, workspace: Workspace, error: str) -> Record:
        """The failed record of this task when its worker died before reporting: the pair is
        loaded here to score it with its initial error (unscored if even that fails)."""
        try:
            pair = self.load_pair(workspace)
        except Exception as exc:
            return failed_record(self, f"{error}; loading pair failed: {exc}",
                                 naed_norm=workspace.ctx.naed_norm)
        return failed_record(self, error, naed_norm=workspace.ctx.naed_norm, pair=pair)

    def load_pair(self, workspace: Workspace) -> Pair:
        """The task's pair, loaded and checked against the conventions (:func:`check_pair`)."""
        dataset = workspace.dataset(self.dataset, self.dataset_params)
        return check_pair(dataset.load(self.pair_id), self.pair_id)


@dataclass
class Record(TaskRecord):
    """The outcome of one :class:`RegistrationTask`.

    ``status`` is ``ok`` or ``failed`` (exception, time-out, NaN, singular transform, worker
    crash; ``error`` says which). A failed pair is scored with its initial error
    (``landmark_errors == initial_errors``): the errors before registration, at the pixel
    identity, or at the world identity for a volume whose two geometries are known
    (:func:`mibench.metrics.start_transform`). ``scored`` is False for pairs without fixed
    landmarks (registered, not scored). ``naed_norm`` names the NAED normaliser D and
    ``norm_length`` is its value.

    Units (``CONTRACTS.md``, *Volumes (3-D) and physical space*): ``unit`` is ``"px"`` when the
    errors are in native pixels (voxels) of the fixed image, which is the case for every pair
    without a fixed-image geometry and for records written before the field existed; otherwise
    it is the geometry's unit (``"mm"`` for volumes, ``"um"`` for histology with a pixel size).
    ``landmark_errors``, ``initial_errors``, ``metrics`` and ``norm_length`` are in ``unit``
    (NAED and rTRE are ratios of two lengths in it); ``voxel_metrics`` then holds the same
    metrics in native voxels (NAED over the voxel diagonal), and is None when ``unit`` is
    ``"px"`` or the pair is not scored. ``warped_moving_landmarks`` are always native pixels
    (voxels) of the fixed image, ``(x, y[, z])``.

    Deformation quality (:func:`deformation_metrics`): a task whose transform is not a matrix
    (a B-spline) also has ``folding`` (share of fixed pixels with ``det J <= 0``),
    ``sd_log_jacobian`` (Learn2Reg's ``std(log(clip(det J + 3)))``), ``sd_log_jacobian_raw``
    (the same without the shift), ``jacobian_min`` and ``jacobian_max`` in ``metrics`` (and in
    ``voxel_metrics`` when that exists): over the fixed mask (every pixel without one), at
    working resolution, dimensionless. Matrix results leave them out: an affine's ``det J`` is
    one constant (no folding unless it reflects, SD 0), so they would say nothing, and the
    records of affine methods stay as they were. Such a transform is stored in a file beside the
    record (:meth:`RegistrationTask.transform_path`), which ``transform`` references by name;
    read it with ``transform_from_dict(record.transform, folder=<the record's folder>)``.

    What the registration used (:mod:`mibench.usage`; None in records written before it was
    measured): ``wall_s`` is the registration alone, in seconds; ``device_s`` the
    CUDA-synchronised time on GPU (None on CPU); ``cpu_s`` the worker's CPU time (user + system,
    every thread); ``peak_rss_mb`` the worker's peak resident memory and ``peak_gpu_mb`` the
    CUDA allocator's peak (None on CPU), in MiB; ``load_cpus`` how many CPUs other processes
    kept busy meanwhile, of the ``cpus`` the worker may use; ``contended`` whether the task was
    starved of CPU by them (its wall time then measures the machine more than the method).

    On disk (:meth:`to_dict`) a record is one flat JSON object: the task's fields and ``key``
    first, then the outcome. Registration records carry no ``kind`` key (they came first);
    records of other kinds of task do.
    """

    kind: ClassVar[str] = "registration"
    stores_kind: ClassVar[bool] = False
    task_type: ClassVar[type] = RegistrationTask

    task: RegistrationTask
    status: str
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    transform: dict[str, Any] | None = None
    scored: bool = False
    landmark_errors: list[float] = field(default_factory=list)
    initial_errors: list[float] = field(default_factory=list)
    warped_moving_landmarks: list[list[float]] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    naed_norm: str = DEFAULT_NAED_NORM
    norm_length: float | None = None
    unit: str = "px"
    voxel_metrics: dict[str, float] | None = None
    wall_s: float | None = None
    device_s: float | None = None
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    load_cpus: float | None = None
    cpus: int | None = None
    contended: bool | None = None
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)
    finished_at: str = ""
    schema: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        """A record from its JSON object; one written before the NAED normaliser was called
        ``naed_norm`` (``normalisation``) is read as such."""
        data = dict(data)
        if "normalisation" in data and "naed_norm" not in data:
            data["naed_norm"] = data.pop("normalisation")
        return super().from_dict(data)


# --------------------------------------------------------------------------- scoring

#: The per-task deformation statistics of a non-matrix transform, in record ``metrics``.
DEFORMATION_METRICS = ("folding", "sd_log_jacobian", "sd_log_jacobian_raw", "jacobian_min",
                       "jacobian_max")


def deformation_metrics(transform: Transform, pair: Pair) -> dict[str, float] | None:
    """Learn2Reg's deformation statistics of a non-matrix result on the pair's fixed grid.

    ``det J`` of the fixed -> moving mapping on the working fixed image's pixel grid
    (:func:`mibench.deformation.jacobian_determinant`, finite differences of 1 px), then
    :func:`mibench.deformation.deformation_stats` over the fixed mask (all pixels when the pair
    has none). None for a :class:`MatrixTransform` (constant ``det J`` for an affine; see
    :class:`Record`). ``det J`` is invariant under a common rescaling of both images, so the
    working scale does not change it.
    """
    if isinstance(transform, MatrixTransform) or not hasattr(transform, "fixed_to_moving"):
        return None
    from mibench.deformation import deformation_stats, jacobian_determinant

    shape = tuple(int(s) for s in pair.fixed.shape[:pair.ndim])
    det = jacobian_determinant(transform, shape)
    mask = pair.fixed_mask
    if mask is not None and not np.asarray(mask).any():
        mask = None  # an empty mask would leave nothing: measure the whole image
    return deformation_stats(det, mask)


def _score(task: RegistrationTask, pair: Pair, transform: Transform | None, error: str | None,
           naed_norm: str, device: str, transform_file: Path | None = None) -> Record:
    if error is None and transform is None:
        error = "method returned no transform"
    # MatrixTransform, BSplineTransform and any plugin transform that says it is invalid.
    if error is None and not getattr(transform, "is_valid", True):
        error = ("singular or non-finite transform" if isinstance(transform, MatrixTransform)
                 else "non-finite transform")
    geometry = pair.fixed_geometry
    record = Record(task, status="ok", meta=dict(pair.meta), naed_norm=naed_norm, device=device,
                    finished_at=now(), unit="px" if geometry is None else geometry.unit)
    mov = pair.moving_landmarks
    if error is None and mov is not None and len(mov):
        try:
            warped = transform.moving_to_fixed(mov)
        except Exception as exc:  # a broken transform is the method's failure, not ours
            error = f"mapping landmarks failed: {type(exc).__name__}: {exc}"
        else:
            if not np.isfinite(warped).all():
                error = "transform maps landmarks to non-finite points"
            else:
                record.warped_moving_landmarks = (warped * pair.native_scale).tolist()
    deformation = None
    if error is None:
        record.transform = _transform_dict(transform, transform_file)
        deformation = deformation_metrics(transform, pair)
    else:
        record.status, record.error = "failed", error
        record.warped_moving_landmarks = None
    if pair.fixed_landmarks is not None and mov is not None and len(mov):
        k = min(len(pair.fixed_landmarks), len(mov))
        f, m = pair.fixed_landmarks[:k], mov[:k]
        failed = record.status == "failed"
        # Before registration: the pixel identity, or the world identity of a volume whose two
        # geometries are known (where every method starts, and what `identity` returns).
        start = start_transform(pair.ndim, geometry, pair.moving_geometry)
        initial = landmark_errors(start, f, m, pair.native_scale)
        errors = initial if failed else landmark_errors(transform, f, m, pair.native_scale)
        shape = pair.native_fixed_shape
        length = norm_length(shape, naed_norm)
        scores = pair_scores(errors, initial, length, norm_length(shape, "diagonal"))
        if geometry is not None:
            # The geometry describes the image as given (working scale), so lengths in its
            # unit are taken on that image's shape and need no native scale.
            record.voxel_metrics = scores
            working = pair.fixed.shape[:pair.ndim]
            initial = landmark_errors(start, f, m, geometry=geometry)
            errors = initial if failed else landmark_errors(transform, f, m, geometry=geometry)
            length = norm_length(working, naed_norm, geometry)
            scores = pair_scores(errors, initial, length,
                                 norm_length(working, "diagonal", geometry))
        record.scored = True
        record.norm_length = length
        record.landmark_errors = errors.tolist()
        record.initial_errors = initial.tolist()
        record.metrics = scores
    if deformation is not None:
        # Dimensionless: the same in every unit (also in the voxel metrics, when there).
        record.metrics = {**record.metrics, **deformation}
        if record.voxel_metrics is not None:
            record.voxel_metrics = {**record.voxel_metrics, **deformation}
    return record


def _transform_dict(transform: Transform, transform_file: Path | None) -> dict[str, Any]:
    """``transform.to_dict()``, after saving a non-matrix transform to ``transform_file``
    (beside its record) so that the record references the file. Without a file (no run
    directory: nothing is written) its arrays are embedded in the record."""
    if not hasattr(transform, "save") or isinstance(transform, MatrixTransform):
        return transform.to_dict()
    if transform_file is not None:
        Path(transform_file).parent.mkdir(parents=True, exist_ok=True)
        transform.save(transform_file)
        return transform.to_dict()
    try:
        return transform.to_dict()
    except ValueError:  # too large to embed unasked: no folder to save it in, so embed
        return transform.to_dict(embed=True)


def score_record(task: RegistrationTask, pair: Pair, transform: Transform | None, *,
                 error: str | None, naed_norm: str, device: str = "cpu",
                 transform_file: Path | None = None) -> Record:
    """Score one task's outcome per the failure policy; never raises.

    ``error`` not None marks the task failed: it is scored as if the identity had been returned
    (its initial error). A transform that is singular, non-finite (``is_valid`` False) or maps
    a landmark to a non-finite point also fails the task. Should scoring itself raise (a
    transform or a pair that nothing caught earlier), the task fails unscored: one task fails,
    the run goes on. ``transform_file``: where a successful non-matrix transform is saved
    (:meth:`RegistrationTask.transform_path`) before the record references it; None embeds it.
    """
    try:
        return _score(task, pair, transform, error, naed_norm, device, transform_file)
    except Exception as exc:
        why = f"scoring failed: {type(exc).__name__}: {exc}".splitlines()[0]
        return failed_record(task, f"{error}; {why}" if error else why, naed_norm=naed_norm)


def failed_record(task: RegistrationTask, error: str, *, naed_norm: str,
                  pair: Pair | None = None, device: str = "cpu") -> Record:
    """The record of a failed task: scored with the pair's initial error when the pair is
    loaded (in the pair's unit, as :func:`score_record` does), unscored when it could not even
    be loaded (then ``unit`` is ``"px"``: the record holds no length)."""
    if pair is not None:
        return score_record(task, pair, None, error=error, naed_norm=naed_norm, device=device)
    return Record(task, status="failed", error=error, naed_norm=naed_norm, finished_at=now())


# --------------------------------------------------------------------------- running

def oom_message(exc: BaseException, device: str) -> str:
    """One line for a CUDA out-of-memory error: where, torch's own figures, and what to try."""
    detail = str(exc).splitlines()[0] if str(exc) else ""
    detail = detail.removeprefix("CUDA out of memory.").strip()
    where = device if device.startswith("cuda") else "cuda"
    inner = f" ({detail})" if detail else ""
    return f"CUDA out of memory on {where}{inner}; try a smaller size or --workers 1"


def _free_cuda_cache() -> None:
    import torch

    # The failed method's tensors are garbage once its frames are gone: collect them before
    # handing the cached blocks back, so that the next task starts with the device's memory.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_registration(task: RegistrationTask, workspace: Workspace,
                     on_started: Callable[[Record], None] | None = None) -> Record:
    """Load the pair, register it (timed), score it. Never raises for a method's failure.

    ``on_started`` receives a provisional failed record (scored with the initial error) before
    registration starts. On CUDA the timed region is bracketed by ``torch.cuda.synchronize``
    and also measured with CUDA events (``device_s``). A CUDA out-of-memory error fails this
    task only, with a message saying so (:func:`oom_message`), and the device's cache is freed
    for the next task.
    """
    import torch

    from mibench.callables import Method
    from mibench.seeds import seed_everything
    from mibench.tensors import image_to_tensor, mask_to_tensor, resolve_device

    ctx = workspace.ctx
    try:
        pair = task.load_pair(workspace)
    except Exception as exc:
        return failed_record(task, f"loading pair failed: {type(exc).__name__}: {exc}",
                             naed_norm=ctx.naed_norm)
    device = resolve_device(ctx.device)
    cuda = device.type == "cuda"
    if cuda:
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)  # libraries that allocate on "the" device use this one
    label = str(device)
    if on_started is not None:
        on_started(failed_record(task, "worker did not finish", naed_norm=ctx.naed_norm,
                                 pair=pair, device=label))
    transform, info, error, device_s, oom = None, {}, None, None, False
    wall: float | None = None
    meter: UsageMeter | None = None
    peak_gpu: float | None = None
    try:
        spec = workspace.registry.get("method", base_name(task.method))
        method = Method(spec, task.method_params, device)
        method.warm_up()
        nd = pair.ndim
        fixed = image_to_tensor(pair.fixed, device, ndim=nd)
        moving = image_to_tensor(pair.moving, device, ndim=nd)
        fmask = mask_to_tensor(pair.fixed_mask, device, ndim=nd)
        mmask = mask_to_tensor(pair.moving_mask, device, ndim=nd)
        seed_everything(task.seed)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            start_evt = torch.cuda.Event(enable_timing=True)
            end_evt = torch.cuda.Event(enable_timing=True)
            start_evt.record()
        meter = UsageMeter(torch.get_num_threads())
        t0 = time.perf_counter()
        try:
            with meter:
                out = method(fixed, moving, fixed_mask=fmask, moving_mask=mmask, seed=task.seed,
                             fixed_geometry=pair.fixed_geometry,
                             moving_geometry=pair.moving_geometry, ndim=nd)
                transform, info = out.transform, out.info
        finally:
            # Timed even when the method fails, so that its record says how long it ran.
            if cuda:
                end_evt.record()
                torch.cuda.synchronize(device)
                device_s = start_evt.elapsed_time(end_evt) / 1000.0
                peak_gpu = torch.cuda.max_memory_allocated(device) / MIB
            wall = time.perf_counter() - t0
    except Exception as exc:
        oom = isinstance(exc, torch.cuda.OutOfMemoryError)
        if oom:
            error = oom_message(exc, label)
        else:
            error = failure_text(exc)
        info = {"traceback": traceback.format_exc(limit=20)}
        del exc
    fixed = moving = fmask = mmask = method = None  # noqa: F841 -- release device memory now
    if oom:
        _free_cuda_cache()
    record = score_record(task, pair, transform, error=error, naed_norm=ctx.naed_norm,
                          device=label, transform_file=task.transform_path(Path(ctx.run_dir))
                          if ctx.run_dir else None)
    if transform is not None and ctx.run_dir and (ctx.save_transforms or ctx.save_warped):
        info = {**info, **_export(task, ctx, pair, transform)}
    # CPU results can depend on how float32 reductions are split over threads (and an optimiser
    # can carry a last-digit difference far): each record says how many it ran with.
    info = {**info, "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    record.wall_s, record.device_s, record.info = wall, device_s, info
    record.peak_gpu_mb = None if peak_gpu is None else round(peak_gpu, 1)
    if meter is not None and meter.usage is not None:
        _note_usage(record, meter.usage)
    return record


def _export(task: RegistrationTask, ctx: WorkerContext, pair: Pair, transform: Transform
            ) -> dict[str, Any]:
    """Write the transform file and the warped moving image beside the record; their names
    go to the record's ``info["outputs"]``. A failed export (a full disk, say) is noted in
    ``info["export_error"]`` and does not fail the registration."""
    from mibench.export import write_task_outputs

    try:
        return {"outputs": write_task_outputs(
            task.record_path(Path(ctx.run_dir)), pair, transform,
            transforms=ctx.save_transforms, warped=ctx.save_warped)}
    except Exception as exc:
        return {"export_error": failure_text(exc)}


def _note_usage(record: Record, usage: Usage) -> None:
    """Copy what the task used into its record, rounded to what the counters resolve."""
    record.cpu_s = round(usage.cpu_s, 3)
    record.peak_rss_mb = round(usage.peak_rss_mb, 1)
    record.load_cpus = None if usage.load_cpus is None else round(usage.load_cpus, 2)
    record.cpus = usage.cpus
    record.contended = usage.contended
