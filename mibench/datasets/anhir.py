"""The ``anhir`` dataset: ANHIR (Borovec et al., IEEE TMI 2020) through its cover table.

ANHIR is a BIRL cover table (see :mod:`mibench.datasets.cover`) over the layout
``<set>/scale-<P>pc/<name>.jpg|png`` with a landmark ``<name>.csv`` (header ``,X,Y``) beside each
image; ``<set>`` is ``<tissue>_<k>`` (``lung-lesion_2``, ``COAD_07``), and the tissue is the set
name without its ``_<k>``. The table adds ``status``: ``training`` pairs have both landmark files;
for ``evaluation`` pairs only the source landmarks were released, so those pairs are registered
and their warped source landmarks written out (ANHIR's submission content), but not scored.

Pair metadata: ``tissue``, ``set``, ``status``, ``scale`` (the percentage in the table's path) and
``row`` (the table's index, which is the pair's id with three digits).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mibench.datasets.cover import CoverDataset, _scale_of

STATUSES = ("training", "evaluation")


def tissue_of(set_name: str) -> str:
    """``lung-lesion_2`` -> ``lung-lesion``; a name without ``_<k>`` is its own tissue."""
    return re.sub(r"_\d+$", "", set_name)


class AnhirDataset(CoverDataset):
    """ANHIR pairs; the options of :class:`CoverDataset` plus ``status``.

    Parameters
    ----------
    status : {"all", "training", "evaluation"}
        Which pairs to use, by the table's ``status`` column.
    """

    name = "anhir"

    def __init__(self, data_dir: Path, *, table: str = "dataset_medium.csv",
                 status: str = "all", **options: Any):
        self.status = status
        super().__init__(data_dir, table=table, **options)

    def keep(self, values: dict[str, str]) -> bool:
        status = values.get("status", "").strip().lower()
        if "status" in values and status not in STATUSES:
            raise ValueError(f"{self.table.name}: status {values['status']!r} is neither "
                             "'training' nor 'evaluation'")
        return self.status == "all" or status == self.status

    def target_landmarks_optional(self, values: dict[str, str]) -> bool:
        # The released evaluation pairs name target landmark files that are not distributed.
        return values.get("status", "").strip().lower() == "evaluation"

    def row_meta(self, values: dict[str, str], target_rel: str) -> dict[str, Any]:
        set_name = Path(target_rel).parts[0]
        found = _scale_of(target_rel)
        meta: dict[str, Any] = {"tissue": tissue_of(set_name), "set": set_name}
        if "status" in values:
            meta["status"] = values["status"].strip().lower()
        if found is not None:
            meta["scale"] = found[1]
        return meta

    def describe(self) -> None:
        unscored = self.unscored()
        evaluation = sum(r.meta.get("status") == "evaluation" for r in unscored)
        if evaluation:
            self.notes.append(f"{evaluation} evaluation pair(s) have no target landmarks: "
                              "registered, warped source landmarks written out (ANHIR "
                              "submission format), not scored")
        other = len(unscored) - evaluation
        if other:
            self.notes.append(f"{other} pair(s) have no target landmarks: registered, not scored")


def load_dataset(data_dir: Path | None, **params: Any) -> AnhirDataset:
    """Factory of the ``anhir`` dataset: options checked against the spec's bounds and
    choices, missing ones defaulted (also when called directly from Python)."""
    from mibench.datasets import ANHIR

    return AnhirDataset(data_dir, **ANHIR.resolve(params))
