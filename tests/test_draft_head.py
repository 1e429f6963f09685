"""The draft head (mpg.draft_head) as a proposal: speculative stays exact whatever the head predicts, and
the oracle notices a drafter that misreports the probabilities it drew from."""

from dataclasses import replace

import pytest
import torch
from oracle import check_sampler, empirical, exact_distribution, tv, tv_tolerance
from tiny import EOS

import mpg.engine
from mpg.draft_head import DraftHead, DraftHeadConfig, band_mask, load_draft_head
from mpg.policies import Attribute, Target
from mpg.samplers.drafting import Draft
from mpg.samplers.head_drafter import HeadDrafter

PROMPT = "a b"
S = 1000
PRODUCT = Target((Attribute.expert("x", "b a", 1.0), Attribute.prompted("a a", None, 0.5)), "product")
GUARDED = replace(PRODUCT, plausibility=0.2)


@pytest.fixture
def head_engine(engine):
    engine.set_draft_head(DraftHead.fresh(DraftHeadConfig.for_base(engine.models["base"]), seed=3))
    yield engine
    engine.set_draft_head(None)


def _drafted_by_head(out) -> bool:
    return any(k == "proposal:draft-head" for k in out.batches[0].forward_passes)


@pytest.mark.parametrize("target", [PRODUCT, GUARDED], ids=["product", "guarded"])
def test_speculative_with_a_head_draft_matches_p1(head_engine, target):
    out, _ = check_sampler(head_engine, target, "speculative", 3, 2, PROMPT, EOS, S, 1, proposal="head")
    assert _drafted_by_head(out)
    st = out.stats
    assert 0 < sum(s.accepted_tokens for s in st) < sum(s.drafted_tokens for s in st)


class Misreporting(HeadDrafter):
    """Draws from q but reports a sharper q: the acceptance rule is then wrong."""

    def draft(self, seqs, ks, n, u, alpha):
        d = super().draft(seqs, ks, n, u, alpha)
        return Draft(d.tokens, torch.log_softmax(3 * d.q, -1).nan_to_num(float("-inf")), d.lengths)


def test_a_head_drafter_that_misreports_q_is_caught(head_engine, monkeypatch):
    """Negative control: the same check fails for a drafter whose reported q is not what it drew from."""
    monkeypatch.setattr(mpg.engine, "HeadDrafter", Misreporting)
    p = exact_distribution(head_engine, PRODUCT, PROMPT, 3, 1, EOS)
    out = head_engine.generate(
        [PROMPT] * S,
        target=PRODUCT,
        sampler="speculative",
        proposal="head",
        max_new_tokens=3,
        seed=1234,
        eos_token_id=EOS,
        chunk_size=2,
    )
    assert tv(empirical(out.token_ids), p) > tv_tolerance(p, S)


def test_head_saved_and_loaded_is_the_same(engine, tmp_path):
    base = engine.models["base"]
    head = DraftHead.fresh(DraftHeadConfig.for_base(base), seed=1)
    head.save(tmp_path / "h", card={"note": "test"}, dtype=torch.float32)
    back = load_draft_head(tmp_path / "h", base)
    f, e = torch.randn(2, 5, head.config.hidden_size), torch.randn(2, 5, head.config.hidden_size)
    torch.testing.assert_close(back(f, e), head(f, e))


def test_a_head_for_another_base_is_refused(engine, tmp_path):
    cfg = DraftHeadConfig.for_base(engine.models["base"])
    DraftHead.fresh(replace(cfg, hidden_size=cfg.hidden_size * 2)).save(tmp_path / "h")
    with pytest.raises(ValueError, match="hidden size"):
        load_draft_head(tmp_path / "h", engine.models["base"])


def test_band_mask_keeps_the_window_and_the_padding_out():
    valid = torch.tensor([[False, True, True, True]])
    m = band_mask(valid, 2)[0]
    assert m[3].tolist() == [False, False, True, True]  # itself and one before
    assert m[1].tolist() == [False, True, False, False]  # the padding at 0 is not read
    assert not m[2, 3]  # causal


def test_no_head_falls_back_to_the_anchor_with_a_note(engine, capfd):
    engine.set_draft_head(None)
    engine._head_looked_up = True  # no shipped head for the tiny base either way
    out = engine.generate(PROMPT, target=PRODUCT, sampler="speculative", proposal="head", max_new_tokens=3)
    assert not _drafted_by_head(out) and out.token_ids[0]
    assert "drafts from the anchor instead" in capfd.readouterr().err


def _tiny_data(folder):
    """Two axes' worth of MBTI pairs and two role-play personas, in the shared data's schema."""
    import json

    for axis in ("e_i", "s_n", "t_f", "j_p"):
        for split in ("train", "test"):
            d = folder / "mbti" / "prefs" / axis
            d.mkdir(parents=True, exist_ok=True)
            rows = [
                {"instruction": f"a {'b ' * i}", "chosen": "a b a b b a", "rejected": "b b a a b"}
                for i in range(3 if split == "train" else 2)
            ]
            (d / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def test_train_draft_end_to_end_on_a_tiny_base(tmp_path):
    """mpg train-draft: features, training (progress, checkpoint), held-out acceptance, a loadable head
    with its card; a second run resumes from the checkpoint instead of starting again."""
    import json

    from tiny import tiny_model, tiny_tokenizer

    from mpg.cli import main
    from mpg.engine import Engine
    from mpg.personas import persona

    base = tmp_path / "base"
    tiny_model(seed=0).save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    _tiny_data(tmp_path / "data")
    out = tmp_path / "head"
    argv = ["train-draft", "--out", str(out), "--base", str(base), "--experts", "prompted"]
    argv += ["--data", str(tmp_path / "data"), "--texts", "6", "--test-texts", "2", "--max-tokens", "5"]
    argv += "--batch-size 4 --window 4 --dtype float32 --sampled 1 --sampled-test 1".split()
    assert main([*argv, "--steps", "4"]) == 0
    config = json.loads((out / "draft_head.json").read_text())
    acc = config["card"]["held_out_acceptance"]
    assert set(acc) == {  # prompted: no role-play experts
        "held-out prompts",
        "held-out MBTI types",
        "held-out prompts, the targets' own answers",
        "held-out MBTI types, their own answers",
    }
    assert config["card"]["data"]["sampled_per_target"] == 1
    assert all(0 <= a <= 1 for by_depth in acc.values() for a in by_depth.values())
    assert config["card"]["data"]["train_texts"] == 6 and (out / "README.md").exists()
    assert torch.load(out / "work" / "checkpoint.pt", weights_only=False)["step"] == 4
    eng = Engine.from_pretrained(base, dtype="float32")
    eng.load_draft_head(out)
    target = persona(eng, "EN", experts="prompted").target()
    o = eng.generate("a b", target=target, sampler="speculative", proposal="head", max_new_tokens=6, seed=1)
    assert _drafted_by_head(o) and o.stats[0].drafted_tokens > 0
    assert main([*argv, "--steps", "6"]) == 0  # resumes: 2 more steps
    assert torch.load(out / "work" / "checkpoint.pt", weights_only=False)["step"] == 6
    with pytest.raises(SystemExit, match="other sampled answers"):  # the cache holds 1 per target
        main([*argv, "--steps", "6", "--sampled", "2"])
    with pytest.raises(SystemExit, match="were read for the composition"):
        main([*argv, "--steps", "6", "--composition", "product,lam=1,ratio=trait"])


def test_sampled_answers_are_the_targets_own_and_read_under_it(engine):
    """add_sampled_answers: each target's texts are what generate() samples from that target (same
    prompts and seed, EOS dropped), in a group of their own read under that target's policies only,
    with the features a direct teacher-forced pass gives."""
    from mpg.draft_training import FeatureSet, add_sampled_answers, is_sampled, policy_features

    fs = FeatureSet([], [], [], [])
    named = [("one", PRODUCT), ("two", GUARDED)]
    prompts = ["a b", "b", "a a"]
    added = add_sampled_answers(engine, fs, named, prompts, 2, 4, seed=5, progress=False)
    assert added == len(fs.tokens) == len(fs.features) and [t[0].name for t in fs.targets] == [
        "one/sampled",
        "two/sampled",
    ]
    assert all(is_sampled(t[0].name) for t in fs.targets) and not is_sampled("one")
    r = 0
    for k, (_, target) in enumerate(named):
        asked = [prompts[(2 * k + i) % 3] for i in range(2)]
        want = engine.generate(asked, target=target, max_new_tokens=4, seed=5 + k, batch_size=2)
        for prompt, ids in zip(asked, want.token_ids):
            ids = [t for t in ids if t != EOS]
            if len(ids) < 2:
                continue
            assert fs.tokens[r].tolist() == ids and fs.targets[fs.group[r]][0].name.startswith(named[k][0])
            (h,) = policy_features(engine, target.policies(), [(prompt, ids)])
            torch.testing.assert_close(fs.features[r], h)
            r += 1
    assert r == added > 0


def test_a_batch_draws_the_sampled_answers_by_their_share():
    import random

    from mpg.draft_training import DraftTrainSettings, pick_batch

    pools = ([("s", i) for i in range(3)], [("d", i) for i in range(50)])
    for share, lo, hi in ((0.0, 0, 0), (1.0, 400, 400), (0.5, 160, 240)):
        picks = pick_batch(pools, share, 400, random.Random(0))
        assert lo <= sum(p[0] == "s" for p in picks) <= hi
    assert {p[0] for p in pick_batch(([], pools[1]), 1.0, 20, random.Random(0))} == {"d"}
    assert {p[0] for p in pick_batch((pools[0], []), 0.0, 20, random.Random(0))} == {"s"}
    with pytest.raises(ValueError, match="sampled_share"):
        DraftTrainSettings(sampled_share=1.5)


def test_speculative_with_a_trained_head_matches_p1(engine, tmp_path):
    """A head trained (briefly) on this target's own features, through the training code's path, and
    speculative with it is still exactly p_1; the training loss went down."""
    from mpg.draft_training import (
        DraftTrainSettings,
        FeatureSet,
        TargetSpec,
        policy_features,
        train_draft_head,
    )

    policies = PRODUCT.policies()
    texts = [(p, r) for p in ("a b", "b", "a a") for r in ([3, 4, 3], [4, 4, 3, 1], [3, 3])]
    fs = FeatureSet(
        policy_features(engine, policies, texts),
        [torch.tensor(r) for _, r in texts],
        [0] * len(texts),
        [[TargetSpec.of("product", PRODUCT, policies)]],
    )
    settings = DraftTrainSettings(steps=30, batch_size=4, lr=3e-3, window=4, checkpoint_every=30)
    model = engine.models["base"]
    from mpg.draft_training import _batch, _loss

    def loss(head):
        with torch.no_grad():
            emb = model.get_input_embeddings().weight.float()
            return _loss(head, emb, model.get_output_embeddings().weight, *_batch(fs, fs.samples()), 1.0)[0]

    before = loss(DraftHead.fresh(DraftHeadConfig.for_base(model, window=4), seed=0))
    head = train_draft_head(fs, model, settings, tmp_path, progress=False)
    assert loss(head) < before
    engine.set_draft_head(head)
    try:
        out, _ = check_sampler(engine, PRODUCT, "speculative", 3, 2, PROMPT, EOS, S, 1, proposal="head")
        assert _drafted_by_head(out)
    finally:
        engine.set_draft_head(None)


def test_the_drafter_reads_the_features_training_reads(head_engine):
    """Alignment: each round's first drafted distribution is the head's prediction from the window of
    true features, computed teacher-forced from scratch (as training computes them) over the
    response the round started from. A drafter that kept a feature one position off would fail this."""
    from mpg.draft_training import TargetSpec, policy_features
    from mpg.samplers.drafting import proposal_logprobs

    engine = head_engine
    seen = []

    class Recording(HeadDrafter):
        def draft(self, seqs, ks, n, u, alpha):
            d = super().draft(seqs, ks, n, u, alpha)
            seen.append((list(seqs[0].y), d.q[0, 0, 0].clone(), self.known[0]))
            return d

    target = replace(PRODUCT, plausibility=0.2)
    prompt = "a b"
    mp = pytest.MonkeyPatch()
    mp.setattr(mpg.engine, "HeadDrafter", Recording)
    try:
        out = engine.generate(
            prompt,
            target=target,
            sampler="speculative",
            proposal="head",
            max_new_tokens=12,
            eos_token_id=[],
            chunk_size=3,
            seed=7,
        )
    finally:
        mp.undo()
    y = out.token_ids[0]
    policies = target.policies()
    h = policy_features(engine, policies, [(prompt, y)])[0].float()  # [P, T+1, H]
    g = TargetSpec.of("t", target, policies).compose(h)  # [T+1, H]
    head, model = engine.draft_head, engine.models["base"]
    W, emb = model.get_output_embeddings(), model.get_input_embeddings()
    checked = 0
    for prefix, q, known in seen:
        n = len(prefix)
        if known != n or n == 0:
            continue  # a first round drafts uniformly
        lo = max(0, n - head.config.window)
        with torch.no_grad():
            pred = head(g[None, lo:n], emb(torch.tensor([y[lo:n]])).float())[0, -1]
            want = proposal_logprobs(W(pred), 1.0, 1.0, target.plausibility)
        assert torch.equal(q.isinf(), want.isinf())
        torch.testing.assert_close(q[~q.isinf()], want[~want.isinf()], atol=1e-4, rtol=0)
        checked += 1
    assert checked >= 2
