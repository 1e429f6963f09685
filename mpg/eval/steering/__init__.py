"""How far does a steering vector move the model, at what cost in fluency (SPEC section 5, BILLY)?

- `responses`: the plain base's answers under `alpha * v[layer]` steering, and its block outputs on
  them (the mean activations every measurement here projects);
- `sweep`: `projection_shift` (the mean projection of the steered block's output onto the unit vector
  over response tokens, minus the same unsteered), `sweep` over a layer x alpha grid with the answers'
  perplexity under the unsteered base (`mpg.eval.text_metrics.fluency_ppl`), and `recommend`, the
  strongest setting that stays fluent;
- `profile`: BILLY's projection figure (multi-role prompt vs merged vs single vectors);
- `lm_eval_export`: a steering file for lm-evaluation-harness's `steered` model.

Every forward runs on the base weights with LoRA adapters disabled: "plain" means no adapter, as in a
`Policy()` row.
"""
