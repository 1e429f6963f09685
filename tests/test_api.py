"""generate(): reproducibility, stopping, stats, bounded work and clear errors on bad input."""

import math

import pytest
from tiny import EOS, tiny_model, tiny_tokenizer

from mpg.engine import Engine
from mpg.policies import Attribute, Policy, Target

ATTRS = [Attribute.expert("x", "b a", 1.0), Attribute.prompted("a a", None, 0.5)]


@pytest.mark.parametrize("sampler", ["fused", "speculative", "scr"])
def test_same_seed_same_output(engine, sampler):
    run = lambda seed: (
        engine.generate(
            ["a b", "b"], ATTRS, sampler=sampler, max_new_tokens=8, seed=seed, eos_token_id=[]
        ).token_ids
    )
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_greedy_is_the_same_for_fused_and_speculative(engine):
    kw = dict(max_new_tokens=8, temperature=0, eos_token_id=[])
    fused = engine.generate("a b", ATTRS, sampler="fused", **kw)
    spec = engine.generate("a b", ATTRS, sampler="speculative", chunk_size=3, **kw)
    assert fused.token_ids == spec.token_ids and len(fused.token_ids[0]) == 8


def test_eos_and_max_new_tokens(engine):
    out = engine.generate(["a b"] * 20, ATTRS, sampler="scr", max_new_tokens=5, seed=0, eos_token_id=EOS)
    for ids, text in zip(out.token_ids, out.texts):
        assert 1 <= len(ids) <= 5
        assert EOS not in ids[:-1]
        assert "<eos>" not in text
    assert any(ids[-1] == EOS for ids in out.token_ids)
    empty = engine.generate("a b", ATTRS, max_new_tokens=0)
    assert empty.token_ids == [[]] and empty.texts == [""]


def test_stop_strings_cut_text_and_tokens(engine):
    full = engine.generate("a b", ATTRS, sampler="fused", seed=1, max_new_tokens=12, eos_token_id=[])
    words = full.texts[0].split()
    stop_word = words[2]  # stop at the first occurrence of the third word
    cut = engine.generate(
        "a b", ATTRS, sampler="fused", seed=1, max_new_tokens=12, eos_token_id=[], stop=[stop_word]
    )
    first = full.texts[0].find(stop_word)
    assert cut.texts[0] == full.texts[0][:first]
    assert cut.token_ids[0] == full.token_ids[0][: len(cut.token_ids[0])]
    assert len(cut.token_ids[0]) < 12


def test_streamer_receives_every_token(engine):
    class Collect:
        def __init__(self):
            self.ids, self.ended = [], False

        def put(self, value):
            self.ids += value.tolist()

        def end(self):
            self.ended = True

    s = Collect()
    out = engine.generate("a b", ATTRS, sampler="scr", max_new_tokens=10, streamer=s, eos_token_id=[])
    assert s.ids == out.token_ids[0] and s.ended


def test_stats_count_forward_passes_and_identical_policies_once(engine):
    # den of the prompted attribute is the plain base under the prompt = the anchor: scored once
    t = Target((Attribute.expert("x", "b a"), Attribute(Policy(system="a"), Policy(), 1.0)))
    out = engine.generate("a b", target=t, sampler="fused", max_new_tokens=6, eos_token_id=[])
    st = out.stats[0]
    assert len(out.policies) == 4  # anchor, x[b a], base[b a], base[a]
    assert st.model_calls == 1 + 6  # prefill + one batched pass per token
    assert set(st.forward_passes.values()) == {7}
    spec = engine.generate(
        "a b", target=t, sampler="speculative", chunk_size=4, max_new_tokens=12, eos_token_id=[]
    ).stats[0]
    assert spec.new_tokens == 12 and spec.drafted_tokens >= spec.accepted_tokens
    assert spec.rounds <= 12 and 0 <= spec.acceptance_rate <= 1


def test_scr_work_is_bounded_when_nothing_is_ever_accepted(engine):
    out = engine.generate(
        "a b", ATTRS, sampler="scr", threshold=1e4, max_rejections=3, max_new_tokens=5, eos_token_id=[]
    )
    st = out.stats[0]
    assert st.new_tokens == 5 and st.fallbacks == 5 and st.rejections == 15 and st.accepted_tokens == 0


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(attributes=[]), "no attributes"),
        (
            dict(
                attributes=[Attribute.prompted("a", weight=-1.0), Attribute.prompted("b")],
                aggregator="mixture",
            ),
            "mixture weights must be >= 0",
        ),
        (
            dict(attributes=[Attribute.prompted("a", weight=0.0), Attribute.prompted("b", weight=0.0)]),
            "all attribute weights are zero",
        ),
        (dict(attributes=[Attribute.prompted("a", weight=math.nan)]), "finite"),
        (dict(attributes=ATTRS, aggregator="sum"), "unknown aggregator"),
        (dict(attributes=ATTRS, lam=-1), "lam"),
        (dict(attributes=ATTRS, max_new_tokens=-1), "max_new_tokens"),
        (dict(attributes=ATTRS, sampler="beam"), "unknown sampler"),
        (dict(attributes=ATTRS, sampler="scr", temperature=0), "greedy"),
        (dict(attributes=ATTRS, top_p=0), "top_p"),
        (dict(attributes=ATTRS, chunk_size=0), "chunk_size"),
        (dict(attributes=[Attribute.expert("nope")]), "unknown adapter 'nope'"),
        (dict(attributes=[Attribute(Policy(model="gpt"), Policy(), 1.0)]), "unknown model 'gpt'"),
    ],
)
def test_bad_generation_arguments(engine, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        engine.generate("a b", **kwargs)


@pytest.mark.parametrize("prompt", ["", "   ", [""]])
def test_empty_prompt(engine, prompt):
    with pytest.raises(ValueError, match="empty|no prompts"):
        engine.generate(prompt, ATTRS)


def test_unknown_generate_keyword(engine):
    with pytest.raises(TypeError, match="chunksize"):
        engine.generate("a b", ATTRS, chunksize=4)


def test_mismatched_tokenizer_and_vocabulary(engine):
    other_words = tiny_tokenizer(["<pad>", "<eos>", "<unk>", "a", "z"])
    with pytest.raises(ValueError, match="different tokenizer"):
        engine.add_model("m1", tiny_model(seed=2), other_words)
    with pytest.raises(ValueError, match="output vocabulary of 9 tokens"):
        engine.add_model("m2", tiny_model(seed=2, vocab_size=9))


def test_adapter_errors(engine, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter folder"):
        engine.load_adapter("ghost", tmp_path)


def test_adapter_with_another_tokenizer_is_refused(tmp_path, tokenizer):
    from tiny import add_lora

    peft = add_lora(tiny_model(seed=3), ["z"])
    peft.save_pretrained(tmp_path)
    moved = tmp_path / "z"
    tiny_tokenizer(["<pad>", "<eos>", "<unk>", "a", "q"]).save_pretrained(moved)
    eng = Engine(tiny_model(seed=3), tokenizer)
    with pytest.raises(ValueError, match="different tokenizer"):
        eng.load_adapter("z", moved)


def test_adapter_trained_on_another_base_is_refused(tmp_path, tokenizer):
    from tiny import add_lora
    from transformers import LlamaConfig, LlamaForCausalLM

    narrow = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=5,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    add_lora(narrow, ["w"]).save_pretrained(tmp_path)
    eng = Engine(tiny_model(seed=3), tokenizer)
    with pytest.raises(ValueError, match="does not fit model 'base'"):
        eng.load_adapter("w", tmp_path / "w")


# ---- the target a call samples ----------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        dict(attributes=ATTRS[:1]),
        dict(aggregator="mixture"),
        dict(lam=0.5),
        dict(anchor=Policy(system="a")),
        dict(proposal=Policy(system="a")),
        dict(policy=Policy(system="a")),
    ],
)
def test_target_with_parts_that_would_be_ignored_is_an_error(engine, extra):
    t = Target(tuple(ATTRS))
    with pytest.raises(ValueError, match="target= already defines|either target= or policy="):
        engine.generate("a b", target=t, **extra)


def test_target_with_parts_that_repeat_its_own_values_is_fine(engine):
    t = Target(tuple(ATTRS))
    kw = dict(sampler="fused", max_new_tokens=3, eos_token_id=[], seed=1)
    same = engine.generate("a b", target=t, attributes=ATTRS, aggregator="product", lam=1.0, **kw)
    assert same.token_ids == engine.generate("a b", target=t, **kw).token_ids


def test_policy_alone_is_sampled_without_composition(engine):
    p = Policy(adapter="x", system="b a")
    out = engine.generate("a b", policy=p, sampler="fused", max_new_tokens=6, seed=2, eos_token_id=[])
    assert out.policies == [p.label()] and out.batches[0].model_calls == 1 + 6
    same = engine.generate(
        "a b", target=Target.single(p), sampler="fused", max_new_tokens=6, seed=2, eos_token_id=[]
    )
    assert same.token_ids == out.token_ids
    with pytest.raises(ValueError, match="do not also pass attributes"):
        engine.generate("a b", ATTRS, policy=p)


def test_batch_totals_are_reported_once_per_batch(engine):
    out = engine.generate(
        ["a b", "b", "a"], ATTRS, sampler="fused", max_new_tokens=4, eos_token_id=[], batch_size=2
    )
    assert [b.prompts for b in out.batches] == [[0, 1], [2]]
    assert [s.model_calls for s in out.stats] == [out.batches[0].model_calls] * 2 + [
        out.batches[1].model_calls
    ]


@pytest.mark.parametrize("stop_at", [1, 3, 5])
def test_stop_strings_found_in_new_text_equal_a_whole_text_search(engine, stop_at):
    """Each step searches only its new text; the result equals cutting the full text at the first hit."""
    full = engine.generate(
        "a b", ATTRS, sampler="speculative", temperature=0, max_new_tokens=12, eos_token_id=[], chunk_size=3
    )
    text = full.texts[0]
    stop = text[stop_at : stop_at + 3]  # may span the boundary between two steps' tokens
    cut = engine.generate(
        "a b",
        ATTRS,
        sampler="speculative",
        temperature=0,
        max_new_tokens=12,
        eos_token_id=[],
        chunk_size=3,
        stop=[stop, "never there"],
    )
    assert cut.texts[0] == text[: text.find(stop)]
    assert cut.token_ids[0] == full.token_ids[0][: len(cut.token_ids[0])]


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(stop=[3]), "stop must be"), (dict(batch_size=0), "batch_size"), (dict(top_p="x"), "top_p")],
)
def test_generate_config_names_the_bad_setting(engine, kwargs, match):
    with pytest.raises(ValueError, match=match):
        engine.generate("a b", ATTRS, **kwargs)


@pytest.mark.parametrize("sampler", ["fused", "speculative"])
def test_temperature_zero_is_the_argmax_of_p1(engine, sampler):
    """Greedy decoding: every token is p_1's most likely token (checked against the target enumerated
    from scratch, one prefix at a time)."""
    from oracle import exact_distribution

    target = Target(tuple(ATTRS), "product")
    out = engine.generate(
        "a b", target=target, sampler=sampler, temperature=0, max_new_tokens=3, eos_token_id=[]
    )
    ids = out.token_ids[0]
    for t in range(len(ids)):
        p = exact_distribution(engine, target, "a b", t + 1, 1, None)  # p_1 over t+1 tokens
        after = {seq[t]: q for seq, q in p.items() if list(seq[:t]) == ids[:t]}
        assert ids[t] == max(after, key=after.get)
