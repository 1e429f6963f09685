"""Persona-vector extraction: the vector is persona-mean minus neutral-mean of block outputs over
response tokens; save/load round-trips; merge is the weighted average; steering with it moves the
activations along it."""

import pytest
import torch

from mpg.extract import PersonaVectors, collect_responses, extract_persona_vectors, response_activation
from mpg.policies import Policy
from mpg.steering import Steer


@pytest.fixture(scope="module")
def vectors(engine):
    return extract_persona_vectors(
        engine,
        {"bee": ["b b"], "ant": ["a a", "a b a"]},
        ["b a"],
        ["a", "b a"],
        samples=2,
        max_new_tokens=4,
        seed=0,
        progress=False,
    )


def test_vector_is_mean_difference_of_response_activations(engine, vectors):
    model = engine.models["base"]
    assert vectors.vectors["bee"].shape == (2, 32)  # [n_layers, H]
    assert vectors.meta["kept_responses"]["ant"] == 2 * 2 * 2  # 2 prompts x 2 questions x 2 samples
    # the same generations (same seed), averaged by hand
    responses = collect_responses(
        engine,
        {"bee": ["b b"], "ant": ["a a", "a b a"]},
        ["b a"],
        ["a", "b a"],
        samples=2,
        max_new_tokens=4,
        seed=0,
        progress=False,
    )
    mean = lambda who: torch.stack(
        [response_activation(model, c, r) for n, c, r in responses if n == who]
    ).mean(0)
    torch.testing.assert_close(vectors.vectors["bee"], mean("bee") - mean(None))
    torch.testing.assert_close(vectors.vectors["ant"], mean("ant") - mean(None))
    # a response activation is the mean block output over the response tokens only, on the base
    # weights: the engine's model carries LoRA adapters, which extraction must switch off
    ctx, resp = responses[0][1], responses[0][2]
    hs = []
    h = model.get_base_model().model.layers[1].register_forward_hook(lambda m, a, o: hs.append(o))
    with torch.no_grad():
        with model.disable_adapter():
            model(input_ids=torch.tensor([ctx + resp]))
        model(input_ids=torch.tensor([ctx + resp]))  # with the active adapter
    h.remove()
    got = response_activation(model, ctx, resp)[1]
    torch.testing.assert_close(got, hs[0][0, len(ctx) :].mean(0))
    assert not torch.allclose(got, hs[1][0, len(ctx) :].mean(0))  # the adapter would have changed it


def test_filter_drops_persona_responses(engine):
    with pytest.raises(ValueError, match="filtered out"):
        extract_persona_vectors(
            engine,
            {"bee": ["b b"]},
            ["b a"],
            ["a"],
            max_new_tokens=3,
            progress=False,
            response_filter=lambda persona, question, text: False,
        )


def test_merge_and_round_trip(vectors, tmp_path):
    merged = vectors.merge(["bee", "ant"], [3.0, 1.0])
    torch.testing.assert_close(merged, 0.75 * vectors.vectors["bee"] + 0.25 * vectors.vectors["ant"])
    with pytest.raises(ValueError, match="unknown persona vector"):
        vectors.merge(["bee", "wasp"])
    vectors.save(tmp_path / "v")
    back = PersonaVectors.load(tmp_path / "v")
    torch.testing.assert_close(back.vectors["ant"], vectors.vectors["ant"])
    assert back.meta["norms"]["bee"] == pytest.approx(vectors.norms()["bee"])


@torch.inference_mode()
def test_steering_with_extracted_vector_moves_projection(engine, vectors):
    engine.add_steering_vector("bee", vectors.vectors["bee"])
    ctx = engine.context_ids(Policy(), "a b")
    unit = vectors.vectors["bee"][1] / vectors.vectors["bee"][1].norm()
    from mpg.steering import row_deltas, steered

    plain = response_activation(engine.models["base"], ctx[:-2], ctx[-2:])[1] @ unit
    with steered(engine.models["base"], row_deltas([(Steer("bee", 1, 4.0),)], engine.vectors, 32, "cpu")):
        moved = response_activation(engine.models["base"], ctx[:-2], ctx[-2:])[1] @ unit
    zero_alpha = row_deltas([(Steer("bee", 1, 0.0),)], engine.vectors, 32, "cpu")
    with steered(engine.models["base"], zero_alpha):
        same = response_activation(engine.models["base"], ctx[:-2], ctx[-2:])[1] @ unit
    assert float(moved - plain) == pytest.approx(4.0 * float(vectors.vectors["bee"][1].norm()), rel=1e-4)
    assert float(same) == pytest.approx(float(plain), abs=1e-6)


def test_cli_extract_vectors_on_a_local_model_folder(tmp_path, tokenizer, capsys):
    from tiny import tiny_model

    from mpg import cli

    base = tmp_path / "tiny"
    tiny_model(seed=4).save_pretrained(base)
    tokenizer.save_pretrained(base)
    (tmp_path / "p.json").write_text('{"bee": ["b b"], "ant": ["a a"]}')
    (tmp_path / "q.txt").write_text("a\nb a\n")
    rc = cli.main(
        [
            "extract-vectors",
            "--base",
            str(base),
            "--personas",
            str(tmp_path / "p.json"),
            "--questions",
            str(tmp_path / "q.txt"),
            "--samples",
            "1",
            "--max-new-tokens",
            "3",
            "--out",
            str(tmp_path / "v"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    back = PersonaVectors.load(tmp_path / "v")
    assert set(back.vectors) == {"bee", "ant"} and back.meta["questions"] == ["a", "b a"]
    assert cli.main(["extract-vectors", "--personas", "mbti", "--data", str(tmp_path / "nowhere")]) == 2
    assert "personas.json not found" in capsys.readouterr().err
