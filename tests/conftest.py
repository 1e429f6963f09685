import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny import ANSWER_VOCAB, add_lora, tiny_model, tiny_tokenizer  # noqa: E402

from mpg.engine import Engine  # noqa: E402

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # one worker per core (scripts/test.sh): a second BLAS thread per worker would only contend
    torch.set_num_threads(1)


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
