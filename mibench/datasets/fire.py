"""The ``fire`` dataset: FIRE, the Fundus Image Registration dataset, in its native layout.

Hernández-Matas et al., J. Modeling in Ophthalmology 1(4), 2017: 134 pairs of 2912 x 2912 fundus
photographs in three categories, S (large overlap, no change), P (small overlap) and A (large
overlap, anatomical change)::

    <data-dir>/Images/<C><NN>_1.jpg                        reference image = fixed
    <data-dir>/Images/<C><NN>_2.jpg                        test image = moving
    <data-dir>/Ground Truth/control_points_<C><NN>_1_2.txt  10 lines "x_ref y_ref x_test y_test"
    <data-dir>/Masks/mask.png                              field of view (FOV), all images
    <data-dir>/Masks/feature_mask.png                      FOV for feature detection

Control points are in full-resolution pixels; every pair has them, so a chosen pair whose
images are there without its file is refused (a damaged download), as are a test image or mask
whose size differs from the reference image's (from the headers, when the dataset is opened,
so that no task fails on it later). The protocol maps the test points into the reference
frame; a pair's error is the mean distance over its points, in native pixels, which is what the
runner reports (``native_scale``) whatever the working scale.

``control_points_P37_1_2.txt`` is known to be wrong and is left out by default, as in the
literature since SuperRetina (48 P pairs); ``include_p37=true`` keeps it. The dataset's
``notes`` say which, and the working scale, so that the report states them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mibench.datasets.layout import check_data_dir, comma_list
from mibench.datasets.pixels import downscale, working_shape
from mibench.io import image_size, read_image, read_mask, read_points
from mibench.pairs import Pair, PairInfo

CATEGORIES = ("S", "P", "A")
KNOWN_BAD = "P37"
_GT_NAME = re.compile(r"control_points_([SPA])(\d+)_1_2\.txt")
_IMAGE_NAME = re.compile(r"([SPA])(\d+)_[12]\.jpg")
_MASK_FILES = {"fov": "mask.png", "feature": "feature_mask.png"}


@dataclass(frozen=True)
class _FirePair:
    id: str
    category: str
    fixed_path: Path
    moving_path: Path
    fixed_points: np.ndarray  # (K, 2) native (x, y) in the reference image
    moving_points: np.ndarray  # (K, 2) native (x, y) in the test image
    native_shape: tuple[int, int]


def find_root(data_dir: Path) -> Path:
    """The FIRE folder: ``data_dir`` itself, or its subfolder ``FIRE`` (the archive's name)."""
    data_dir = check_data_dir(data_dir, "fire")
    for root in (data_dir, data_dir / "FIRE"):
        if (root / "Images").is_dir() and (root / "Ground Truth").is_dir():
            return root
    found = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in data_dir.iterdir()))
    raise ValueError(f"{data_dir}: not a FIRE directory: expected the folders 'Images/' and "
                     f"'Ground Truth/' (found: {found or 'nothing'})")


class FireDataset:
    """FIRE pairs; ``pairs()`` reads only the control points and image headers.

    Parameters
    ----------
    data_dir : Path
        The FIRE folder (or its parent).
    categories : str
        Comma list of the categories to keep (``S,P,A``).
    include_p37 : bool
        Keep pair P37, whose ground truth is known to be wrong.
    scale : float
        Working scale in (0, 1]: methods see images and landmarks resized by this factor
        (0.25: 728 x 728); errors are still reported in native (2912 px) pixels.
    channels : {"green", "grey", "rgb"}
        What the methods see of the colour photographs (see :func:`mibench.io.read_image`).
    mask : {"fov", "feature", "none"}
        The mask given to the methods as ``fixed_mask`` and ``moving_mask``: ``Masks/mask.png``,
        ``Masks/feature_mask.png`` or none.
    """

    def __init__(self, data_dir: Path, *, categories: str = "S,P,A", include_p37: bool = False,
                 scale: float = 0.25, channels: str = "green", mask: str = "fov"):
        self.root = find_root(data_dir)
        self.scale = float(scale)
        self.channels = channels
        self.mask_path = None if mask == "none" else self.root / "Masks" / _MASK_FILES[mask]
        mask_shape = None
        if self.mask_path is not None:
            mask_shape = image_size(self.mask_path, f"FIRE {mask} mask")
        self._mask_cache: tuple[np.ndarray, tuple[int, int]] | None = None
        self.notes: list[str] = []
        wanted = comma_list(categories, CATEGORIES, "categories")
        truth = self.root / "Ground Truth"
        found = sorted(((m, p) for p in truth.iterdir() if (m := _GT_NAME.fullmatch(p.name))),
                       key=lambda item: (CATEGORIES.index(item[0].group(1)),
                                         int(item[0].group(2))))
        if not found:
            raise ValueError(f"{truth}: no ground-truth files named "
                             "control_points_<C><NN>_1_2.txt (C one of S, P, A)")
        self._check_ground_truth(truth, {m.group(1) + m.group(2) for m, _ in found}, wanted,
                                 include_p37)
        self._pairs: dict[str, _FirePair] = {}
        for match, path in found:
            category, number = match.group(1), match.group(2)
            pair_id = f"{category}{number}"
            if category not in wanted:
                continue
            if pair_id == KNOWN_BAD:
                if not include_p37:
                    self.notes.append(f"{KNOWN_BAD} excluded (its ground truth is known to be "
                                      "wrong); include it with -o include_p37=true")
                    continue
                self.notes.append(f"{KNOWN_BAD} included although its ground truth is known "
                                  "to be wrong (include_p37=true)")
            self._pairs[pair_id] = self._read_pair(pair_id, category, path)
            # One mask serves every image: a size mismatch would fail every task at load time.
            if mask_shape is not None and mask_shape != self._pairs[pair_id].native_shape:
                raise ValueError(f"{self.mask_path}: mask is {_size(mask_shape)}, the images "
                                 f"({pair_id}_1.jpg) {_size(self._pairs[pair_id].native_shape)}")
        if self.scale != 1 and self._pairs:
            h, w = next(iter(self._pairs.values())).native_shape
            wh, ww = working_shape((h, w), self.scale)
            self.notes.append(f"working scale {self.scale:g}: methods see {ww} x {wh} px images "
                              f"(native {w} x {h}); errors are in native pixels")

    def _check_ground_truth(self, truth: Path, with_truth: set[str], wanted: tuple[str, ...],
                            include_p37: bool) -> None:
        """Refuse a chosen pair whose images are there but whose ground truth is not.

        FIRE ships a control-point file for every pair, so a missing one means a damaged or
        partial download; leaving the pair out would shrink the benchmark unnoticed.
        """
        images = {m.group(1) + m.group(2) for p in (self.root / "Images").iterdir()
                  if (m := _IMAGE_NAME.fullmatch(p.name))}
        missing = sorted(pair_id for pair_id in images - with_truth
                         if pair_id[0] in wanted and (include_p37 or pair_id != KNOWN_BAD))
        if missing:
            more = ""
            if len(missing) > 1:
                more = f" (and {len(missing) - 1} more: {', '.join(missing[1:])})"
            raise ValueError(f"{truth / f'control_points_{missing[0]}_1_2.txt'}: FIRE ground-truth "
                             f"file not found, though Images/ has pair {missing[0]}{more}; the "
                             "download looks incomplete: unpack FIRE.zip again")

    def _read_pair(self, pair_id: str, category: str, truth: Path) -> _FirePair:
        fixed_path = self.root / "Images" / f"{pair_id}_1.jpg"
        moving_path = self.root / "Images" / f"{pair_id}_2.jpg"
        native_shape = image_size(fixed_path, "FIRE reference image")
        moving_shape = image_size(moving_path, "FIRE test image")
        if moving_shape != native_shape:
            # Found here from the headers, not when the pair is loaded: there it would fail
            # every task of the pair while the run still succeeds.
            raise ValueError(f"{moving_path}: FIRE test image is {_size(moving_shape)}, its "
                             f"reference image {fixed_path.name} {_size(native_shape)} (FIRE "
                             "pairs have equal sizes)")
        points = read_points(truth, 4, "x_ref y_ref x_test y_test")
        fixed_points, moving_points = points[:, :2], points[:, 2:]
        return _FirePair(pair_id, category, fixed_path, moving_path, fixed_points,
                         moving_points, native_shape)

    def pairs(self) -> list[PairInfo]:
        return [PairInfo(p.id, {"category": p.category}) for p in self._pairs.values()]

    def _mask(self, shape: tuple[int, int]) -> np.ndarray | None:
        """The working-scale mask (one file for every pair: decoded once, then kept)."""
        if self.mask_path is None:
            return None
        if self._mask_cache is None:
            mask = read_mask(self.mask_path, "FIRE mask")
            self._mask_cache = downscale(mask, self.scale, order=0), mask.shape
        mask, native = self._mask_cache
        if native != shape:
            raise ValueError(f"{self.mask_path}: mask is {_size(native)}, the images "
                             f"{_size(shape)}")
        return mask

    def load(self, pair_id: str) -> Pair:
        try:
            p = self._pairs[pair_id]
        except KeyError:
            raise ValueError(f"FIRE has no pair {pair_id!r} (with these options)") from None
        fixed = read_image(p.fixed_path, self.channels, "FIRE reference image")
        moving = read_image(p.moving_path, self.channels, "FIRE test image")
        if fixed.shape[:2] != moving.shape[:2]:
            raise ValueError(f"{p.moving_path}: size {moving.shape[:2]} differs from the "
                             f"reference image's {fixed.shape[:2]}")
        mask = self._mask(fixed.shape[:2])
        return Pair(
            id=p.id,
            fixed=downscale(fixed, self.scale),
            moving=downscale(moving, self.scale),
            fixed_landmarks=p.fixed_points * self.scale,
            moving_landmarks=p.moving_points * self.scale,
            fixed_mask=mask,
            moving_mask=mask,
            native_scale=1.0 / self.scale,
            native_shape=p.native_shape,
            meta={"category": p.category},
        )


def _size(shape: tuple[int, int]) -> str:
    """``(H, W)`` in words, width first as image sizes are usually written: ``"96 x 80 px"``."""
    return f"{shape[1]} x {shape[0]} px"


def load_dataset(data_dir: Path | None, **params) -> FireDataset:
    """Factory of the ``fire`` dataset: options checked against the spec's bounds and
    choices, missing ones defaulted (also when called directly from Python)."""
    from mibench.datasets import FIRE

    return FireDataset(data_dir, **FIRE.resolve(params))
