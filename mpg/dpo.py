"""DPO with the prompt run once per pair: the shared-prompt training loop behind `mpg train-expert`.

TRL's DPOTrainer (1.16) runs every pair as two full sequences, prompt + chosen and prompt + rejected,
and computes the LM head's log-softmax over the 49k vocabulary at every position, the prompt's
included. In the MBTI and role-play pairs the prompt is ~60% of each sequence, so most of that work is
repeated or thrown away. This loop runs each pair's prompt once (its key/value cache, still part of the
autograd graph, is repeated for the two answers) and applies the LM head to the answer positions only.
The objective is TRL's sigmoid DPO loss on the same token sequences (`tokenize_pair` follows
DPOTrainer's tokenisation and `keep_start` truncation), so the only differences are arithmetic order
and the data order drawn from the seed; tests/test_dpo.py checks the loss against DPOTrainer's on the
same batch.

Optimiser and schedule as the Trainer's defaults that `mpg.training` used: AdamW (no weight decay),
linear warm-up over the first 10% of steps then cosine decay, gradient norm clipped at 1.0, one
optimiser step per batch_size x grad_accum pairs.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["PairIds", "answer_logprobs", "dpo_loss", "reference_logprobs", "tokenize_pair", "train_dpo"]


@dataclass(frozen=True)
class PairIds:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_pair(tok, row: dict, max_length: int | None) -> PairIds | None:
    """One {prompt, chosen, rejected} pair as the chat template renders it (user turn, assistant answer),
    split where prompt and prompt + answer diverge, each sequence cut to max_length tokens from the start;
    None when the prompt alone fills max_length (no answer token would remain), as DPOTrainer drops it."""
    user = [{"role": "user", "content": row["prompt"]}]

    def ids(messages, **kw):
        return list(tok.apply_chat_template(messages, tokenize=True, return_dict=True, **kw)["input_ids"])

    prompt = ids(user, add_generation_prompt=True)
    full_c = ids(user + [{"role": "assistant", "content": row["chosen"]}])
    full_r = ids(user + [{"role": "assistant", "content": row["rejected"]}])
    p = min(_common_prefix(prompt, full_c), _common_prefix(prompt, full_r))
    if max_length is not None and p >= max_length:
        return None
    room = None if max_length is None else max_length - p
    return PairIds(full_c[:p], full_c[p:][:room], full_r[p:][:room])


def _parts(model):
    """(decoder, lm_head) of a causal LM or of a PEFT model wrapping one (LoRA layers live inside)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def answer_logprobs(model, pair_prompt: list[int], answers: list[list[int]]) -> torch.Tensor:
    """Summed log-probs of each answer after the shared prompt, the prompt run once. [A]

    Differentiable: the prompt's key/value cache stays in the autograd graph and is repeated per answer.
    """
    decoder, head = _parts(model)
    device = head.weight.device
    prompt = torch.tensor([pair_prompt], device=device)  # [1, P]
    out = decoder(input_ids=prompt, use_cache=True)
    last = out.last_hidden_state[:, -1:]  # [1, 1, H]: predicts each answer's first token
    cache = out.past_key_values
    n, width = len(answers), max(len(a) for a in answers)
    cache.batch_repeat_interleave(n)
    ids = torch.tensor([a + [0] * (width - len(a)) for a in answers], device=device)  # [A, W]
    real = torch.tensor([[1] * len(a) + [0] * (width - len(a)) for a in answers], device=device)  # [A, W]
    mask = torch.cat([torch.ones(n, prompt.shape[1], dtype=real.dtype, device=device), real], 1)  # [A, P+W]
    # right padding: real tokens never attend to it (causal), and it is masked out of the sums below
    hidden = decoder(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=False)
    h = torch.cat([last.expand(n, 1, -1), hidden.last_hidden_state[:, :-1]], 1)  # [A, W, H]
    logp = torch.log_softmax(head(h).float(), -1)  # [A, W, V]
    token_lp = logp.gather(-1, ids[..., None]).squeeze(-1)  # [A, W]
    return (token_lp * real).sum(-1)  # [A]


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Sigmoid DPO loss, mean over pairs: -log sigmoid(beta * (log-ratio(chosen) - log-ratio(rejected))).

    all inputs: [B] summed answer log-probs (policy, reference); returns a scalar"""
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)  # [B]
    return -F.logsigmoid(beta * margin).mean()


def _autocast(model, bf16: bool):
    return torch.autocast(_parts(model)[1].weight.device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def reference_logprobs(
    model, pairs: list[PairIds], progress: bool = True, bf16: bool = False
) -> torch.Tensor:
    """Answer log-probs of the frozen reference (the PEFT model with its adapter disabled). [N, 2]"""
    from tqdm.auto import tqdm

    rows = []
    with model.disable_adapter(), _autocast(model, bf16):
        for p in tqdm(pairs, desc="reference log-probs", disable=not progress):
            rows.append(answer_logprobs(model, p.prompt, [p.chosen, p.rejected]))
    return torch.stack(rows).cpu()  # [N, 2]


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 (transformers' get_cosine_schedule_with_warmup)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_dpo(
    model,
    pairs: list[PairIds],
    *,
    epochs: float,
    learning_rate: float,
    beta: float,
    batch_size: int,
    grad_accum: int,
    seed: int,
    warmup_ratio: float = 0.1,
    max_grad_norm: float = 1.0,
    logging_steps: int = 5,
    bf16: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train the PEFT model's trainable (adapter) weights with DPO on tokenised pairs; returns the log
    (one entry per `logging_steps` optimiser steps: step, epoch, loss, reward accuracy, margins, lr)."""
    from tqdm.auto import tqdm

    if not pairs:
        raise ValueError("no preference pairs to train on")
    ref = reference_logprobs(model, pairs, progress, bf16)  # [N, 2]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    per_step = batch_size * grad_accum
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(math.ceil(epochs)):
        perm = list(range(len(pairs)))
        rng.shuffle(perm)
        order += perm
    order = order[: max(1, round(epochs * len(pairs)))]
    total = math.ceil(len(order) / per_step)
    warmup = math.ceil(warmup_ratio * total)
    model.train()
    log, window = [], []
    bar = tqdm(total=total, desc="DPO steps", disable=not progress)
    for step in range(total):
        for g in opt.param_groups:
            g["lr"] = learning_rate * _lr_factor(step, total, warmup)
        chunk = order[step * per_step : (step + 1) * per_step]
        for i in chunk:  # one pair per forward: the shared prompt, then its two answers
            with _autocast(model, bf16):
                lp = answer_logprobs(model, pairs[i].prompt, [pairs[i].chosen, pairs[i].rejected])  # [2]
            loss = dpo_loss(lp[:1], lp[1:], ref[i, :1], ref[i, 1:], beta)
            (loss / len(chunk)).backward()
            margin = float(((lp[0] - ref[i, 0]) - (lp[1] - ref[i, 1])).detach())
            window.append((float(loss.detach()), margin))
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        bar.update()
        if (step + 1) % logging_steps == 0 or step + 1 == total:
            losses, margins = zip(*window)
            log.append(
                {
                    "step": step + 1,
                    "epoch": round((step + 1) * per_step / len(pairs), 3),
                    "loss": sum(losses) / len(losses),
                    "rewards/accuracies": sum(m > 0 for m in margins) / len(margins),
                    "rewards/margins": beta * sum(margins) / len(margins),
                    "learning_rate": opt.param_groups[0]["lr"],
                }
            )
            bar.set_postfix(loss=f"{log[-1]['loss']:.3f}", acc=f"{log[-1]['rewards/accuracies']:.2f}")
            window = []
    bar.close()
    model.eval()
    return log
