"""Steering analysis: the projection shift follows the vector and alpha = 0 is a no-op; perplexity is
the base model's; recommend() follows its rule; the sweep and projection scripts run end to end; the
lm-eval steering file is what lm-eval's own loader reads and adds what mpg adds."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from mpg.eval.steering.lm_eval_export import export_lm_eval_steer
from mpg.eval.steering.profile import projection_profile
from mpg.eval.steering.responses import mean_activations, steered_responses
from mpg.eval.steering.sweep import projection_shift, recommend
from mpg.eval.text_metrics import fluency_ppl
from mpg.extract import PersonaVectors
from mpg.policies import Policy
from mpg.steering import Steer, row_deltas, steered

PROMPTS = ["a b", "b a b"]
ROOT = Path(__file__).resolve().parent.parent


def script(name):
    """A benchmark script by its path under benchmarks/, e.g. "record/steering_sweep"."""
    spec = importlib.util.spec_from_file_location(name.replace("/", "_"), ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    from tiny import tiny_model

    path = tmp_path_factory.mktemp("tiny")
    tiny_model(seed=3).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def two_vectors():
    g = torch.Generator().manual_seed(11)
    return PersonaVectors({"bee": torch.randn(2, 32, generator=g), "ant": torch.randn(2, 32, generator=g)})


def test_projection_shift_grows_with_alpha_and_alpha_zero_is_a_no_op(engine):
    v = engine.vectors["v"]  # [2, H]
    shifts = projection_shift(engine, v, 1, [0.0, 1.0, 2.0, 4.0], PROMPTS, max_new_tokens=6, seed=0)
    assert shifts[0] == 0.0  # exactly: same tokens, same activations
    assert 0 < shifts[1] < shifts[2] < shifts[3]
    plain = steered_responses(engine, None, 1, 0.0, PROMPTS, max_new_tokens=6, seed=0)
    assert steered_responses(engine, v, 1, 0.0, PROMPTS, max_new_tokens=6, seed=0) == plain
    assert steered_responses(engine, v, 0, 0.0, PROMPTS, max_new_tokens=6, seed=3) == steered_responses(
        engine, None, 0, 0.0, PROMPTS, max_new_tokens=6, seed=3
    )


def test_measurement_sees_the_steered_block_output(engine):
    """On fixed tokens, the measured activation at the steered block moves by exactly alpha * v[L]
    (the capture hook runs after the steering hook) and blocks before it do not move."""
    model, v = engine.models["base"], engine.vectors["v"]
    responses = steered_responses(engine, None, 0, 0.0, PROMPTS, max_new_tokens=4, seed=1)
    plain = mean_activations(engine, responses)  # [n_layers, H]
    moved = mean_activations(
        engine, responses, row_deltas([(Steer("v", 1, 3.0),)], engine.vectors, 32, "cpu")
    )
    torch.testing.assert_close(moved[1] - plain[1], 3.0 * v[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moved[0], plain[0])
    # and the adapters are off: the same as the bare base weights, not what the active adapter gives
    ctx, resp = responses[0]
    outs = []
    hook = model.get_base_model().model.layers[1].register_forward_hook(lambda m, a, o: outs.append(o))
    with torch.no_grad():
        with model.disable_adapter():
            model(input_ids=torch.tensor([ctx + resp]))
        model(input_ids=torch.tensor([ctx + resp]))
    hook.remove()
    bare, adapted = (o[0, len(ctx) :].mean(0) for o in outs)  # [H] each
    assert not torch.allclose(bare, adapted)
    torch.testing.assert_close(mean_activations(engine, responses[:1])[1], bare)


def test_fluency_ppl_is_base_model_perplexity(engine, tokenizer):
    model = engine.models["base"]
    ctx = engine.context_ids(Policy(), "a b")
    resp = [3, 4, 4, 3]
    with torch.no_grad(), model.disable_adapter():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ctx + resp])).logits[0], -1)
    nll = -sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(resp))
    assert fluency_ppl(engine, [resp], [ctx]) == pytest.approx(math.exp(nll / 4), rel=1e-5)
    assert fluency_ppl(engine, ["a b b a"], ["a b"]) == pytest.approx(math.exp(nll / 4), rel=1e-5)
    assert math.isnan(fluency_ppl(engine, [[]], [ctx]))


def test_recommend_picks_largest_shift_within_the_perplexity_budget():
    rec = lambda layer, alpha, shift, ratio: {
        "layer": layer,
        "alpha": alpha,
        "projection_shift": shift,
        "ppl_ratio": ratio,
    }
    records = [
        rec(10, 0.0, 0.0, 1.0),
        rec(10, 2.0, 3.0, 1.2),
        rec(10, 8.0, 9.0, 2.5),
        rec(20, 2.0, 4.0, 1.4),
        rec(20, 4.0, 4.0, 1.1),
        rec(20, 8.0, float("nan"), float("inf")),
    ]
    assert recommend(records) == rec(20, 2.0, 4.0, 1.4)  # tie on shift: the smaller alpha
    assert recommend(records, max_ppl_ratio=1.3) == rec(20, 4.0, 4.0, 1.1)
    assert recommend(records, max_ppl_ratio=3.0) == rec(10, 8.0, 9.0, 2.5)
    assert recommend(records, max_ppl_ratio=1.05) is None
    assert (
        recommend([rec(10, -2.0, -1.0, 1.0), rec(10, 0.0, 0.0, 1.0)]) is None
    )  # never "no steering" or a negative shift


def test_projection_profile_applies_the_merged_vector(engine, two_vectors):
    kw = {"max_new_tokens": 4, "seed": 2, "progress": False}
    res = projection_profile(
        engine, two_vectors, ["bee", "ant"], "b b a", PROMPTS, 1, 3.0, weights=[0.0, 1.0], **kw
    )
    assert set(res["conditions"]) == {"multi_role_prompt", "merged", "single:bee", "single:ant"}
    assert all(len(res["conditions"][c][n]) == 2 for c in res["conditions"] for n in ("bee", "ant"))
    assert res["conditions"]["merged"] == res["conditions"]["single:ant"]  # weights [0, 1]: merged is ant
    assert res["conditions"]["merged"] != res["conditions"]["single:bee"]
    json.dumps(res)
    zero = projection_profile(engine, two_vectors, ["bee", "ant"], "b b a", PROMPTS, 1, 0.0, **kw)
    for cond in ("merged", "single:bee", "single:ant"):  # alpha 0: nothing moves
        assert all(x == 0.0 for n in ("bee", "ant") for x in zero["conditions"][cond][n])
    assert any(x != 0.0 for x in zero["conditions"]["multi_role_prompt"]["bee"])


def test_sweep_and_projection_scripts_end_to_end(tiny_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")  # the `eval` extra
    (tmp_path / "prompts.txt").write_text("a b\nb a b\n")
    common = [
        "--base",
        str(tiny_dir),
        "--vectors",
        str(tmp_path / "vec" / "v"),
        "--prompts",
        "2",
        "--prompt-file",
        str(tmp_path / "prompts.txt"),
        "--max-new-tokens",
        "4",
        "--extract-samples",
        "1",
        "--extract-max-new-tokens",
        "3",
    ]
    assert (
        script("record/steering_sweep").main(
            common
            + [
                "--persona",
                "creative_professional",
                "--layers",
                "0,1",
                "--alphas",
                "0,1,4",
                "--out",
                str(tmp_path / "sweep"),
            ]
        )
        == 0
    )
    out = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [(r["layer"], r["alpha"]) for r in out["records"]] == [
        (L, a) for L in (0, 1) for a in (0.0, 1.0, 4.0)
    ]
    assert all(
        r["projection_shift"] == 0.0 and r["ppl_ratio"] == 1.0 for r in out["records"] if r["alpha"] == 0
    )
    assert out["recommendation"] == recommend(out["records"]) and "command" in out and "machine" in out
    assert (tmp_path / "sweep" / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "recommended" in capsys.readouterr().out or out["recommendation"] is None

    assert (
        script("experiments/projection").main(
            common
            + [
                "--personas",
                "creative_professional,E",
                "--layer",
                "1",
                "--alpha",
                "2",
                "--out",
                str(tmp_path / "proj"),
            ]
        )
        == 0
    )
    prof = json.loads((tmp_path / "proj" / "projection.json").read_text())
    assert set(prof["conditions"]) == {
        "multi_role_prompt",
        "merged",
        "single:creative_professional",
        "single:E",
    }
    assert len(prof["conditions"]["merged"]["E"]) == 2
    assert (tmp_path / "proj" / "projection.png").read_bytes()[:4] == b"\x89PNG"
    assert set(PersonaVectors.load(tmp_path / "vec" / "v").vectors) == {
        "creative_professional",
        "E",
    }  # E was added


def test_lm_eval_export_round_trips(tiny_dir, two_vectors, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    path = tmp_path / "steer.pt"
    export_lm_eval_steer(two_vectors, path, ["bee", "ant"], [3.0, 1.0], layer=1, alpha=2.5, model=model)
    cfg = torch.load(path, weights_only=True)  # plain tensors, numbers, strings
    assert list(cfg) == ["layers.1"]
    entry = cfg["layers.1"]
    assert entry["action"] == "add" and entry["steering_coefficient"] == 2.5
    assert entry["bias"] is None and entry["head_index"] is None
    torch.testing.assert_close(entry["steering_vector"], two_vectors.merge(["bee", "ant"], [3.0, 1.0])[1])
    with pytest.raises(ValueError, match=".pt or .pth"):
        export_lm_eval_steer(two_vectors, tmp_path / "steer.json", ["bee"], layer=1, alpha=1.0)

    # lm-eval's own loader and hook give the same logits as mpg's steering with the merged vector
    hf_steered = pytest.importorskip("lm_eval.models.hf_steered")
    lm = hf_steered.SteeredModel(
        pretrained=str(tiny_dir), steer_path=str(path), device="cpu", dtype="float32"
    )
    ids = torch.tensor([[3, 4, 4, 3, 4]])
    theirs = lm._model_call(ids)
    deltas = row_deltas(
        [(Steer("m", 1, 2.5),)], {"m": two_vectors.merge(["bee", "ant"], [3.0, 1.0])}, 32, "cpu"
    )
    with torch.no_grad(), steered(model, deltas):
        ours = model(input_ids=ids).logits
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert (ours - plain).abs().max() > 1e-3


def test_steered_proposal_script_end_to_end(tiny_dir, tmp_path):
    out = tmp_path / "sp"
    assert (
        script("experiments/steered_proposal").main(
            [
                "--base",
                str(tiny_dir),
                "--persona",
                "EN",
                "--experts",
                "prompted",
                "--vectors",
                str(tmp_path / "vec" / "v"),
                "--layer",
                "1",
                "--alphas",
                "0,2",
                "--prompts",
                "2",
                "--max-new-tokens",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rec = json.loads((out / "results.json").read_text())
    assert [r["alpha"] for r in rec["results"]] == [0.0, 2.0]
    for r in rec["results"]:
        assert 0 <= r["accepted"] <= r["drafted"] and r["new_tokens"] <= 2 * 4
    assert "steered, alpha 2" in (out / "table.md").read_text()
