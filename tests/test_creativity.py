"""Creativity scores (split_ideas, fluency, originality, flexibility) on hand-made answers with a fake
embedder, and a reduced end-to-end run of benchmarks/record/creativity.py on a tiny random model."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from mpg.eval.creativity import (
    agglomerative_clusters,
    flexibility,
    fluency,
    hash_embedder,
    originality,
    score_answer,
    split_ideas,
    valid_ideas,
)
from mpg.stats import mean_ci, t_quantile_975

PROMPT = "What are some creative uses for a fork?"


def axis_embedder(table: dict[str, list[float]]):
    """Fake embedder: each text maps to a fixed vector (L2-normalised) from `table`."""

    def embed(texts):
        return torch.nn.functional.normalize(
            torch.tensor([table[t] for t in texts], dtype=torch.float32), dim=-1
        )

    return embed


def test_split_ideas_numbered_list_drops_intro_headers_and_duplicates():
    text = (
        "Here are some creative uses for a fork:\n\n"
        "1. **Garden marker**: label the plants.\n"
        "2) Comb a doll's hair\n"
        "- Comb a DOLL'S hair!!\n"
        "3. \n"
        "### Kitchen\n"
        "* Whisk two eggs.\n"
        "Hope this helps!"
    )
    assert split_ideas(text) == ["Garden marker: label the plants.", "Comb a doll's hair", "Whisk two eggs."]


def test_split_ideas_sentences_and_inline_numbers():
    assert split_ideas("Use it as a comb. Use it as a comb!  Stir paint with it? ") == [
        "Use it as a comb.",
        "Stir paint with it?",
    ]
    assert split_ideas("1. stir paint 2. poke holes 3. stir paint") == ["stir paint", "poke holes"]
    assert split_ideas("") == [] and split_ideas("  \n\n ") == []


def test_fluency_counts_distinct_valid_ideas():
    ideas = [
        "Stir paint with it",
        "stir paint, with it!",
        "Comb",
        "uses for a fork",
        "A fork",
        "Poke holes in dough",
    ]
    # duplicate (case/punctuation), one word, and restatements of the prompt are not counted
    assert valid_ideas(ideas, PROMPT) == ["Stir paint with it", "Poke holes in dough"]
    assert fluency(ideas, PROMPT) == 2
    assert fluency([], PROMPT) == 0


def test_originality_is_semdis_distance():
    embed = axis_embedder(
        {
            "fork": [1, 0, 0],
            "eat with it": [1, 0, 0],
            "make jewellery": [0, 1, 0],
            "half": [1, 1, 0],
            "opposite": [-1, 0, 0],
        }
    )
    assert originality("fork", ["eat with it"], embed) == pytest.approx(0.0)  # identical to the cue
    assert originality("fork", ["make jewellery"], embed) == pytest.approx(1.0)  # orthogonal
    assert originality("fork", ["eat with it", "make jewellery"], embed) == pytest.approx(0.5)  # the mean
    assert originality("fork", ["half"], embed) == pytest.approx(1 - 1 / math.sqrt(2))
    assert originality("fork", ["opposite"], embed) == pytest.approx(2.0)
    assert math.isnan(originality("fork", [], embed))
    assert originality(PROMPT, [PROMPT, PROMPT], hash_embedder()) == pytest.approx(0.0, abs=1e-6)


def test_flexibility_counts_semantic_clusters():
    e = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    embed = axis_embedder({"a1": e[0], "a2": [0.95, 0.05, 0], "b1": e[1], "b2": [0.05, 0.95, 0], "c": e[2]})
    assert flexibility(["a1", "b1", "c"], embed) == 3  # orthogonal ideas: separate categories
    assert flexibility(["a1", "a2"], embed) == 1  # near-identical ideas: one category
    assert flexibility(["a1", "a2", "b1", "b2", "c"], embed) == 3
    assert flexibility([], embed) == 0
    assert flexibility(["a1", "b1"], embed, threshold=1.01) == 1  # a cut above every distance merges all


def test_average_linkage_uses_mean_distance():
    # 0-1 close; 2 is at distance 0.5 from 0 and 0.9 from 1: average 0.7 to {0, 1}
    dist = torch.tensor([[0.0, 0.1, 0.5], [0.1, 0.0, 0.9], [0.5, 0.9, 0.0]])  # [3, 3]
    assert sorted(map(sorted, agglomerative_clusters(dist, 0.6))) == [
        [0, 1],
        [2],
    ]  # single linkage would join 2
    assert len(agglomerative_clusters(dist, 0.71)) == 1
    assert len(agglomerative_clusters(dist, 0.05)) == 3


def test_score_answer_and_hash_embedder():
    embed = hash_embedder()
    v = embed(["stir paint", "Stir, PAINT!", ""])  # [3, D]
    assert (
        torch.allclose(v[0], v[1]) and float(v[0].norm()) == pytest.approx(1.0) and float(v[2].norm()) == 0.0
    )
    s = score_answer(
        "1. Stir paint with it\n2. stir paint with it\n3. Comb hair with it", PROMPT, "fork", embed
    )
    assert s["fluency"] == 2 and s["ideas"] == ["Stir paint with it", "Comb hair with it"]
    assert 0 < s["originality"] <= 1 and s["flexibility"] in (1, 2)


def test_mean_ci():
    assert t_quantile_975(4) == pytest.approx(2.776, abs=1e-3) and t_quantile_975(30) == pytest.approx(
        2.042, abs=1e-3
    )
    ci = mean_ci([1.0, 2.0, 3.0, float("nan")])  # nan (no ideas) is left out
    assert ci["n"] == 3 and ci["mean"] == pytest.approx(2.0)
    assert ci["hi"] - ci["mean"] == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-4)
    assert mean_ci([]) == {"mean": None, "lo": None, "hi": None, "n": 0}
    assert mean_ci([5.0])["lo"] == 5.0


def _load_benchmark():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "record" / "creativity.py"
    spec = importlib.util.spec_from_file_location("creativity_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_single_policy_target_is_the_policy(engine):
    bench = _load_benchmark()
    from mpg import Policy

    policy = Policy(system="b a")
    a = engine.generate(
        "a b",
        target=bench.single_policy_target(policy),
        sampler="fused",
        max_new_tokens=6,
        seed=3,
        eos_token_id=[],
    )
    # the same law as sampling the policy as an anchor under a zero-strength attribute
    from mpg import Attribute, Target

    b = engine.generate(
        "a b",
        target=Target((Attribute(Policy(), Policy(system="a"), 1.0),), lam=0.0, anchor=policy),
        sampler="fused",
        max_new_tokens=6,
        seed=3,
        eos_token_id=[],
    )
    assert a.token_ids == b.token_ids
    assert a.policies == [policy.label()] and list(a.stats[0].forward_passes) == [
        policy.label()
    ]  # scored once
    assert len(b.policies) == 3


def test_benchmark_end_to_end_on_tiny_model(tmp_path, tokenizer):
    pytest.importorskip("matplotlib")
    from tiny import tiny_model

    base = tmp_path / "tiny"
    tiny_model(seed=2).save_pretrained(base)
    tokenizer.save_pretrained(base)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"task": "aut", "object": "fork", "prompt": "uses for a fork"},
                {"task": "aut", "object": "hat", "prompt": "hat"},
                {"task": "instances", "prompt": "round things"},
                {"task": "similarities", "prompt": "book vs magazine"},
                {"task": "scientific", "prompt": "rubber band tools"},
            ]
        )
        + "\n"
    )
    bench = _load_benchmark()
    out = tmp_path / "out"
    rc = bench.main(
        [
            "--tasks",
            str(tasks),
            "--per-task",
            "1",
            "--base",
            str(base),
            "--max-new-tokens",
            "6",
            "--embedder",
            "hash",
            "--extract-samples",
            "1",
            "--extract-max-new-tokens",
            "3",
            "--alpha",
            "4",
            "--vectors",
            str(out / "creative_vectors"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == set(bench.METHODS)
    for m in results["methods"].values():
        assert m["items"] == 4 and set(m["per_task"]) == set(bench.TASKS)
        assert {"fluency", "originality", "flexibility", "wall_time_s", "new_tokens", "tokens_per_s"} <= set(
            m
        )
        assert {"mean", "lo", "hi", "n"} == set(m["fluency"])
    assert len(results["items"]) == 4 * len(bench.METHODS)
    scored = [r for r in results["items"] if r["fluency"] > 0]  # "a b ..." answers add words to these prompts
    assert scored and all(r["originality"] is not None and r["flexibility"] >= 1 for r in scored)
    assert results["config"]["layer"] == 1  # 2/3 of the tiny model's 2 blocks
    assert (out / "creative_vectors.safetensors").exists()  # extracted on the fly, then reused
    assert (out / "plot.png").stat().st_size > 0 and "| mpg |" in (out / "table.md").read_text()
    # steering changes the law: same seeds, different outputs somewhere
    texts = {m: [r["text"] for r in results["items"] if r["method"] == m] for m in bench.METHODS}
    assert texts["merged_steering"] != texts["single"] or texts["mpg"] != texts["single"]


def test_minilm_embedder_ranks_paraphrases_above_unrelated_text():
    from mpg.eval.creativity import minilm_embedder

    embed = minilm_embedder()
    v = embed(
        ["Use a fork to comb your hair.", "Brush your hair with a fork.", "Quarterly tax filing deadlines."]
    )
    assert v.shape == (3, 384) and torch.allclose(v.norm(dim=-1), torch.ones(3), atol=1e-4)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.3
