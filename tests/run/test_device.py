"""Device requests: spelling, existence, pinning workers to GPUs, CUDA out-of-memory.

Runs on CPU: GPU counts are mocked where a check needs them; the out-of-memory error is raised
by a test method (``helpers.fakeplugin:runs_out_of_memory``) exactly as torch raises it.
"""

import pytest
import torch
from click.testing import CliRunner
from helpers import fakeplugin

from mibench import registration, tensors
from mibench.cli import cli
from mibench.errors import UserError
from mibench.executors import LocalExecutor, WorkerFacts, plan_placement
from mibench.records import iter_records
from mibench.registration import oom_message
from mibench.runner import run_benchmark
from mibench.settings import RunSettings
from mibench.tasks import WorkerContext
from mibench.tensors import parse_device, resolve_device, worker_devices

NO_CUDA = not torch.cuda.is_available()


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has ``n`` CUDA devices: ``gpus(n)``."""
    def set_count(n):
        monkeypatch.setattr(tensors, "cuda_device_count", lambda: n)
    return set_count


@pytest.mark.parametrize("text, expected", [
    ("auto", "auto"), (None, "auto"), (" CPU ", "cpu"), ("cuda", "cuda"), ("cuda:0", "cuda:0"),
    ("CUDA:12", "cuda:12"), ("cuda:007", "cuda:7"), (torch.device("cuda", 1), "cuda:1"),
])
def test_parse_device_accepts_and_normalises(text, expected):
    assert parse_device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "mps", "cuda:", "cuda:-1", "cuda:x", "cuda:1:2",
                                  "cpu:0", "cuda0"])
def test_parse_device_rejects_with_one_line(text):
    with pytest.raises(UserError) as info:
        parse_device(text)
    message = str(info.value)
    assert "\n" not in message and repr(text) in message and "cuda:N" in message


def test_auto_is_cpu_without_cuda(gpus):
    gpus(0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_requested_without_cuda(gpus):
    gpus(0)
    for text in ("cuda", "cuda:0"):
        with pytest.raises(UserError, match=f"device '{text}' requested but CUDA is not "
                                            "available here"):
            resolve_device(text)


def test_cuda_index_out_of_range(gpus):
    gpus(2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("auto").type == "cuda"
    with pytest.raises(UserError, match=r"'cuda:2' requested but only 2 CUDA device\(s\) exist "
                                        r"\(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("request_, workers, n", [
    ("auto", 5, 2), ("cuda", 4, 3), ("auto", 1, 4), ("auto", 3, 1), ("auto", 3, 0),
    ("cpu", 3, 4), ("cuda:1", 3, 4), ("cuda", 2, 1),
])
def test_workers_pinned_round_robin(request_, workers, n):
    got = worker_devices(request_, workers, gpu_count=n)
    assert len(got) == workers
    if request_ in ("auto", "cuda") and n > 1:
        # one device per worker, every GPU used before any is used twice
        assert got == [f"cuda:{i % n}" for i in range(workers)]
        counts = [got.count(f"cuda:{k}") for k in range(n)]
        assert max(counts) - min(counts) <= 1
    else:
        assert got == [request_] * workers


def test_local_executor_pins_worker_processes(gpus):
    gpus(3)
    ctx = WorkerContext("toy", None, "auto", "diagonal", ("helpers.fakeplugin",), 1)
    ex = LocalExecutor(workers=4, device="auto")
    ex.open(ctx, n_tasks=10)
    assert [c.device for c in ex.contexts] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    # fewer tasks than workers: only as many workers as tasks, still pinned from cuda:0
    ex.open(ctx, n_tasks=2)
    assert [c.device for c in ex.contexts] == ["cuda:0", "cuda:1"]
    gpus(2)
    with pytest.raises(UserError, match="only 2 CUDA device"):
        LocalExecutor(workers=2, device="cuda:5").open(ctx, n_tasks=4)


def test_dask_placement_per_host():
    facts = [WorkerFacts("tcp://b:2", "nodeB", 8, 1, 1, False),
             WorkerFacts("tcp://a:3", "nodeA", 16, 2, 2, False),
             WorkerFacts("tcp://a:1", "nodeA", 16, 1, 2, False),
             WorkerFacts("tcp://a:2", "nodeA", 16, 1, 2, False),
             WorkerFacts("tcp://c:1", "nodeC", 4, 2, 0, False)]
    got = plan_placement(facts, "auto")
    # nodeA: 4 task slots on 16 cores -> 4 threads; its 3 workers round-robin over 2 GPUs in
    # address order. nodeB sees one GPU (CUDA_VISIBLE_DEVICES per worker): request unchanged.
    assert got == {"tcp://a:1": (4, "cuda:0"), "tcp://a:2": (4, "cuda:1"),
                   "tcp://a:3": (4, "cuda:0"), "tcp://b:2": (8, "auto"),
                   "tcp://c:1": (2, "auto")}
    assert plan_placement(facts, "cpu")["tcp://a:2"] == (4, "cpu")


def test_oom_message_is_one_clear_line():
    exc = torch.cuda.OutOfMemoryError(fakeplugin.OOM_TEXT + "\nmore detail on a second line")
    msg = oom_message(exc, "cuda:0")
    assert msg == ("CUDA out of memory on cuda:0 (Tried to allocate 2.00 GiB. GPU 0 has a total "
                   "capacity of 7.79 GiB of which 1.02 GiB is free.); try a smaller size or "
                   "--workers 1")
    assert oom_message(torch.cuda.OutOfMemoryError(""), "cuda:1") == (
        "CUDA out of memory on cuda:1; try a smaller size or --workers 1")


def _toy(tmp_path, methods, **kw):
    return RunSettings(methods=methods, dataset="toy", out=str(tmp_path / "run"),
                     plugins=["helpers.fakeplugin"], device="cpu", **kw)


def test_oom_fails_the_task_frees_the_cache_and_the_run_goes_on(tmp_path, monkeypatch,
                                                                no_reports):
    freed = []
    monkeypatch.setattr(registration, "_free_cuda_cache", lambda: freed.append(1))
    result = run_benchmark(_toy(tmp_path, "oom,identity", workers=0), progress=False)
    recs = {(r.task.method, r.task.pair_id): r for r in iter_records(result.run_dir)}
    assert len(recs) == 6 and result.failed == 3 and len(freed) == 3
    for i in range(3):
        bad, good = recs[("oom", f"toy-{i}")], recs[("identity", f"toy-{i}")]
        assert bad.status == "failed" and good.status == "ok"
        assert bad.error.startswith("CUDA out of memory on ")
        assert bad.error.endswith("(Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                  "7.79 GiB of which 1.02 GiB is free.); try a smaller size or "
                                  "--workers 1")
        # failure policy: scored with the initial error
        assert bad.landmark_errors == good.initial_errors and bad.scored


def test_oom_in_a_worker_process_does_not_stop_it(tmp_path, no_reports):
    result = run_benchmark(_toy(tmp_path, "oom,identity", workers=1,
                                dataset_options={"pairs": 2}), progress=False)
    recs = {(r.task.method, r.task.pair_id): r for r in iter_records(result.run_dir)}
    assert [recs[("oom", f"toy-{i}")].status for i in range(2)] == ["failed"] * 2
    assert [recs[("identity", f"toy-{i}")].status for i in range(2)] == ["ok"] * 2
    assert all(r.error.startswith("CUDA out of memory") for (m, _), r in recs.items()
               if m == "oom")
    assert all(r.device == "cpu" for r in recs.values())


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--scheduler", "tcp://127.0.0.1:8786"], "--scheduler needs --executor dask"),
    (["--executor", "dask", "--workers", "0"], "cannot be combined with --executor dask"),
    pytest.param(["--device", "cuda"], "device 'cuda' requested but CUDA is not available",
                 marks=pytest.mark.skipif(not NO_CUDA, reason="CUDA is available here")),
    pytest.param(["--device", "cuda:0"], "device 'cuda:0' requested but CUDA is not available",
                 marks=pytest.mark.skipif(not NO_CUDA, reason="CUDA is available here")),
])
def test_device_and_executor_mistakes_are_one_line(tmp_path, args, message):
    res = CliRunner().invoke(cli, ["run", "--dataset", "toy", "--plugin", "helpers.fakeplugin",
                                   "--methods", "identity", "--out", str(tmp_path / "run"),
                                   "--quiet", *args])
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert not (tmp_path / "run" / "records").exists()


def test_finite_watch_names_the_step_or_the_window():
    """On the CPU every step is read (the exact step is named); with ``every=3`` the flag is
    read every third step and the error names the window; finite losses never raise."""
    cpu = torch.device("cpu")
    watch = tensors.FiniteWatch(cpu)
    for step in range(4):
        watch.update(torch.tensor(1.0), step)
    with pytest.raises(RuntimeError, match=r"non-finite \(nan or inf\) at step 4$"):
        watch.update(torch.tensor(float("nan")), 4)
    watch = tensors.FiniteWatch(cpu, every=3)
    watch.update(torch.tensor(1.0), 0)
    watch.update(torch.tensor(float("inf")), 1)  # not read yet
    with pytest.raises(RuntimeError, match="at one of steps 0-2$"):
        watch.update(torch.tensor(1.0), 2)
    watch = tensors.FiniteWatch(cpu, every=3)
    for step in range(4):
        watch.update(torch.tensor(2.0), step)  # read (and fine) at step 2
    watch.update(torch.tensor(float("-inf")), 4)
    with pytest.raises(RuntimeError, match="at one of steps 3-4$"):
        watch.check(4)
    assert tensors.FiniteWatch(torch.device("meta")).every == 50  # a non-CPU device
