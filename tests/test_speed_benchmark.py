"""benchmarks/speed.py end to end on a tiny model: every sampler kind runs, ratios are taken per repeat."""

import json
import sys
from pathlib import Path

from tiny import tiny_model, tiny_tokenizer

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))


def test_speed_benchmark_runs_on_a_tiny_model(tmp_path):
    import speed

    base = tmp_path / "base"
    tiny_model(seed=0).save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    out = tmp_path / "out"
    speed.main(
        [
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
            "mod,fused,speculative:2,scr:2,scr:2x2,billy",
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
