import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parent.parent))  # the repository root: `benchmarks` (and this `mpg`)

from tiny import ANSWER_VOCAB, add_lora, tiny_model, tiny_tokenizer  # noqa: E402

from mpg.engine import Engine  # noqa: E402

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # one worker per core (scripts/test.sh): a second BLAS thread per worker would only contend
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def float32_by_default():
    """Engines load in float32 on every machine: the default is bf16 only on CPUs with native bf16
    (mpg.hardware.default_dtype), and CI hardware varies. Session-scoped, so that it is in force before
    any module-scoped fixture builds an engine. test_hardware.py tests the default itself; a server or
    CLI run in a subprocess is not covered and is given --dtype float32."""
    import mpg.hardware

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mpg.hardware, "default_dtype", lambda device: torch.float32)
        yield


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def engine(tokenizer):
    """A tiny base with two LoRA adapters ("x", "y") and a separate model ("other") on one tokenizer."""
    eng = Engine(add_lora(tiny_model(seed=0), ["x", "y"], alpha=8), tokenizer)
    eng.adapters["base"] |= {"x", "y"}
    eng.add_model("other", tiny_model(seed=1), tokenizer)
    g = torch.Generator().manual_seed(5)
    eng.add_steering_vector("v", torch.randn(2, 32, generator=g))  # one vector per decoder block
    return eng


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny base model folder whose vocabulary has the two answers "Agree" / "Disagree"."""
    d = tmp_path_factory.mktemp("tiny_base")
    tiny_model(vocab_size=len(ANSWER_VOCAB)).save_pretrained(d)
    tiny_tokenizer(ANSWER_VOCAB).save_pretrained(d)
    return d
