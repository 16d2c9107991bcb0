"""The order tasks run in, and the seed rule: a method that ignores the seed runs once."""

import numpy as np
import pytest
import torch

from mibench.callables import Method
from mibench.plan import plan_run, task_order
from mibench.registration import RegistrationTask
from mibench.registry import Registry
from mibench.settings import RunSettings


def test_pairs_and_methods_interleave_with_a_rotating_first_method():
    order = task_order(["a", "b", "c"], ["p", "q"], [0, 1], single_seed={"c"})
    assert order == [
        ("a", "p", 0), ("b", "p", 0), ("c", "p", 0),
        ("b", "p", 1), ("a", "p", 1),              # c ignores the seed: once, with seed 0
        ("c", "q", 0), ("a", "q", 0), ("b", "q", 0),
        ("a", "q", 1), ("b", "q", 1),
    ]
    # Every (method, pair, seed) exactly once otherwise.
    full = task_order(["a", "b"], ["p", "q", "r"], [5, 6, 7])
    assert sorted(full) == sorted((m, p, s) for m in "ab" for p in "pqr" for s in (5, 6, 7))
    assert task_order([], ["p"], [0]) == []


def test_a_method_that_ignores_the_seed_is_planned_once(tmp_path):
    settings = RunSettings(methods="noisy,identity", dataset="toy", seeds=[3, 1, 2],
                           plugins=["helpers.fakeplugin"], out=str(tmp_path / "run"))
    plan = plan_run(Registry(settings.plugins), settings)
    assert plan.config["single_seed_methods"] == ["identity"]
    seeds = {m: sorted(t.seed for t in plan.tasks if t.method == m) for m in ("noisy", "identity")}
    # identity: the first seed only (seeds are sorted)
    assert seeds == {"noisy": [1, 1, 1, 2, 2, 2, 3, 3, 3], "identity": [1, 1, 1]}
    # Its task is the one a run before this rule planned (same key): old records resume.
    ident = next(t for t in plan.tasks if t.method == "identity")
    assert ident.key == RegistrationTask("identity", {}, "toy", plan.dataset.params,
                                         ident.pair_id, 1).key
    # Interleaved: the first tasks are of both methods.
    assert {t.method for t in plan.tasks[:2]} == {"noisy", "identity"}


def _pair(seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    fixed = np.exp(-((xx - 22) ** 2 + (yy - 25) ** 2) / 60.0) + 0.05 * rng.random((48, 48))
    moving = np.roll(fixed, (2, -1), axis=(0, 1)) ** 2  # shifted, intensities remapped
    as_tensor = lambda a: torch.from_numpy(a.astype(np.float32))[None, None]  # noqa: E731
    return as_tensor(fixed), as_tensor(moving)


SEEDLESS = [n for n, s in Registry(()).specs("method").items()
            if not s.seeded(s.resolve({})) and s.unavailable_reason() is None]


@pytest.mark.parametrize("name", SEEDLESS)
def test_built_in_methods_declared_seedless_give_the_same_result_for_any_seed(name):
    """The declaration is checked, not trusted: seeds 0 and 12345 give the same transform."""
    spec = Registry(()).get("method", name)
    quick = {k: v for k, v in {"iterations": 6, "levels": 1, "max_angle": 9.0}.items()
             if k in {p.name for p in spec.params}}
    fixed, moving = _pair()
    results = []
    for seed in (0, 12345):
        torch.manual_seed(seed)  # as the worker seeds its generators before a task
        np.random.seed(seed)
        out = Method(spec, spec.resolve(quick), torch.device("cpu"))(fixed, moving, seed=seed)
        results.append(np.asarray(out.transform.to_dict()["matrix"]))
    np.testing.assert_array_equal(results[0], results[1])
