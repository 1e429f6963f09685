"""The lm-eval plugin past one request and one process: its batched scoring (one PolicyScorer per call,
context heads shared) gives each request's own likelihood, and `accelerate launch --num_processes 2`
(gloo, two CPU processes) gives the one-process results."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")
from lm_eval.api.instance import Instance

from mpg import Attribute, Policy, Steer, Target
from mpg.engine import Engine
from mpg.eval.lm_eval_plugin import MPGLM, _pieces, batched_logliks
from mpg.likelihood import target_loglik

HEAD = "a b b a b a a b a b b b a a b a b a"  # a long instruction every context shares
CONTEXTS = [f"{HEAD} {tail}" for tail in ("a", "b a", "b b a b", "a a b")]
ACCELERATE = Path(sys.executable).parent / "accelerate"
TASK_YAML = Path(__file__).parents[1] / "mpg/eval/tasks/mbti_16p/mbti_16p.yaml"
ITEMS = [
    {"id": i + 1, "statement": s, "dimension": d, "keyed": k}
    for i, (s, d, k) in enumerate(
        [
            ("a b", "E/I", "E"),
            ("b", "T/F", "F"),
            ("a a", "P/J", "P"),
            ("b a b", "S/N", "N"),
            ("a b b a", "E/I", "I"),
        ]
    )
]


def _target(aggregator: str) -> Target:
    """A target over LoRA, another model, steering and prompts (conftest's engine)."""
    return Target(
        (
            Attribute.expert("x", "a b", 1.0),
            Attribute(Policy(model="other", template="b {prompt}"), Policy(), 0.5),
            Attribute(Policy(steering=Steer("v", 1, 2.0)), Policy(system="a"), 2.0),
            Attribute(Policy(template="{prompt} a b", adapter="y"), Policy(), 1.0),  # a longer tail
        ),
        aggregator,
        lam=0.7,
        anchor=Policy(system="b"),
    )


@pytest.mark.parametrize(("mode", "aggregator"), [("token", "product"), ("chunk", "mixture")])
def test_batched_equals_one_request_at_a_time(engine, mode, aggregator):
    """One scorer over contexts sharing a long head (rows' tails differing in length) = target_loglik per
    (context, option), however many prompts share a forward; also when one context shares nothing (no
    head cached); with block 3, option 4 is long (block by block) and the others come in two pieces."""
    target = _target(aggregator)
    options = [[3], [4, 3, 3], [1, 4], [3, 3, 4, 4, 3]]
    contexts = [*CONTEXTS, "b"]
    refs = [[target_loglik(engine, target, c, o, mode) for o in options] for c in contexts]
    settings = [(CONTEXTS, 256, 128), (CONTEXTS, 3, 128), (CONTEXTS, 256, 1), (contexts, 256, 10_000)]
    for prompts, block, feed in settings:  # feed 1: one prompt per forward; 10_000: all in one
        got = batched_logliks(engine, target, prompts, [options] * len(prompts), mode, block=block, feed=feed)
        for ref, (scores, greedy) in zip(refs, got):
            assert torch.allclose(scores, torch.tensor(ref, dtype=torch.float64), atol=1e-5)
            assert greedy.dtype == torch.bool and greedy.shape == (len(options),)


def test_rows_with_and_without_a_cached_head(engine):
    """The contexts the tests above score: every row caches the long head, tails differ per row."""
    from mpg.likelihood import PolicyScorer, target_policies

    scorer = PolicyScorer(engine, target_policies(_target("mixture")), CONTEXTS)
    caches = engine.registry.head_caches
    for c in caches.values():
        c.entries.clear()
    scorer.logprobs_many(list(range(len(CONTEXTS))), [[[3]]] * len(CONTEXTS))
    heads = [len(key[1]) for c in caches.values() for key in c.entries]
    assert heads and min(heads) >= len(HEAD.split()) and len(set(scorer.tail_widths())) > 1


def test_greedy_flags_match(engine):
    """The greedy flags are the one-request path's (target_logliks), for options that are and are not p_1's
    argmax."""
    from mpg.likelihood import target_logliks

    target = _target("mixture")
    options = [[t] for t in range(5)] + [[a, b] for a in (3, 4) for b in (3, 4)]
    for context, (_, greedy) in zip(
        CONTEXTS, batched_logliks(engine, target, CONTEXTS, [options] * len(CONTEXTS), "token")
    ):
        _, ref = target_logliks(engine, target, context, options, "token")
        assert greedy.tolist() == ref.tolist() and any(greedy.tolist())


def test_pieces():
    assert _pieces([1, 2, 1, 5, 3], 4) == [[0, 1], [2], [4]]  # 5 > block: scored block by block elsewhere
    assert _pieces([2, 2, 2], 256) == [[0, 1, 2]]
    assert _pieces([], 4) == []


@pytest.mark.parametrize("method", ["fused_mixture", "scr_k4"])
def test_lm_loglikelihood_batched(base_dir, method):
    """MPGLM.loglikelihood (requests interleaved across contexts) and loglikelihood_rolling = target_loglik
    per request; one process is rank 0 of 1 and its collectives are no-ops."""
    engine = Engine.from_pretrained(base_dir)
    lm = MPGLM(engine=engine, persona="ENTJ", experts="prompted", method=method)
    assert (lm.rank, lm.world_size) == (0, 1)
    pairs = [(c, o) for o in ("Agree", "Disagree", "a b Agree") for c in CONTEXTS]
    got = lm.loglikelihood([Instance("loglikelihood", {}, p, 0) for p in pairs], disable_tqdm=True)
    for (context, option), (score, greedy) in zip(pairs, got):
        assert score == pytest.approx(target_loglik(engine, lm.target, context, option, lm.mode), abs=1e-5)
        assert isinstance(greedy, bool)
    texts = ["a b Agree", "Disagree b", "a"]
    rolling = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), 0) for t in texts])
    for t, score in zip(texts, rolling):
        assert score == pytest.approx(target_loglik(engine, lm.target, "", t, "token"), abs=1e-5)
    assert lm.loglikelihood_rolling([]) == []
    t = torch.tensor(3)
    assert lm.all_gather(t) is t and lm.gather_object({"x": 1}) == [{"x": 1}] and lm.barrier() is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(base_dir, data: Path, out: Path, processes: int) -> str:
    """lm-eval's CLI (`-m lm_eval`, the task by path) on the tiny model on the CPU: plain python (1) or
    `accelerate launch` with 2 processes; returns its stderr.

    Why `--multi_gpu` and not `--cpu`: accelerate 1.15 starts several CPU processes only through mpirun
    (`--cpu --mpirun_hostfile`); `--cpu --num_processes 2` runs one process. `--multi_gpu` starts them with
    torchrun, and with no GPU visible the plugin's accelerate state takes gloo on the CPU."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(out.parent / f"hf{processes}"),
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
        "MASTER_ADDR": "127.0.0.1",  # gloo on this machine only
    }
    lm_eval = [
        "-m",
        "lm_eval",
        "--model",
        "mpg",
        "--model_args",
        f"base={base_dir},persona=ENTJ,experts=prompted,method=fused_mixture",
        "--tasks",
        str(TASK_YAML),
        "--metadata",
        f"data_path={data}",
        "--device",
        "cpu",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    if processes == 1:
        cmd = [sys.executable, *lm_eval]
    else:
        launch = ["launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1"]
        launch += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port())]
        launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd = [str(ACCELERATE), *launch, *lm_eval]
    proc = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


def _totals(stderr: str) -> set[str]:
    """The request counts the plugin's loglikelihood progress bars showed (one bar per process)."""
    return set(re.findall(r"mpg loglikelihood: [^\n\r]*?\| \d+/(\d+) \[", stderr))


def _results(out: Path) -> tuple[dict, dict]:
    """(the task's results, {doc_id: [(loglik, greedy) per option]}) of one run."""
    (results,) = list(out.rglob("results_*.json"))
    (samples,) = list(out.rglob("samples_mbti_16p_*.jsonl"))
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    logged = {
        r["doc_id"]: [(float(v), g == "True" or g is True) for v, g in r["filtered_resps"]] for r in rows
    }
    return json.loads(results.read_text())["results"]["mbti_16p"], logged


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed")
def test_accelerate_two_processes_match_one(base_dir, tmp_path):
    """`accelerate launch --num_processes 2 -m lm_eval --model mpg` (gloo, two CPU processes) splits the 5
    documents between two ranks (3 + 2, the shorter share padded) and gathers: the same accuracy and
    logged log-likelihoods as one process."""
    data = tmp_path / "q.json"
    data.write_text(json.dumps(ITEMS))
    one_err = _run(base_dir, data, tmp_path / "one", 1)
    two_err = _run(base_dir, data, tmp_path / "two", 2)
    assert "on rank 1" not in one_err and "on rank 1" in two_err  # lm-eval built rank 1's share
    assert _totals(one_err) == {"10"} and _totals(two_err) == {"6"}  # 5 docs; 3 + (2 + 1 padding) per rank
    one, one_logged = _results(tmp_path / "one")
    two, two_logged = _results(tmp_path / "two")
    assert one["sample_len"] == two["sample_len"] == len(ITEMS)
    assert two["acc,none"] == pytest.approx(one["acc,none"])
    assert sorted(two_logged) == sorted(one_logged) == list(range(len(ITEMS)))
    for doc in one_logged:
        for (a, ga), (b, gb) in zip(one_logged[doc], two_logged[doc], strict=True):
            assert b == pytest.approx(a, abs=1e-4) and ga == gb


def test_speed_benchmark_runs(base_dir, tmp_path, monkeypatch):
    """benchmarks/experiments/lm_eval_speed.py, reduced, on the tiny model: both paths score the task's requests
    alike and the JSON says how fast."""
    import importlib.util

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    data = tmp_path / "q.json"
    data.write_text(json.dumps(ITEMS))
    path = Path(__file__).parents[1] / "benchmarks/experiments/lm_eval_speed.py"
    spec = importlib.util.spec_from_file_location("lm_eval_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--base", str(base_dir), "--experts", "prompted", "--data", str(data), "--items", "4"]
    res = bench.main([*args, "--out", str(tmp_path / "out")])
    saved = json.loads((tmp_path / "out/results.json").read_text())
    assert saved["items"] == 4 and saved["requests"] == 8 and saved["max_abs_diff"] < 1e-4
    assert saved["greedy_agree"] and saved["speedup"] > 0 and res["new"]["s_per_item"] > 0
    assert {"platform", "cpu_count", "torch"} <= set(saved["machine"])
