"""A base loaded with an explicit accelerate device map (every entry "cpu" on this machine) gives the
same tokens as the unsharded engine for every sampler, with LoRA adapters and steering."""

import json

import pytest
import torch
from tiny import add_lora, tiny_model, tiny_tokenizer

from mpg import Attribute, Engine, Policy, Steer
from mpg.cli import main as cli_main

DEVICE_MAP = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "cpu",
    "model.norm": "cpu",
    "lm_head": "cpu",
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    tiny_model(seed=0).save_pretrained(root / "base")
    tiny_tokenizer().save_pretrained(root / "base")
    add_lora(tiny_model(seed=0), ["x"], alpha=8).save_pretrained(root / "adapters")
    return root


def _engine(folders, **kw):
    e = Engine.from_pretrained(folders / "base", **kw)
    e.load_adapter("x", folders / "adapters" / "x")
    e.add_steering_vector("v", torch.randn(2, 32, generator=torch.Generator().manual_seed(3)))
    return e


@pytest.mark.parametrize("sampler", ["fused", "speculative", "scr"])
def test_sharded_engine_gives_the_unsharded_tokens(folders, sampler):
    attrs = [Attribute.expert("x", "b a"), Attribute(Policy(steering=Steer("v", 1, 1.5)), Policy(), 0.5)]
    kw = dict(sampler=sampler, max_new_tokens=8, seed=1, eos_token_id=[], chunk_size=3)
    plain = _engine(folders).generate(["a b", "b"], attrs, **kw)
    sharded = _engine(folders, device_map=DEVICE_MAP, dtype="float32").generate(["a b", "b"], attrs, **kw)
    assert sharded.token_ids == plain.token_ids and all(len(t) == 8 for t in plain.token_ids)


def test_cli_device_map_and_its_errors(folders, capsys):
    args = ["generate", "a b", "--base", str(folders / "base"), "--experts", "prompted", "--persona", "E"]
    args += ["--sampler", "fused", "--max-new-tokens", "3", "--no-stream", "--stats"]
    assert cli_main([*args, "--device-map", json.dumps(DEVICE_MAP)]) == 0
    out = capsys.readouterr()
    assert out.out.strip()
    stats = json.loads(
        out.err[out.err.index("{") :], parse_constant=lambda c: pytest.fail(f"{c} is not JSON")
    )
    assert stats["new_tokens"] == 3 and stats["acceptance_rate"] is None  # fused drafts nothing: null
    assert cli_main([*args, "--device-map", "{not json"]) != 0
    assert "--device-map is not valid JSON" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown dtype 'float13'"):
        Engine.from_pretrained(folders / "base", dtype="float13")
