"""benchmarks/record/speed.py end to end on a tiny model: every sampler kind runs, ratios are taken per repeat."""

import json
import sys
from pathlib import Path

from tiny import tiny_model, tiny_tokenizer

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks" / "record"))


def test_speed_benchmark_runs_on_a_tiny_model(tmp_path):
    import speed

    base = tmp_path / "base"
    tiny_model(seed=0).save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    out = tmp_path / "out"
    from mpg.draft_head import DraftHead, DraftHeadConfig

    DraftHead.fresh(DraftHeadConfig.for_base(tiny_model(seed=0))).save(tmp_path / "head")
    speed.main(
        [
            "--draft-head",
            str(tmp_path / "head"),
            "--base",
            str(base),
            "--kinds",
            "prompted",
            "--n",
            "1,2",
            "--batch",
            "1,2",
            "--repeats",
            "2",
            "--samplers",
            "mod,fused,speculative:2,speculative:2@head,scr:2,scr:2x2,billy",
            "--max-new-tokens",
            "4",
            "--lora-kernels",
            "",
            "--no-memory",
            "--vectors",
            str(tmp_path / "none"),
            "--out",
            str(out),
        ]
    )
    r = json.loads((out / "speed.json").read_text())
    assert (out / "table.md").exists() and (out / "speed.png").stat().st_size > 0
    keys = set(r["summary"])
    assert {
        "floor|b1",
        "floor|b2",
        "mod|prompted|n2|b1",
        "scr:2x2|prompted|n2|b2",
        "billy|prompted|n1|b2",
        "speculative:2@head|prompted|n2|b2",
    } <= keys
    assert "mod|prompted|n1|b2" not in keys  # MOD-style has no batching
    for key, runs in r["runs"].items():
        assert len(runs) == 2
        for run in runs:
            assert run["tokens"] > 0 and run["tokens_per_s"] > 0 and run["peak_rss_mib"] > 0
            if not key.startswith("floor"):
                assert run["vs_floor"] > 0
    fused = r["runs"]["fused|prompted|n2|b2"]
    assert all(run["tokens"] == 2 * 4 for run in fused)  # both prompts, no early EOS
    assert r["runs"]["scr:2|prompted|n2|b1"][0]["acceptance_rate"] is not None
    assert r["runs"]["mod|prompted|n2|b1"][0]["calls_per_token"] >= 3  # one forward per policy per token


def test_separate_full_models_score_as_their_adapters():
    """The `full` kind: an expert merged into its own copy of the base gives the logits its LoRA gives."""
    import copy

    import speed
    import torch
    from tiny import add_lora

    from mpg import Attribute, Engine

    engine = Engine(add_lora(tiny_model(seed=0), ["x", "y"], alpha=8), tiny_tokenizer())
    engine.adapters["base"] |= {"x", "y"}
    attrs = [Attribute.expert("x", "b a", 1.0, name="x"), Attribute.expert("y", "a", 1.0, name="y")]
    full = speed.separate_full_models(engine, attrs)
    assert [a.num.model for a in full] == ["full_x", "full_y"] and all(a.num.adapter is None for a in full)
    assert [a.den for a in full] == [a.den for a in attrs]  # denominators stay on the base
    ids = torch.tensor([[1, 2, 3, 2]])
    for name in ("x", "y"):
        ref = copy.deepcopy(engine.models["base"])
        ref.set_adapter(name)
        with torch.no_grad():
            want = ref(input_ids=ids).logits
            got = engine.models[f"full_{name}"](input_ids=ids).logits
            with ref.disable_adapter():
                bare = ref(input_ids=ids).logits
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
        assert not torch.allclose(got, bare, atol=1e-3)  # the adapter did change the model
    out = engine.generate("a b", full, sampler="fused", max_new_tokens=3, eos_token_id=[])
    models = {label.split("[")[0] for label in out.stats[0].forward_passes}  # labels: model[context]
    assert len(out.token_ids[0]) == 3 and models == {"base", "full_x", "full_y"}


def test_goals_read_the_first_composition_at_n_max():
    import speed

    def s(tps, floor=None, mod=None, acc=None):
        m = lambda v: {"median": v, "min": v, "max": v}  # noqa: E731
        return {"tokens_per_s": m(tps), "vs_floor": m(floor), "vs_mod": m(mod), "acceptance_rate": m(acc)}

    summary = {
        "fused|lora|n4|b1": s(4.0, 0.5),
        "speculative:4|lora|n4|b1": s(3.0, 0.4, acc=0.8),
        "scr:4|lora|n4|b1": s(1.0, 0.1, acc=0.4),
        "fused|lora|n4|b8": s(8.0, 0.6),
        "fused|lora|n4|b1|product,lam=1,weights=given,anchor=base": s(9.0, 0.9),  # not the first composition
        "mod|full|n4|b1": s(1.0, 0.1, 1.0),
        "speculative:4|full|n4|b1": s(2.5, 0.3, 2.5),
        "scr:4|full|n4|b1": s(2.0, 0.2, 2.0),
    }
    g = speed.goals(summary, [4], ["lora", "full"])
    assert g["fastest_exact_vs_floor"] == 0.5
    assert g["scr_default_acceptance"] == 0.4 and g["scr_default_vs_fused"] == 0.25
    assert g["batch8_over_batch1"] == {"fused": 2.0}
    assert g["full_models_best_drafted_vs_mod"] == 2.5


def test_targets_keep_every_composition_option(tmp_path):
    """The benchmarked target is the persona's own: a plausibility constraint is not dropped on the way
    (it once was, so 'the default composition' ran without its constraint)."""
    import speed

    from mpg import Engine

    engine = Engine(tiny_model(seed=0), tiny_tokenizer())
    vectors, _ = speed.vector_source(engine, str(tmp_path / "none"))
    target, _ = speed.targets(engine, "prompted", 2, vectors, "mixture,lam=0.5,plausibility=0.1")
    assert (target.aggregator, target.lam, target.plausibility) == ("mixture", 0.5, 0.1)
    assert len(target.attributes) == 2
