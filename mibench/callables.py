"""Plugins bound to their options: ready-to-call estimators and methods, and open datasets.

These are what ``mibench.estimator(...)`` and ``mibench.method(...)`` return, and what the runner
calls, so the Python API and a benchmark run go through one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mibench.errors import UserError, as_user_error, contract_error
from mibench.seeds import MAX_SEED, is_seed
from mibench.specs import DatasetSpec, EstimatorSpec, MethodSpec
from mibench.transform import RegistrationOutput, Transform


@dataclass
class Estimator:
    """A similarity measure with its options fixed.

    Call it with two ``(B, C, H, W)`` image batches or two ``(B, C, D, H, W)`` volume batches
    (tensors; returns a ``(B,)`` tensor), or with two numpy arrays (returns a float): ``(H, W)``
    / ``(H, W, C)`` images, or, with ``ndim=3``, ``(D, H, W)`` / ``(D, H, W, C)`` volumes (a 3-D
    array alone could be either, so volumes as numpy arrays need the caller to say so). The mask
    has the images' layout with one channel. ``higher_is_better`` tells the direction of the
    value; ``spec.dims`` says whether the estimator scores volumes (``3`` in it).
    """

    spec: EstimatorSpec
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def higher_is_better(self) -> bool:
        return self.spec.higher_is_better

    def __call__(self, fixed: Any, moving: Any, mask: Any = None, *, ndim: int | None = None):
        """Score ``moving`` against ``fixed``.

        Parameters
        ----------
        fixed, moving : Tensor or numpy array
            Tensors ``(B, C, H, W)`` or ``(B, C, D, H, W)``, both the same; or numpy arrays
            ``(H, W[, C])``, or ``(D, H, W[, C])`` with ``ndim=3``.
        mask : bool array or tensor, optional
            Pixels (voxels) to score: ``(H, W)`` / ``(D, H, W)`` for numpy images, ``(B, 1, ...)``
            or ``(1, 1, ...)`` (one mask for the whole batch) for tensors.
        ndim : {2, 3}, optional
            Spatial dimensionality: 2 for images, 3 for volumes. Numpy arrays default to 2;
            tensors are read from their number of dimensions (4 or 5), and a given ``ndim``
            must agree.

        Returns
        -------
        Tensor ``(B,)`` for tensors, float for numpy arrays.
        """
        from mibench.tensors import image_to_tensor, mask_to_tensor

        if ndim not in (None, 2, 3):
            raise ValueError(f"ndim must be 2 (images) or 3 (volumes), got {ndim!r}")
        fn = self.spec.load()
        if isinstance(fixed, np.ndarray) or isinstance(moving, np.ndarray):
            dims = ndim or 2
            f = image_to_tensor(fixed, ndim=dims)
            m = image_to_tensor(moving, ndim=dims)
            if f.shape != m.shape:
                raise ValueError(
                    f"fixed and moving images differ in shape: {tuple(np.shape(fixed))} vs "
                    f"{tuple(np.shape(moving))}"
                )
            _check_inputs(f, m)
            self._check_dims(f, ndim)
            mask_t = mask_to_tensor(mask, ndim=dims)
            value = self._checked(fn(f, m, mask=mask_t, **self.params), f, m)
            return float(value[0])
        _check_inputs(fixed, moving)
        dims = self._check_dims(fixed, ndim)
        mask_t = mask_to_tensor(mask, fixed.device, ndim=dims) if mask is not None else None
        if mask_t is not None and mask_t.shape[0] == 1 and fixed.shape[0] == moving.shape[0] > 1:
            # One mask for the whole batch: every estimator then indexes it per item.
            mask_t = mask_t.expand(fixed.shape[0], *mask_t.shape[1:])
        return self._checked(fn(fixed, moving, mask=mask_t, **self.params), fixed, moving)

    def _check_dims(self, fixed: Any, ndim: int | None) -> int:
        """The spatial dimensionality of a checked pair (``fixed`` is ``(B, C, ...)``), after a
        ``ValueError`` if it disagrees with ``ndim`` or the estimator does not score it (its
        spec's ``dims``): a 2-D estimator given a volume would otherwise fail inside its own
        code, or score it as something else."""
        dims = fixed.ndim - 2
        if ndim is not None and ndim != dims:
            raise ValueError(f"ndim={ndim} but the tensors are {tuple(fixed.shape)}: "
                             f"{dims}-D (B, C, {'D, H, W' if dims == 3 else 'H, W'})")
        if dims not in self.spec.dims:
            what = "volumes (3-D)" if dims == 3 else "images (2-D)"
            raise ValueError(f"estimator {self.name!r} does not score {what}: it declares "
                             f"dims={tuple(self.spec.dims)}")
        return dims

    def _checked(self, value: Any, fixed: Any, moving: Any = None) -> Any:
        """The estimator's value if it keeps the contract (a tensor ``(B,)`` on the inputs'
        device, ``B`` the larger batch: a batch of 1 is broadcast against the other), else
        :func:`~mibench.errors.contract_error`'s :class:`UserError` naming the estimator and its
        plugin: a scalar, a per-pixel map or a Python float would otherwise be reduced, indexed
        or crash far from the plugin's code. Shape and device are metadata, so this never
        synchronises a GPU."""
        import torch

        batched = (4, 5)  # (B, C, H, W) images and (B, C, D, H, W) volumes
        batch = fixed.shape[0] if getattr(fixed, "ndim", 0) in batched else None
        if batch is not None and getattr(moving, "ndim", 0) in batched:
            batch = max(batch, moving.shape[0])
        if not isinstance(value, torch.Tensor):
            got = f"{type(value).__name__} {value!r:.40}" if isinstance(value, (int, float)) \
                else type(value).__name__
            problem = f"returned a {got}"
        elif value.ndim != 1 or (batch is not None and value.shape[0] != batch):
            problem = f"returned a tensor of shape {tuple(value.shape)}"
        elif isinstance(fixed, torch.Tensor) and value.device != fixed.device:
            problem = f"returned a tensor on {value.device} for inputs on {fixed.device}"
        else:
            return value
        want = f"({batch},)" if batch is not None else "(B,)"
        raise contract_error(self.spec, problem, f"a tensor of shape (B,) = {want}, one value "
                             "per batch item, on the inputs' device")


def _check_inputs(fixed: Any, moving: Any) -> None:
    """One clear ``ValueError`` for inputs no estimator can score: not both ``(B, C, H, W)`` or
    both ``(B, C, D, H, W)``, batches that cannot broadcast, different sizes, empty images, NaN
    or infinite pixels (each estimator would otherwise fail its own way, or silently return a
    number)."""
    from mibench.estimators.inputs import check_pair_shapes

    check_pair_shapes(fixed, moving)
    _check_pixels(fixed, moving)


def _check_pixels(fixed: Any, moving: Any) -> None:
    """``ValueError`` for an empty image or NaN or infinite pixels, which would otherwise end as
    a NaN value or loss, an index error or a silently degraded result, depending on the plugin.
    One flag is read back from the device per image and per call of the API, not per
    optimisation step (the methods call the estimator functions directly)."""
    import torch

    for name, x in (("fixed", fixed), ("moving", moving)):
        if x.numel() == 0:
            raise ValueError(f"the {name} image is empty: shape {tuple(x.shape)}")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"the {name} image has NaN or infinite pixels")


def _spatial_ndim(ndim: int | None, image: Any, geometry: Any) -> int:
    """2 or 3: given, else the geometry's, else 3 for a 5-D tensor, else 2."""
    if ndim is not None:
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        return ndim
    if geometry is not None:
        return int(geometry.ndim)
    return 3 if getattr(image, "ndim", 0) == 5 else 2


def _check_content(image: Any, mask: Any, name: str) -> None:
    """Refuse an image with nothing to align: no pixel in its mask, or one grey value on all of
    them. Any transform then scores the same, and the methods would follow rounding noise (an
    optimiser's normalised steps, or the noise maximum of an MI map) to an arbitrary pose."""
    grey = image.mean(dim=1)
    if mask is not None:
        grey = grey[mask[:, 0].expand_as(grey)]
    if grey.numel() == 0:
        raise ValueError(f"the {name} mask selects no pixel: there is nothing to register")
    lo, hi = float(grey.min()), float(grey.max())
    if hi - lo <= 1e-6 * max(1.0, abs(hi)):
        where = " inside its mask" if mask is not None else ""
        raise ValueError(f"the {name} image is constant{where} ({hi:.6g}): there is nothing "
                         "to register")


@dataclass
class Method:
    """A registration method with its options fixed, bound to a device.

    Call it with fixed and moving images (numpy ``(H, W[, C])`` in [0, 1], or ``(1, C, H, W)``
    tensors; volumes ``(D, H, W[, C])`` / ``(1, C, D, H, W)``) and optional bool masks; it
    returns a :class:`RegistrationOutput` whose transform maps fixed pixel (voxel) coordinates
    to moving ones.
    """

    spec: MethodSpec
    params: dict[str, Any] = field(default_factory=dict)
    device: Any = "cpu"

    @property
    def name(self) -> str:
        return self.spec.name

    def warm_up(self) -> None:
        """Import the method and run its optional ``warm_up()`` (a no-argument attribute of the
        factory function: e.g. loading a toolbox's libraries), so that one-off start-up costs
        stay out of the timed registration. The runner calls it before starting the clock."""
        hook = getattr(self.spec.load(), "warm_up", None)
        if callable(hook):
            hook()

    def __call__(self, fixed: Any, moving: Any, *, fixed_mask: Any = None,
                 moving_mask: Any = None, seed: int = 0, fixed_geometry: Any = None,
                 moving_geometry: Any = None, ndim: int | None = None) -> RegistrationOutput:
        """Register ``moving`` to ``fixed``.

        ``ndim`` (2 or 3) says whether numpy arrays are images or volumes (a 3-D array is
        ``(H, W, C)`` or ``(D, H, W)``); by default it is the geometry's, else that of a
        tensor's shape (5 dims: volumes), else 2. The geometries (:class:`mibench.geometry.
        Geometry`) are passed on to methods that register volumes (``3 in spec.dims``).
        """
        from mibench.tensors import image_to_tensor, mask_to_tensor, resolve_device

        if not is_seed(seed):
            # Methods seed torch, NumPy and toolboxes, which take 32 bits (or wrap silently).
            raise ValueError(f"seed must be an integer in 0 .. {MAX_SEED} (32-bit), got {seed!r}")
        ndim = _spatial_ndim(ndim, fixed, fixed_geometry)
        if ndim not in self.spec.dims:
            raise UserError(f"method {self.name!r} does not register {ndim}-D "
                            f"{'volumes' if ndim == 3 else 'images'} (its dims are "
                            f"{self.spec.dims})")
        device = resolve_device(self.device)
        fn = self.spec.load()
        fixed = image_to_tensor(fixed, device, ndim=ndim)
        moving = image_to_tensor(moving, device, ndim=ndim)
        _check_pixels(fixed, moving)
        fixed_mask = mask_to_tensor(fixed_mask, device, ndim=ndim)
        moving_mask = mask_to_tensor(moving_mask, device, ndim=ndim)
        if self.spec.needs_content:
            _check_content(fixed, fixed_mask, "fixed")
            _check_content(moving, moving_mask, "moving")
        # Methods written before volumes existed need not accept the geometry arguments.
        extra = ({"fixed_geometry": fixed_geometry, "moving_geometry": moving_geometry}
                 if 3 in self.spec.dims else {})
        out = fn(
            fixed,
            moving,
            fixed_mask=fixed_mask,
            moving_mask=moving_mask,
            seed=seed,
            **extra,
            **self.params,
        )
        return self._checked(out)

    def _checked(self, out: Any) -> RegistrationOutput:
        """The method's result as a :class:`RegistrationOutput` if it keeps the contract (a
        ``Transform``, or a ``RegistrationOutput`` holding one), else
        :func:`~mibench.errors.contract_error`'s :class:`UserError` naming the method and its
        plugin (a bare matrix would otherwise fail in the scoring, far from the plugin)."""
        if isinstance(out, RegistrationOutput):
            if isinstance(out.transform, Transform):
                return out
            problem = ("returned a RegistrationOutput whose transform is of type "
                       f"{type(out.transform).__name__}")
        elif isinstance(out, Transform):
            return RegistrationOutput(out)
        else:
            problem = f"returned {type(out).__name__}"
        raise contract_error(self.spec, problem, "a Transform (e.g. "
                             "mibench.transform.MatrixTransform(matrix)) or a RegistrationOutput")


def resolve_data_dir(spec: DatasetSpec, data_dir: str | Path | None) -> Path | None:
    """The absolute data directory for dataset ``spec``; a missing one is a :class:`UserError`."""
    if data_dir is None:
        if spec.needs_data_dir:
            where = (f"expected layout: {spec.layout}" if spec.layout else
                     f"plugin {spec.plugin!r} describes no layout; a dataset that generates its "
                     "data should declare needs_data_dir=False")
            raise UserError(f"dataset {spec.name!r} needs --data-dir (data_dir= in Python; "
                            f"{where}){_get_it(spec)}")
        return None
    path = Path(data_dir).expanduser().resolve()
    if not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise UserError(f"{data_dir}: data directory {what}{_get_it(spec)}")
    return path


def _get_it(spec: DatasetSpec) -> str:
    """Where to obtain a dataset whose files are missing (its ``source``), as a message tail."""
    return f"; get it: {spec.source}" if spec.source and spec.needs_data_dir else ""


@dataclass(frozen=True)
class OpenDataset:
    """A dataset plugin opened with its options: ``dataset`` has ``pairs()`` and ``load(id)``.

    ``data_dir`` is the resolved (absolute) data directory, or None; ``params`` the resolved
    options, as a run records them.
    """

    spec: DatasetSpec
    data_dir: Path | None
    params: dict[str, Any]
    dataset: Any

    @property
    def name(self) -> str:
        return self.spec.name


def open_dataset(spec: DatasetSpec, data_dir: str | Path | None = None,
                 options: dict[str, Any] | None = None, *, from_text: bool = False
                 ) -> OpenDataset:
    """Open dataset ``spec`` on ``data_dir`` with ``options`` (the one way every part of mibench
    opens a dataset: the API, a run's plan, its workers, the report's overlays).

    ``from_text``: options may be command-line strings, parsed to each option's type. A missing
    requirement, data directory or bad option, or a ``ValueError`` of the factory's own checks
    (:func:`mibench.errors.as_user_error`), is a one-line :class:`UserError` naming the dataset.
    """
    factory = spec.load()
    path = resolve_data_dir(spec, data_dir)
    params = spec.resolve(options, from_text=from_text)
    try:
        with as_user_error(spec):
            dataset = factory(path, **params)
    except UserError as exc:
        # The factory checks the files: a missing or misplaced one is where the data come from.
        raise UserError(f"{exc}{_get_it(spec)}") from None
    return OpenDataset(spec, path, params, dataset)
