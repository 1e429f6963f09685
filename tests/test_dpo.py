"""mpg.dpo, the shared-prompt DPO loop: same tokens and same loss as TRL's DPOTrainer on one batch."""

import pytest
import torch
from tiny import add_lora, tiny_model, tiny_tokenizer

from mpg.dpo import answer_logprobs, dpo_loss, reference_logprobs, tokenize_pair, train_dpo

CHAT = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
ROWS = [
    {"prompt": "a b a", "chosen": "a a b", "rejected": "b"},
    {"prompt": "b", "chosen": "b b b a", "rejected": "a a"},
    {"prompt": "a a b b a", "chosen": "a", "rejected": "b a b a b"},
    {"prompt": "b a", "chosen": "a b", "rejected": "b b"},
]


def _tok():
    tok = tiny_tokenizer()
    tok.chat_template = CHAT
    return tok


def test_answer_logprobs_equal_full_sequence_scoring():
    model, tok = add_lora(tiny_model(seed=1), ["x"]), _tok()
    pair = tokenize_pair(tok, ROWS[2], None)
    got = answer_logprobs(model, pair.prompt, [pair.chosen, pair.rejected])  # [2]
    for k, answer in enumerate((pair.chosen, pair.rejected)):
        ids = torch.tensor([pair.prompt + answer])  # [1, P+A]
        lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)  # [P+A-1, V]
        want = lp[len(pair.prompt) - 1 :].gather(-1, ids[0, len(pair.prompt) :, None]).sum()
        assert torch.allclose(got[k], want, atol=1e-5), k


def test_max_length_cuts_answers_and_drops_prompts_that_fill_it():
    tok = _tok()
    whole = tokenize_pair(tok, ROWS[2], None)
    cut = tokenize_pair(tok, ROWS[2], len(whole.prompt) + 2)
    assert (
        cut.prompt == whole.prompt and cut.chosen == whole.chosen[:2] and cut.rejected == whole.rejected[:2]
    )
    assert tokenize_pair(tok, ROWS[2], len(whole.prompt)) is None


def test_loss_equals_trl_dpo_trainer_on_the_same_batch(tmp_path):
    pytest.importorskip("trl")
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from mpg.training import _conversational

    tok = _tok()
    args = DPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=len(ROWS),
        max_length=5,  # cuts some answers: the truncation rule is compared too
        beta=0.1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        precompute_ref_log_probs=False,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = DPOTrainer(
        model=tiny_model(seed=2),
        args=args,
        train_dataset=Dataset.from_list(_conversational(ROWS)),
        processing_class=tok,
        peft_config=lora,  # a new adapter: the reference is the base (adapter disabled), as in train_expert
    )
    model = trainer.model
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter, so that policy != reference
        for name, w in model.named_parameters():
            if "lora_B" in name:
                w.normal_(0, 0.5)
    ours = [tokenize_pair(tok, r, 5) for r in ROWS]
    kept = [p for p in ours if p is not None]
    theirs = trainer.train_dataset
    assert len(kept) == len(theirs) == 3  # ROWS[2]'s prompt alone fills 5 tokens: both drop it
    for p, prompt, chosen, rejected in zip(
        kept, theirs["prompt_ids"], theirs["chosen_ids"], theirs["rejected_ids"]
    ):
        room = 5 - len(prompt)
        assert (p.prompt, p.chosen, p.rejected) == (prompt, chosen[:room], rejected[:room])

    batch = next(iter(trainer.get_train_dataloader()))  # the whole (mean-order-free) data set
    model.train()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch)
        ref = reference_logprobs(model, kept, progress=False)  # [N, 2]
        lp = torch.stack([answer_logprobs(model, p.prompt, [p.chosen, p.rejected]) for p in kept])  # [N, 2]
        our_loss = dpo_loss(lp[:, 0], lp[:, 1], ref[:, 0], ref[:, 1], beta=0.1)
    assert abs(float(trl_loss) - float(our_loss)) < 1e-5
    assert abs(float(our_loss) - 0.6931) > 1e-3  # not the trivial log 2 of policy == reference


def test_train_dpo_raises_the_chosen_margin_and_logs():
    tok = _tok()
    model = tiny_model(seed=3)
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    pairs = [
        tokenize_pair(tok, {"prompt": r["prompt"], "chosen": "a a a", "rejected": "b b b"}, None)
        for r in ROWS
    ]
    log = train_dpo(
        peft,
        pairs,
        epochs=6,
        learning_rate=5e-2,
        beta=0.1,
        batch_size=2,
        grad_accum=1,
        seed=0,
        progress=False,
    )
    assert log[-1]["step"] == 12 and log[-1]["loss"] < log[0]["loss"]
    assert log[-1]["rewards/accuracies"] == 1.0
