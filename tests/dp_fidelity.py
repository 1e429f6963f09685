"""Driver for the data-parallel test: benchmarks/record/fidelity.py's reduced run on the tiny engine.

    python tests/dp_fidelity.py DATA JUDGES OUT                                    # one process
    accelerate launch --cpu --num_processes 2 tests/dp_fidelity.py DATA JUDGES OUT  # two

DATA: synthetic data (test_fidelity.make_synthetic_data); JUDGES: a folder of judges already trained
on it (so no process trains); OUT: where results.json goes (and the billy vectors, extracted once).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_fidelity import _load_benchmark, _tiny_engine, _tiny_experts  # noqa: E402
from tiny import tiny_tokenizer  # noqa: E402

from mpg.eval.judge import load_or_train_judges  # noqa: E402


def main(data: str, judges_dir: str, out: str) -> int:
    judges = load_or_train_judges(
        Path(data), Path(judges_dir), embedder="hash256", progress=False, experts=Path(data) / "experts"
    )
    mbti, roleplay = _tiny_experts()
    argv = ["--data", data, "--out", out, "--types", "ENTJ,INFP", "--items", "8"]
    argv += ["--methods", "base,prompt,expert_EI,fused_mixture,speculative,scr_k2,billy"]
    argv += ["--freeform-types", "ENTJ,INFP,ISFJ", "--freeform-per-type", "2", "--roleplay", "3"]
    argv += ["--max-new-tokens", "4", "--vectors", str(Path(out) / "vectors"), "--extract-samples", "1"]
    argv += ["--extract-max-new-tokens", "2", "--embedder", "hash256", "--no-progress"]
    engine = _tiny_engine(tiny_tokenizer())
    return _load_benchmark().main(argv, engine=engine, experts=mbti, roleplay_experts=roleplay, judges=judges)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
