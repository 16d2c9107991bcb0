"""Fake records and run directories for the report tests."""

from __future__ import annotations

import json

import numpy as np

from mibench.metrics import pair_scores
from mibench.paths import manifest_path
from mibench.records import write_record
from mibench.registration import Record, RegistrationTask

XSS = "<script>alert(1)</script>"
PAIRS = ("A01", "P02", "S03")


def make_record(method, pair, seed=0, *, status="ok", error=None, scored=True, scale=1.0,
                wall=0.5, params=None, **extra):
    """A task and its record with random landmark errors: ``scale`` times the initial ones
    (failed: the initial ones); ``extra`` sets further record fields."""
    task = RegistrationTask(method=method,
                            method_params={"lr": 0.01} if params is None else params,
                            dataset="fake", dataset_params={"size": 64}, pair_id=pair, seed=seed)
    rng = np.random.default_rng(abs(hash((method, pair, seed))) % 2**32)
    init = rng.uniform(5, 20, 6)
    errs = init if status == "failed" else init * scale * rng.uniform(0.2, 1.2, 6)
    values = dict(status=status, error=error, scored=scored, wall_s=wall, device_s=None,
                  meta={"category": pair[0], "tags": ["a", "b"]}, norm_length=90.5, **extra)
    if scored:
        values.update(landmark_errors=list(errs), initial_errors=list(init),
                      metrics=pair_scores(errs, init, 90.5, 90.5))
    return task, Record(task, **values)


def make_fake_run(tmp_path, reference=None):
    """A run directory of fake records: identity, drmime (two seeds), mmi (one failed task),
    solo (one scored pair and one unscored one); pairs carry FIRE categories."""
    recs = []
    for i, pair in enumerate(PAIRS):
        recs.append(make_record("identity", pair, scale=1.0 / 0.7, wall=1e-3))
        recs.append(make_record("drmime", pair, scale=0.1, wall=2.0 + i,
                                params={"lr": [0.01, 0.001], "iters": 500}))
        recs.append(make_record("drmime", pair, seed=1, scale=0.1, wall=3.0 + i,
                                params={"lr": [0.01, 0.001], "iters": 500}))
        status, error = ("failed", f"RuntimeError: {XSS} & co") if i == 1 else ("ok", None)
        recs.append(make_record("mmi", pair, scale=0.3, status=status, error=error,
                                  wall=0.2 * (i + 1)))
    recs.append(make_record("solo", "A01", wall=7.0))            # one pair: std undefined
    recs.append(make_record("solo", "Z99", scored=False, wall=8.0))  # registered, not scored
    for task, rec in recs:
        write_record(tmp_path, task, rec)
    manifest = {"config": {"dataset": "fake", "dataset_params": {"size": 64},
                           "methods": {"identity": {}, "mmi": {"bins": 32}, XSS: {}},
                           "seeds": [0, 1], "device": "cpu", "workers": 2, "timeout": 60.0,
                           "naed_norm": "diagonal", "reference": reference},
                "versions": {"mibench": "0.1.0", "python": "3.11"},
                "device": {"name": "cpu", "type": "cpu"},
                "machine": {"hostname": "box", "platform": "linux", "cpus": 8},
                "created": "2024-01-01T00:00:00", "concurrent_tasks": 2,
                "threads_per_task": 4, "dataset_notes": ["pair P37 excluded", XSS]}
    manifest_path(tmp_path).write_text(json.dumps(manifest))
    return tmp_path
