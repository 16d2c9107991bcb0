"""The ``brain`` dataset: 3-D multimodal brain pairs with an exactly known transform.

The 3-D counterpart of ``synthetic``, built from the MNI152 (ICBM 2009a symmetric) template that
ships inside nilearn's package, so it needs no download: its T1 image and its grey- and
white-matter probability maps. The files are read with nibabel straight from nilearn's data
folder (nilearn itself is not imported: that alone takes seconds); at 2 mm the 1 mm files are
taken at every other voxel, which is exactly what ``nilearn.datasets.load_mni152_template(
resolution=2)`` returns (same grid, same values). Each map is divided by its maximum, as
nilearn does; the brain mask is ``T1 > 0.2`` (``load_mni152_brain_mask``'s rule) and the CSF
map is ``1 - GM - WM`` inside it.

Registered as ``brain`` (its spec, :data:`mibench.datasets.BRAIN`, sits with the other built-in
specs): ``mibench run --dataset brain``, or from Python ``load_dataset(pairs=2).load("t2-000")``.
It needs nilearn (the optional extra ``pip install "mibench[volumes]"``); without it the dataset
is listed as unavailable with that command, and opening it says so.

Arrays are numpy ``(D, H, W)`` = nibabel ``(k, j, i)`` (the data transposed), so that voxel
``(x, y, z) = (i, j, k)`` and both images carry the template's RAS+ millimetre geometry
(:class:`~mibench.geometry.Geometry`); landmarks are ``(K, 3)`` ``(x, y, z)`` voxels.

Images. The fixed image is the T1 template as nilearn gives it (values in [0, 1], 0 outside the
skull-stripped brain). The moving image is another contrast synthesised from the tissue maps,
``sum_t p_t c_t`` with the tissue signals ``c`` of :data:`CONTRASTS`: ``t2`` (CSF > GM > WM, the
reverse of T1's order inside the brain, with the background dark in both) and ``pd`` (GM > CSF >
WM), so the intensity relation to T1 is a function but not monotonic (NCC cannot follow it,
mutual information can); ``t1`` is a monomodal control (the T1 template's own values). It is
warped by the true transform, multiplied by a smooth bias field (``exp`` of a random quadratic
in the three coordinates, at most 1) and given Rician noise ``|s + n_1 + i n_2|``, ``n ~
N(0, noise^2)``, then clipped to [0, 1].

Geometry. A random transform ``W`` is drawn in world millimetres about the centre of the
volume: rotations about the three axes, then (``transform="affine"``) per-axis scales and
shears, and a translation (:data:`DIFFICULTY`). Its voxel form ``T = inv(A) W A`` (``A`` the
template affine, shared by both images) is the true fixed -> moving voxel transform, and the
moving image is the pull-back ``moving(q) = contrast(T^-1 q)``, sampled trilinearly
(``scipy.ndimage.affine_transform``, order 1); voxels that map outside the template read 0, its
background. ``T`` is stored in ``meta["true_transform"]``.

Landmarks. 3-D Harris corners of the T1 template (structure tensor of the Gaussian gradient at
1 voxel, integrated over 1.5 voxels; response ``det S - 0.005 tr(S)^3``), local maxima at least
10 mm apart, inside the brain mask eroded by 2 voxels and at least 6 voxels from the faces of
the volume (the brainstem is cut by the bottom face): points where the intensity varies along
all three axes. They are computed once per resolution (about 90 at 2 mm), strongest
first; a pair takes, in that order, the first ``landmarks`` of them whose image under ``T`` lies
at least 3 voxels inside the moving volume. Fixed landmarks are integer voxels; moving ones are
``T(f_k)`` exactly.

Masks: ``mask="fov"`` gives an all-True fixed mask and, for the moving image, the voxels that
map inside the template; ``mask="brain"`` gives the brain mask and its warped copy (nearest).

Randomness: pair ``k`` draws its transform and bias from ``numpy.random.default_rng([seed,
k])`` in a fixed order (so rigid and affine pairs share their rotations and translations) and
its noise from ``[seed, k, 1]``; a pair does not depend on the number of pairs.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mibench.datasets import BRAIN
from mibench.datasets.layout import comma_list
from mibench.geometry import Geometry, rotation_matrix, voxel_transform
from mibench.pairs import Pair, PairInfo

#: Tissue signals ``(CSF, GM, WM)`` of each synthesised contrast, background 0.
CONTRASTS = {
    "t2": (1.0, 0.6, 0.4),
    "pd": (0.8, 0.95, 0.7),
}
_ALL_CONTRASTS = ("t2", "pd", "t1")


@dataclass(frozen=True)
class _Limits:
    """Largest magnitude of each random component of the world transform."""

    rotation_deg: float  # about each axis
    translation_mm: float  # along each axis
    scale: float  # relative change along each axis (affine only)
    shear: float  # tan of each shear angle (affine only)


DIFFICULTY = {
    "easy": _Limits(5.0, 5.0, 0.05, 0.03),
    "medium": _Limits(10.0, 10.0, 0.10, 0.06),
    "hard": _Limits(20.0, 20.0, 0.15, 0.10),
}

_BIAS_STRENGTH = 0.2  # largest coefficient of the log bias polynomial
_LANDMARK_SPACING_MM = 10.0
_MARGIN = 3  # voxels between a moving landmark and the moving volume's border
_FACE_MARGIN = 6  # voxels between a corner and the template's faces

# ---------------------------------------------------------------------------- template


@dataclass(frozen=True)
class _Template:
    """The template at one resolution, numpy ``(D, H, W)`` float32 in [0, 1]."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray  # bool
    geometry: Geometry


def _data_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the brain dataset needs nilearn's MNI152 template: "
                         "pip install 'mibench[volumes]'")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def _path(name: str) -> Path:
    path = _data_dir() / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"
    if not path.is_file():
        raise ValueError(f"the brain dataset needs {path.name} from nilearn (>= 0.10), "
                         "not found in its package")
    return path


@functools.lru_cache(maxsize=2)
def grid(resolution: int = 2) -> tuple[Geometry, tuple[int, int, int]]:
    """The template's geometry and numpy ``(D, H, W)`` shape at ``resolution`` mm, from the T1
    file's header alone (cheap: no voxel data is decoded)."""
    import nibabel as nib

    step = int(resolution)
    image = nib.load(_path("t1"))
    shape = tuple(-(-n // step) for n in image.shape[:3])[::-1]
    return Geometry(image.affine @ np.diag([step, step, step, 1.0]), "mm"), shape


@functools.lru_cache(maxsize=2)
def template(resolution: int = 2) -> _Template:
    """The MNI152 T1, tissue maps and brain mask at ``resolution`` mm (cached per process)."""
    import nibabel as nib

    step = int(resolution)
    maps = {}
    for name in ("t1", "gm", "wm"):
        full = nib.load(_path(name)).get_fdata(dtype=np.float32)
        # Divided by the 1 mm maximum, as nilearn does before resampling.
        data = full[::step, ::step, ::step] / full.max()
        # (i, j, k) -> (k, j, i): numpy (D, H, W) with (x, y, z) = (i, j, k).
        maps[name] = np.ascontiguousarray(data.T)
    brain = maps["t1"] > 0.2
    csf = np.where(brain, np.clip(1.0 - maps["gm"] - maps["wm"], 0.0, 1.0), 0.0)
    geometry, shape = grid(resolution)
    if maps["t1"].shape != shape:
        raise ValueError(f"MNI152 template: data {maps['t1'].shape}, header {shape}")
    return _Template(maps["t1"], maps["gm"], maps["wm"], csf.astype(np.float32), brain,
                     geometry)


def _contrast(tpl: _Template, name: str) -> np.ndarray:
    if name == "t1":
        return tpl.t1
    csf, gm, wm = CONTRASTS[name]
    return (csf * tpl.csf + gm * tpl.gm + wm * tpl.wm).astype(np.float32)


# ---------------------------------------------------------------------------- transform


def world_matrix(unit: np.ndarray, centre: np.ndarray, limits: _Limits,
                 affine: bool) -> np.ndarray:
    """The 4x4 world (mm) transform from unit random draws.

    Parameters
    ----------
    unit : ndarray (12,)
        Draws in [-1, 1]: rotations about x, y, z; translations along x, y, z; scales along x,
        y, z; shears xy, xz, yz.
    centre : ndarray (3,)
        World point (mm) the rotation, scale and shear are about.
    limits : _Limits
    affine : bool
        Whether to apply the scale and shear draws (otherwise a rigid motion).

    Returns
    -------
    ndarray (4, 4), float64
        ``x -> R Sh S (x - c) + c + t``, fixed world -> moving world.
    """
    linear = rotation_matrix(limits.rotation_deg * unit[0:3])
    if affine:
        shear = np.eye(3)
        shear[0, 1], shear[0, 2], shear[1, 2] = limits.shear * unit[9:12]
        linear = linear @ shear @ np.diag(1 + limits.scale * unit[6:9])
    out = np.eye(4)
    out[:3, :3] = linear
    out[:3, 3] = centre + limits.translation_mm * unit[3:6] - linear @ centre
    return out


@dataclass(frozen=True)
class _Plan:
    contrast: str
    matrix: np.ndarray  # fixed voxel -> moving voxel
    bias: tuple[float, ...]


def _plan(index: int, contrast: str, options: dict[str, Any], geometry: Geometry,
          shape: tuple[int, int, int]) -> _Plan:
    rng = np.random.default_rng([options["seed"], index])
    unit = rng.uniform(-1.0, 1.0, size=12)
    bias = tuple(float(v) for v in rng.uniform(-_BIAS_STRENGTH, _BIAS_STRENGTH, size=9))
    centre = geometry.voxel_to_world([(np.array(shape[::-1]) - 1) / 2])[0]
    world = world_matrix(unit, centre, DIFFICULTY[options["difficulty"]],
                         options["transform"] == "affine")
    return _Plan(contrast, voxel_transform(world, geometry, geometry), bias)


# ---------------------------------------------------------------------------- rendering


def _bias_field(coefficients: tuple[float, ...], shape: tuple[int, int, int]) -> np.ndarray:
    """``exp`` of a quadratic in ``[-1, 1]^3`` (z, y, x), divided by its maximum: (0, 1]."""
    z, y, x = np.meshgrid(*(np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in shape),
                          indexing="ij", sparse=True)
    c = coefficients
    log = (c[0] * x + c[1] * y + c[2] * z + c[3] * x * y + c[4] * x * z + c[5] * y * z
           + c[6] * x**2 + c[7] * y**2 + c[8] * z**2)
    return np.exp(log - log.max()).astype(np.float32)


def _pull_back(volume: np.ndarray, matrix: np.ndarray, order: int) -> np.ndarray:
    """``out(q) = volume(matrix^-1 q)`` on the same grid, ``q = (x, y, z)``, 0 outside."""
    from scipy import ndimage

    inverse = np.linalg.inv(matrix)
    # scipy indexes (z, y, x): reverse the axes of the (x, y, z) matrix.
    flip = np.eye(4)[[2, 1, 0, 3]]
    zyx = flip @ inverse @ flip
    return ndimage.affine_transform(volume, zyx[:3, :3], zyx[:3, 3], order=order,
                                    mode="constant", cval=0.0)


def _render(tpl: _Template, plan: _Plan, options: dict[str, Any], rng: np.random.Generator):
    """The moving image and both masks of one pair, numpy ``(D, H, W)``."""
    shape = tpl.t1.shape
    moving = _pull_back(_contrast(tpl, plan.contrast), plan.matrix, order=1)
    moving *= _bias_field(plan.bias, shape)
    sigma = options["noise"]
    if sigma > 0:
        real = moving + rng.normal(0.0, sigma, shape).astype(np.float32)
        imaginary = rng.normal(0.0, sigma, shape).astype(np.float32)
        moving = np.hypot(real, imaginary)
    moving = np.clip(moving, 0.0, 1.0).astype(np.float32)
    if options["mask"] == "brain":
        fixed_mask = tpl.brain.copy()
        moving_mask = _pull_back(tpl.brain.astype(np.float32), plan.matrix, order=0) > 0.5
    else:
        fixed_mask = np.ones(shape, bool)
        moving_mask = _pull_back(np.ones(shape, np.float32), plan.matrix, order=0) > 0.5
    return moving, fixed_mask, moving_mask


# ---------------------------------------------------------------------------- landmarks


@functools.lru_cache(maxsize=2)
def _corners(resolution: int) -> np.ndarray:
    """3-D Harris corners of the T1 template, strongest first: ``(N, 3)`` ``(x, y, z)``."""
    from scipy import ndimage
    from skimage.feature import peak_local_max

    tpl = template(resolution)
    inside = ndimage.binary_erosion(tpl.brain, iterations=2)
    # The brainstem is cut by the bottom of the volume: that edge is a corner of the field of
    # view, not of the anatomy, so stay clear of the faces by the filters' reach.
    core = np.zeros_like(inside)
    core[(slice(_FACE_MARGIN, -_FACE_MARGIN),) * 3] = True
    inside &= core
    # Only the brain's bounding box (plus room for the filters) matters: about a third of the
    # volume, and as many times faster.
    box = tuple(slice(max(0, idx.min() - 8), idx.max() + 9) for idx in np.nonzero(inside))
    offset = np.array([b.start for b in box][::-1], dtype=np.float64)
    image, inside = tpl.t1[box].astype(np.float64), inside[box]
    grads = [ndimage.gaussian_filter(image, 1.0, order=o)
             for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    s = {(a, b): ndimage.gaussian_filter(grads[a] * grads[b], 1.5)
         for a in range(3) for b in range(a, 3)}
    det = (s[0, 0] * (s[1, 1] * s[2, 2] - s[1, 2] ** 2)
           - s[0, 1] * (s[0, 1] * s[2, 2] - s[1, 2] * s[0, 2])
           + s[0, 2] * (s[0, 1] * s[1, 2] - s[1, 1] * s[0, 2]))
    response = det - 0.005 * (s[0, 0] + s[1, 1] + s[2, 2]) ** 3
    response = np.where(inside, response, 0.0)
    spacing = max(1, round(_LANDMARK_SPACING_MM / float(tpl.geometry.spacing.min())))
    peaks = peak_local_max(response, min_distance=spacing, threshold_abs=1e-12,
                           exclude_border=False)
    order = np.argsort(-response[tuple(peaks.T)], kind="stable")
    return peaks[order][:, ::-1] + offset  # (z, y, x) -> (x, y, z), in the whole volume


def landmarks(resolution: int, matrix: np.ndarray, shape: tuple[int, int, int],
              count: int) -> np.ndarray:
    """The first ``count`` corners whose image under ``matrix`` lies inside the moving volume.

    Returns
    -------
    ndarray (K, 3) float64
        Fixed ``(x, y, z)`` voxels, ``K <= count`` (fewer only if the transform leaves fewer
        corners inside; the bounded transforms drawn here keep hundreds).
    """
    corners = _corners(resolution)
    mapped = corners @ matrix[:3, :3].T + matrix[:3, 3]
    upper = np.array(shape[::-1], dtype=np.float64) - 1 - _MARGIN
    inside = ((mapped >= _MARGIN) & (mapped <= upper)).all(axis=1)
    return corners[inside][:count].copy()


# ----------------------------------------------------------------------------- dataset


class BrainDataset:
    """The ``brain`` dataset (see the module docstring); built by :func:`load_dataset`."""

    def __init__(self, options: dict[str, Any]):
        self.options = dict(options)
        self.contrasts = comma_list(options["contrasts"], _ALL_CONTRASTS, "contrasts")
        self._index = {self._pair_id(i): i for i in range(options["pairs"])}

    def _contrast(self, index: int) -> str:
        return self.contrasts[index % len(self.contrasts)]

    def _pair_id(self, index: int) -> str:
        return f"{self._contrast(index)}-{index:03d}"

    def _plan(self, index: int) -> _Plan:
        geometry, shape = grid(self.options["resolution"])
        return _plan(index, self._contrast(index), self.options, geometry, shape)

    def _meta(self, plan: _Plan) -> dict[str, Any]:
        return {"contrast": plan.contrast, "true_transform": plan.matrix.tolist(),
                "resolution_mm": self.options["resolution"]}

    def pairs(self) -> list[PairInfo]:
        """All pairs with their metadata (``contrast``, ``true_transform``, ``resolution_mm``);
        reads only the template's header."""
        return [PairInfo(pair_id, self._meta(self._plan(index)))
                for pair_id, index in self._index.items()]

    def load(self, pair_id: str) -> Pair:
        """Generate one pair: at 2 mm under a second once the template and its corners are
        cached (the first pair of a process reads and analyses the template: 1-4 s on two
        busy cores; at 1 mm about eight times as long)."""
        if pair_id not in self._index:
            raise ValueError(f"brain: no pair {pair_id!r} (pairs: "
                             f"{', '.join(self._index) or 'none'})")
        index = self._index[pair_id]
        tpl, plan = template(self.options["resolution"]), self._plan(index)
        rng = np.random.default_rng([self.options["seed"], index, 1])
        moving, fixed_mask, moving_mask = _render(tpl, plan, self.options, rng)
        fixed_points = landmarks(self.options["resolution"], plan.matrix, tpl.t1.shape,
                                 self.options["landmarks"])
        moving_points = fixed_points @ plan.matrix[:3, :3].T + plan.matrix[:3, 3]
        # Copies: the template is cached for the process, and a method may scale in place.
        return Pair(id=pair_id, fixed=tpl.t1.copy(), moving=moving, fixed_landmarks=fixed_points,
                    moving_landmarks=moving_points, fixed_mask=fixed_mask,
                    moving_mask=moving_mask, meta=self._meta(plan),
                    fixed_geometry=tpl.geometry, moving_geometry=tpl.geometry)


def load_dataset(data_dir: Any = None, **params: Any) -> BrainDataset:
    """Factory of the ``brain`` dataset.

    Parameters
    ----------
    data_dir : ignored
        The template ships with nilearn.
    **params
        Options of :data:`BRAIN` (``seed``, ``pairs``, ``resolution``, ``contrasts``,
        ``transform``, ``difficulty``, ``landmarks``, ``noise``, ``mask``); missing ones take
        their defaults.

    Raises
    ------
    UserError
        For an unknown option or a value outside the spec's bounds or choices, or when nilearn
        is not installed (with the install command).
    ValueError
        For a ``contrasts`` list naming an unknown contrast.
    """
    from mibench.errors import UserError

    why = BRAIN.unavailable_reason()
    if why:
        raise UserError(f"dataset 'brain' is unavailable: {why}")
    return BrainDataset(BRAIN.resolve(params))
