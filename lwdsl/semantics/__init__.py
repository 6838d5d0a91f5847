"""The numbers both backends must agree on, in numpy: one definition each.

A backend only moves tensors and runs its framework; every number that gives a step its meaning
is decided here, so the same step gives the same result on PyTorch and TensorFlow (proven by
``tests/conformance``):

- :mod:`.masks`: which weights a prune keeps (magnitude, threshold, random, structured, N:M),
  the gradual-pruning sparsity curve, and :func:`.masks.rule_for` (spec -> mask rule);
- :mod:`.cut`: the fast exact global magnitude cut (same answer as :mod:`.masks`);
- :mod:`.order`: the order training visits the data in;
- :mod:`.schedules`: learning-rate schedules and when gradual pruning steps happen;
- quantization, one job per module, importing one way (forms <- packing <- codes, casts,
  activations <- state): :mod:`.forms` (the table of ``quantize`` forms), :mod:`.packing` (the
  one bit packer), :mod:`.codes` (weight codes and scales), :mod:`.activations` (activation
  ranges, scales and zero points), :mod:`.casts` (fp16/bf16), :mod:`.state` (packed layers in
  the canonical state, and its load checks); :mod:`.quant` re-exports them for old imports;
- :mod:`.distill`: distillation loss terms (soft targets, features, relations).

Importing this package imports numpy only.
"""
