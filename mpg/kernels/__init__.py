"""Hot tensor operations, each as a plain-torch reference plus a faster version checked against it.

- `lora.py`: several LoRA adapters applied to the rows of one batch (reference: one masked pass per
  adapter, as PEFT's mixed-adapter batch does; fast: all adapters in two stacked matmuls).
- `validation.py`: drafted-token log-probs of every policy and the chunk importance weights
  (reference: full log-softmax then gather; fast: gather minus logsumexp, no [.., V] log-prob tensor).

Adopted in the engine only where the fast version measures faster: `benchmarks/record/speed.py --lora-kernels`
(LoRA; the default is `stacked`) and its validation-kernel timing (scr keeps the reference there).
"""
