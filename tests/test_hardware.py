import pytest
import torch

import mpg.hardware
from mpg.engine import Engine
from mpg.hardware import default_dtype as real_default_dtype  # conftest pins the module's to float32
from mpg.personas import Attribute


@pytest.mark.parametrize("native", [True, False])
def test_default_dtype_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(mpg.hardware, "cpu_has_bf16", lambda: native)
    want = torch.bfloat16 if native and torch.backends.mkldnn.is_available() else torch.float32
    assert real_default_dtype("cpu") == want
    assert real_default_dtype(torch.device("cuda")) == torch.float32  # not measured against float32 there


def test_engine_loads_in_the_default_dtype_and_samples_reproducibly(monkeypatch, base_dir):
    monkeypatch.setattr(mpg.hardware, "default_dtype", real_default_dtype)
    monkeypatch.setattr(mpg.hardware, "cpu_has_bf16", lambda: True)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without oneDNN: the CPU default is float32 everywhere")
    engine = Engine.from_pretrained(base_dir)
    assert engine.models["base"].dtype == torch.bfloat16
    assert Engine.from_pretrained(base_dir, dtype="float32").models["base"].dtype == torch.float32
    sharded = Engine.from_pretrained(base_dir, device_map={"": "cpu"})  # spans devices: float32 as before
    assert sharded.models["base"].dtype == torch.float32
    attrs = [Attribute.prompted("a b"), Attribute.prompted("b")]
    kw = dict(sampler="fused", max_new_tokens=6, seed=3, eos_token_id=[])
    a = engine.generate(["a b", "b"], attrs, **kw)
    b = engine.generate(["a b", "b"], attrs, **kw)
    assert a.token_ids == b.token_ids and all(len(t) == 6 for t in a.token_ids)
