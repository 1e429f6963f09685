"""Data-parallel evaluation for real: `accelerate launch --multi_gpu --num_processes 2` on this CPU-only
machine (torchrun workers, gloo on 127.0.0.1; accelerate's `--cpu` with several processes needs MPI)
runs benchmarks/record/fidelity.py's reduced run on the tiny model, and its results equal a one-process run's."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import dp_fidelity
import pytest
import torch
from test_fidelity import make_synthetic_data

from mpg.distributed import Shard, current_shard
from mpg.eval.judge import load_or_train_judges

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = Path(sys.executable).parent / "accelerate"
# what legitimately differs between two runs of the same work: clocks, paths, the process count
VOLATILE = {"command", "machine", "total_wall_s", "timings_s", "processes", "wall_s", "wall_time_s"}
VOLATILE |= {"tokens_per_s", "out", "vectors"}
# and the forward-pass counts: a process reuses the context heads it computed before (the engine's head
# cache), so how many prefill passes a batch needs depends on what its process ran earlier
VOLATILE |= {"model_calls", "forward_passes"}


def test_shard_splits_round_robin_and_gathers_in_order():
    units = list("abcdefg")
    shares = [Shard(r, 3).mine(units) for r in range(3)]
    assert [[i for i, _ in s] for s in shares] == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(u for s in shares for _, u in s) == units
    one = Shard()
    assert one.map(str.upper, units) == list("ABCDEFG") and one.is_main
    assert current_shard() == Shard()  # plain python: one process holds every share


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _assert_same(a, b, where="results"):
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_fidelity_benchmark_on_two_processes_equals_one(tmp_path):
    pytest.importorskip("matplotlib")
    if not ACCELERATE.exists():
        pytest.fail(f"accelerate's launcher is missing at {ACCELERATE}")
    data = make_synthetic_data(tmp_path / "data")
    judges = tmp_path / "judges"
    # trained once, read by both runs
    load_or_train_judges(data, judges, embedder="hash256", progress=False, experts=data / "experts")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MASTER_ADDR": "127.0.0.1"}
    driver = str(ROOT / "tests" / "dp_fidelity.py")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process (OMP_NUM_THREADS=1): the same float reductions
    try:
        assert dp_fidelity.main(str(data), str(judges), str(tmp_path / "one")) == 0  # one process, in here
    finally:
        torch.set_num_threads(threads)
    launch = [
        str(ACCELERATE),
        "launch",
        "--multi_gpu",  # = torchrun workers; without a GPU they use gloo on the CPU
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(_free_port()),
    ]
    two = subprocess.run(
        [*launch, driver, str(data), str(judges), str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert a["processes"] == 1 and b["processes"] == 2
    assert len(b["parts"]["freeform"]["answers"]) == 6 * len(a["parts"]["freeform"]["methods"]) - 6
    _assert_same(_strip(a), _strip(b))
