"""Experts: preference files, DPO training on a tiny model, fingerprints, and personas built from experts."""

import json

import pytest
import torch
from tiny import add_lora, tiny_model, tiny_tokenizer

from mpg import cli
from mpg.engine import Engine
from mpg.expert_file import write_expert_info
from mpg.personas import AXIS_ADAPTERS, ROLEPLAY_ADAPTERS, persona
from mpg.policies import Policy
from mpg.training import infer_contexts, load_preferences, mirrored_pairs

CHAT = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def _pairs(n, chosen="a a a", rejected="b b b"):
    return [{"prompt": "a b" if i % 2 else "b a", "chosen": chosen, "rejected": rejected} for i in range(n)]


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


# ---- preference files --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content,match",
    [
        (None, "does not exist"),
        (b"\xff\xfe\x00garbage", "unreadable"),
        ("{not json}\n", "line 1 is not JSON"),
        ('{"prompt": "p", "chosen": "c"}\n', "line 1 has no text field 'rejected'"),
        ("[1, 2]\n", "not a JSON object"),
        ("\n\n", "no preference pairs"),
    ],
)
def test_bad_preference_files(tmp_path, content, match):
    f = tmp_path / "prefs.jsonl"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_preferences(f)


def test_cli_reports_unreadable_preference_file_in_one_line(tmp_path, capsys):
    f = tmp_path / "bad.jsonl"
    f.write_text("nope\n")
    assert cli.main(["train-expert", str(f), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "line 1 is not JSON" in err


def test_contexts_are_recovered_from_the_training_prompts():
    rows = [
        {"prompt": "Intro. Now you are the 'E'. Answer:Say hi.", "side": "E", "instruction": "Say hi."},
        {"prompt": "Intro. Now you are the 'I'. Answer:Count.", "side": "I", "instruction": "Count."},
    ]
    assert infer_contexts(rows) == {
        "E": "Intro. Now you are the 'E'. Answer:{prompt}",
        "I": "Intro. Now you are the 'I'. Answer:{prompt}",
    }
    rp = [{"prompt": "Play:\nProfile: A cook.\nPersonalities: Shy.\nNow begin."}]
    assert infer_contexts(rp) == {
        "roleplay": "Play:\nProfile: {profile}\nPersonalities: {personality}\nNow begin."
    }


def test_mirrored_pairs_ask_the_other_side_with_the_answers_swapped():
    rows = [
        {
            "prompt": "Be E:Say hi.",
            "side": "E",
            "instruction": "Say hi.",
            "chosen": "Hi all!",
            "rejected": "hi",
        },
        {"prompt": "Be I:Count.", "side": "I", "instruction": "Count.", "chosen": "1", "rejected": "1 2 3!"},
    ]
    contexts = infer_contexts(rows)
    assert mirrored_pairs(rows, contexts) == [
        {
            "prompt": "Be I:Say hi.",
            "side": "I",
            "instruction": "Say hi.",
            "chosen": "hi",
            "rejected": "Hi all!",
        },
        {"prompt": "Be E:Count.", "side": "E", "instruction": "Count.", "chosen": "1 2 3!", "rejected": "1"},
    ]
    with pytest.raises(ValueError, match="exactly two sides; these pairs have E"):
        mirrored_pairs(rows[:1], infer_contexts(rows[:1]))


# ---- DPO training end to end on a tiny model ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-base")
    tok = tiny_tokenizer()
    tok.chat_template = CHAT
    tiny_model(seed=0).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_train_expert_learns_a_preference_and_writes_a_model_card(tiny_base, tmp_path):
    pytest.importorskip("trl")
    train = _write_jsonl(tmp_path / "train.jsonl", _pairs(32))
    test = _write_jsonl(tmp_path / "test.jsonl", _pairs(8))
    out = tmp_path / "expert"
    rc = cli.main(
        [
            "train-expert",
            str(train),
            "--test",
            str(test),
            "--out",
            str(out),
            "--base",
            str(tiny_base),
            "--max-train",
            "0",
            "--epochs",
            "3",
            "--lr",
            "5e-2",
            "--top-layers",
            "0",
            "--no-bf16",
            "--batch-size",
            "8",
            "--grad-accum",
            "1",
        ]
    )
    assert rc == 0
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "README.md",
        "metrics.json",
        "mpg_expert.json",
    ):
        assert (out / name).exists(), name
    record = json.loads((out / "metrics.json").read_text())
    held = record["metrics"]["held_out"]
    assert held["pairs"] == 8
    assert held["reward_accuracy"] == 1.0 and held["mean_reward_margin"] > 0  # learned "a a a" over "b b b"
    assert held["likelihood_accuracy"] >= held["base_likelihood_accuracy"]
    card = (out / "README.md").read_text()
    assert "untrained base" in card and "mpg train-expert" in card
    # the adapter loads onto the same base and moves its scores toward the chosen answers
    eng = Engine.from_pretrained(tiny_base, adapters={"x": out})
    assert "x" in eng.adapters["base"]


def test_calibrate_expert_writes_one_spread_per_side(tiny_base, tmp_path, capsys):
    from mpg.expert_file import expert_spreads

    tok = tiny_tokenizer()
    tok.chat_template = CHAT
    folder = tmp_path / "expert"
    folder.mkdir()
    _expert_folder(
        folder, tiny_model(seed=0), tok, name="default", contexts={"E": "E {prompt}", "I": "I {prompt}"}
    )
    rows = [
        {"prompt": f"{side} a b", "side": side, "instruction": "a b", "chosen": "a a", "rejected": "b"}
        for side in ("E", "I", "E")
    ]
    pairs = _write_jsonl(tmp_path / "test.jsonl", rows)
    argv = [
        "calibrate-expert",
        str(folder),
        "--pairs",
        str(pairs),
        "--base",
        str(tiny_base),
        "--max-pairs",
        "1",
    ]
    assert cli.main(argv) == 0
    spreads = expert_spreads(folder)
    assert set(spreads) == {"E", "I"} and all(v > 0 for v in spreads.values())
    info = json.loads((folder / "mpg_expert.json").read_text())
    assert info["contexts"]["E"] == "E {prompt}" and "first 1 pairs" in info["ratio_spread_source"]
    assert "ratio spread" in capsys.readouterr().out
    assert cli.main([*argv[:-1], "0"]) == 2  # --max-pairs 0: a one-line error


# ---- fingerprints: adapters trained on another base / tokenizer --------------------------------
def _expert_folder(path, base, tok, name="x", contexts=None):
    peft = add_lora(base, [name])
    peft.save_pretrained(path)
    folder = path / name if (path / name).exists() else path
    write_expert_info(folder, peft, tok, contexts or {}, "tiny")
    return folder


def test_expert_from_another_checkpoint_is_refused(tmp_path, tokenizer):
    folder = _expert_folder(tmp_path, tiny_model(seed=7), tokenizer)
    eng = Engine(tiny_model(seed=8), tokenizer)  # same architecture, other weights: shapes fit
    with pytest.raises(ValueError, match="trained on another base model"):
        eng.load_adapter("x", folder)
    ok = Engine(tiny_model(seed=7).to(torch.bfloat16), tokenizer)  # same weights in another dtype: accepted
    ok.load_adapter("x", folder)


def test_expert_with_another_tokenizer_is_refused(tmp_path, tokenizer):
    other = tiny_tokenizer(["<pad>", "<eos>", "<unk>", "a", "q"])
    folder = _expert_folder(tmp_path, tiny_model(seed=7), other)
    eng = Engine(tiny_model(seed=7), tokenizer)
    with pytest.raises(ValueError, match="another tokenizer"):
        eng.load_adapter("x", folder)


# ---- personas from expert folders ---------------------------------------------------------------
@pytest.fixture()
def experts_dir(tmp_path, tokenizer):
    d = tmp_path / "experts"
    d.mkdir()
    for axis, name in AXIS_ADAPTERS.items():
        (d / name).mkdir()
        _expert_folder(
            d / name,
            tiny_model(seed=0),
            tokenizer,
            name="default",
            contexts={s: f"{s} a {{prompt}}" for s in axis},
        )
    for name in ROLEPLAY_ADAPTERS:
        (d / name).mkdir()
        _expert_folder(
            d / name,
            tiny_model(seed=0),
            tokenizer,
            name="default",
            contexts={"roleplay": "a {profile} b {personality} a"},
        )
    return d


def test_mbti_persona_uses_one_adapter_per_axis_with_the_side_in_its_context(experts_dir, tokenizer):
    d = experts_dir
    eng = Engine(tiny_model(seed=0), tokenizer)
    p = persona(eng, "INTP", experts=d)
    assert [a.name for a in p.attributes] == list("INTP")
    assert [a.num.adapter for a in p.attributes] == ["mbti_e_i", "mbti_s_n", "mbti_t_f", "mbti_j_p"]
    assert p.attributes[0].num.template == "I a {prompt}" and p.attributes[0].den.adapter is None
    # ratio=opposite: each letter's expert over the same adapter under the other letter
    opp = persona(eng, "INTP", experts=d, composition="product,lam=1,plausibility=0.1,ratio=opposite")
    assert (opp.attributes[0].den.adapter, opp.attributes[0].den.template) == ("mbti_e_i", "E a {prompt}")
    out = eng.generate("a b", list(p.attributes), anchor=p.anchor, sampler="scr", max_new_tokens=4, seed=0)
    assert len(out.token_ids[0]) <= 4
    w = persona(eng, "E=1,N=0.5", experts=d)
    assert [(a.name, a.weight) for a in w.attributes] == [("E", 1.0), ("N", 0.5)]


def test_persona_composition_weights_anchor_and_cli(experts_dir, tokenizer, capsys):
    from mpg.expert_file import write_spreads

    d = experts_dir
    eng = Engine(tiny_model(seed=0), tokenizer)
    with pytest.raises(ValueError, match="none for E, N"):  # never calibrated: named, not guessed
        persona(eng, "EN", experts=d, composition="product,weights=spread")
    write_spreads(d / "mbti_e_i", {"E": 3.0, "I": 1.0}, "test")
    write_spreads(d / "mbti_s_n", {"S": 1.0, "N": 1.0}, "test")
    p = persona(eng, "EN", experts=d, composition="mixture,lam=0.5,weights=spread,anchor=prompt")
    assert [a.weight for a in p.attributes] == pytest.approx([2.0 / 3.0, 2.0])  # mean spread 2
    assert p.aggregator == "mixture" and p.lam == 0.5 and "extravert" in p.anchor.system
    t = p.target()
    assert (t.aggregator, t.lam, t.anchor) == ("mixture", 0.5, p.anchor)
    assert p.target(lam=0.0).lam == 0.0 and p.target(aggregator="product").aggregator == "product"
    plain = persona(eng, "EN", experts=d)  # the default composition: weights as given, the bare base
    assert [a.weight for a in plain.attributes] == [1.0, 1.0] and plain.anchor == Policy()
    with pytest.raises(ValueError, match="unknown weight rule"):
        persona(eng, "EN", experts=d, composition="product,weights=loud")


def test_roleplay_persona_needs_no_prompt(experts_dir, tokenizer):
    d = experts_dir
    eng = Engine(tiny_model(seed=0), tokenizer)
    p = persona(eng, None, profile="b b", personality="a", experts=d)
    assert not p.needs_prompt and p.anchor.template == "a b b b a a{prompt}"
    out = eng.generate("", list(p.attributes), anchor=p.anchor, sampler="fused", max_new_tokens=3, seed=1)
    assert len(out.token_ids[0]) <= 3


def test_missing_expert_folder_is_named(experts_dir, tokenizer):
    d = experts_dir
    import shutil

    shutil.rmtree(d / "mbti_t_f")
    eng = Engine(tiny_model(seed=0), tokenizer)
    with pytest.raises(FileNotFoundError, match="mbti_t_f is missing"):
        persona(eng, "ENTJ", experts=d)
    with pytest.raises(FileNotFoundError, match="experts folder .* does not exist"):
        persona(eng, "ENTJ", experts=d / "nowhere")


def test_prompted_personas_need_no_adapter(tokenizer):
    eng = Engine(tiny_model(seed=0), tokenizer)
    p = persona(eng, "ESFJ", traits=[("You are terse.", 0.5)], experts="prompted")
    assert [a.name for a in p.attributes][:4] == list("ESFJ") and p.attributes[-1].weight == 0.5
    assert all(a.num.adapter is None for a in p.attributes)
    with pytest.raises(ValueError, match="role-play personas need the role-play experts"):
        persona(eng, None, profile="x", personality="y", experts="prompted")
