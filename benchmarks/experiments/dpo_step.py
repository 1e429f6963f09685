"""One DPO optimiser step's work, TRL's DPOTrainer vs mpg's shared-prompt loop (mpg.dpo), same pairs.

On the default model with a fresh LoRA (the shipped experts' settings: r 16 on q/k/v/o), for the first
--pairs pairs of a preference file: the loss and the wall time of forward + backward of both, the
reference log-probs precomputed for both (as `mpg train-expert` does), median of --repeats.
The adapter is perturbed first so that the loss is not the trivial log 2. Writes JSON to --out.

    .venv/bin/python benchmarks/experiments/dpo_step.py --data ../shared/data/mbti/prefs/s_n/train.jsonl --out out/dpo_step
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks.common

from benchmarks.common import command_line, machine_info, write_results  # noqa: E402
from mpg.dpo import answer_logprobs, dpo_loss, reference_logprobs, tokenize_pair  # noqa: E402
from mpg.hardware import bf16_native  # noqa: E402
from mpg.training import _conversational, load_preferences  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/mbti/prefs/s_n/train.jsonl")
    ap.add_argument("--pairs", type=int, default=4, help="pairs per step (TRL: one batch of this size)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="out/dpo_step")
    args = ap.parse_args(argv)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from mpg.default_model import default_base_path

    rows = load_preferences(args.data)[: args.pairs]
    path = default_base_path()
    tok = AutoTokenizer.from_pretrained(path)
    bf16 = bf16_native(torch.device("cpu"))
    lora = LoraConfig(
        r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"
    )
    with tempfile.TemporaryDirectory() as tmp:
        cfg = DPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=len(rows),
            max_length=args.max_length,
            beta=0.1,
            report_to="none",
            use_cpu=True,
            bf16=bf16,
            gradient_checkpointing=False,
            precompute_ref_log_probs=True,
            precompute_ref_batch_size=len(rows),
            disable_tqdm=True,
        )
        trainer = DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
            args=cfg,
            train_dataset=Dataset.from_list(_conversational(rows)),
            processing_class=tok,
            peft_config=lora,
        )
        model = trainer.model
        torch.manual_seed(0)
        with torch.no_grad():
            for name, w in model.named_parameters():
                if "lora_B" in name:
                    w.normal_(0, 0.01)
        batch = next(iter(trainer.get_train_dataloader()))
        pairs = [tokenize_pair(tok, r, args.max_length) for r in rows]
        ref = reference_logprobs(model, pairs, progress=False, bf16=bf16)  # [N, 2]
        model.train()

        def trl_step() -> float:
            loss = trainer.compute_loss(model, batch)
            loss.backward()
            model.zero_grad(set_to_none=True)
            return float(loss)

        def ours_step() -> float:
            total = 0.0
            for i, p in enumerate(pairs):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    lp = answer_logprobs(model, p.prompt, [p.chosen, p.rejected])  # [2]
                loss = dpo_loss(lp[:1], lp[1:], ref[i, :1], ref[i, 1:], 0.1) / len(pairs)
                loss.backward()
                total += float(loss)
            model.zero_grad(set_to_none=True)
            return total

        out = {}
        for name, step in (("trl", trl_step), ("shared_prompt", ours_step)):
            step()  # warm-up
            times, loss = [], None
            for _ in range(args.repeats):
                t = time.perf_counter()
                loss = step()
                times.append(time.perf_counter() - t)
            out[name] = {"loss": loss, "seconds_per_step": statistics.median(times), "all_seconds": times}
            print(f"{name}: loss {loss:.6f}, {statistics.median(times):.2f} s per step", file=sys.stderr)
    tokens = [(len(p.prompt), len(p.chosen), len(p.rejected)) for p in pairs]
    result = {
        "data": args.data,
        "pairs": len(rows),
        "max_length": args.max_length,
        "tokens_prompt_chosen_rejected": tokens,
        "bf16": bf16,
        "machine": machine_info(),
        "command": command_line(__file__, argv),
        "speedup": out["trl"]["seconds_per_step"] / out["shared_prompt"]["seconds_per_step"],
        "loss_difference": abs(out["trl"]["loss"] - out["shared_prompt"]["loss"]),
        **out,
    }
    write_results(args.out, result)
    print(json.dumps({k: result[k] for k in ("speedup", "loss_difference")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
