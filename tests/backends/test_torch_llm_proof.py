"""The proof issue 25 asks for, at tiny scale, on a trained tiny-llama and --data pydoc (slow):

- the relative output error ``||X (W - W')^T||^2 / ||X W^T||^2`` on the calibration inputs
  orders SparseGPT <= Wanda <= magnitude at 50% and at 2:4 on every layer the recipe targets
  (the decoder's 14 linear layers), magnitude taken in Wanda's comparison groups (each output
  row at 50%, each group of 4 at 2:4), and SparseGPT is the lowest on every linear layer, the
  head included. Magnitude over the whole layer (``prune l1 50%``) is printed too: on this
  tiny model it beats Wanda's per-row choice on about half the layers at 50% (Wanda's paper
  picks per-row groups for LLMs at scale), which is why the order is asserted per group;
- ``lwdsl run`` of ``prune sparsegpt 50% nm=2:4 except "lm_head" | finetune ...`` end to end,
  with the perplexity before and after in its report.

Run with ``-s`` to see the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torch_helpers import make_ctx, torch_backend  # first: skips unless torch is selected and installed

pytest.importorskip("transformers", reason="transformer models need transformers (pip install 'lwdsl[llm]')")
pytest.importorskip("tokenizers", reason="--data pydoc needs tokenizers (pip install 'lwdsl[llm]')")

import numpy as np  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

RECIPE = 'prune sparsegpt 50% nm=2:4 except "lm_head" | finetune epochs=1 optimizer=adam lr=0.0005 batch=16\n'
BASELINE_EPOCHS = "3"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """``lwdsl run`` as a user types it; the baseline (3 epochs) is cached in LWDSL_CACHE."""
    tmp = tmp_path_factory.mktemp("proof")
    (tmp / "r.lw").write_text(RECIPE)
    env = {**os.environ, "COLUMNS": "120"}
    env.setdefault("LWDSL_CACHE", str(tmp / "cache"))
    cli = Path(sys.executable).with_name("lwdsl")
    done = subprocess.run([str(cli), "run", str(tmp / "r.lw"), "--model", "tiny-llama", "--data", "pydoc", "--baseline-epochs",
                           BASELINE_EPOCHS, "--out", str(tmp / "out")], capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout)
    return tmp / "out"


def test_end_to_end_perplexity_before_and_after(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    ppl = [step["metrics"]["perplexity"] for step in report["steps"]]
    print("perplexity baseline / sparsegpt 2:4 / finetuned:", ppl)
    assert ppl[0] < 200  # the cached baseline learned the text (an untrained model is ~2100)
    assert ppl[1] > ppl[0] and ppl[2] < ppl[1]  # pruning costs, fine-tuning gives back
    sparsity = {layer["name"]: layer["sparsity"] for layer in report["steps"][1]["metrics"]["layers"]}
    assert sparsity["lm_head"] == 0.0 and sparsity["model.layers.1.mlp.down_proj"] == 0.5
    assert report["steps"][2]["metrics"]["nonzero_params"] == report["steps"][1]["metrics"]["nonzero_params"]
    lock = json.loads((run_dir / "lwdsl.lock.json").read_text())
    assert lock["data"] == "pydoc" and "transformers" in lock["versions"] and "tokenizers" in lock["versions"]
    assert lock["tokenizer_sha256"] == report["data_source"]["tokenizer"]["sha256"]


def test_layer_error_orders_sparsegpt_wanda_magnitude(run_dir):
    from lwdsl.backend.calibrated import gram_matrices
    from lwdsl.backends.torch_backend.prune import TorchPruneParts
    from lwdsl.data.builtin import load_data
    from lwdsl.semantics.hessian import output_error
    from lwdsl.semantics.masks import magnitude_keep_masks, nm_keep_mask
    from lwdsl.semantics.sparsegpt import sparsegpt_prune
    from lwdsl.semantics.wanda import wanda_keep

    lock = json.loads((run_dir / "lwdsl.lock.json").read_text())
    be = torch_backend()
    handle = be.load_model("tiny-llama", (128,), 2048, checkpoint=Path(lock["baseline"]["path"]))
    parts = TorchPruneParts()
    linear = [layer.name for layer in be.layers(handle) if layer.kind == "linear"]
    grams, examples = gram_matrices(parts, handle, linear, 128, make_ctx(load_data("pydoc")), "proof")
    assert examples == 128
    rows = []
    for name in linear:
        w, h = parts.weight(handle, name), grams[name].h
        for label, nm in (("50%", None), ("2:4", (2, 4))):
            amount = 0.5 if nm is None else None
            per_row = nm_keep_mask(w, *nm) if nm else wanda_keep(w, np.ones(w.shape[1]), 0.5)  # |W| alone, Wanda's groups
            per_layer = nm_keep_mask(w, *nm) if nm else magnitude_keep_masks([w], 0.5)[0]  # `prune l1 50%`
            wanda = wanda_keep(w, grams[name].column_norms(), amount, nm)
            _, sparse = sparsegpt_prune(w, h, amount, nm)
            rows.append((name, label, output_error(w, sparse.astype(np.float32), h), output_error(w, w * wanda, h),
                         output_error(w, w * per_row, h), output_error(w, w * per_layer, h)))
    print(f"\n{'layer':36} {'form':4} {'sparsegpt':>10} {'wanda':>10} {'|W| row':>10} {'|W| layer':>10}")
    for name, label, *errors in rows:
        print(f"{name:36} {label:4} " + " ".join(f"{e:10.5f}" for e in errors))
    for name, label, sparse, wanda, per_row, per_layer in rows:
        assert sparse <= min(wanda, per_row, per_layer), (name, label)  # every layer, the head too
        if name != "lm_head":  # the recipe's targets (except "lm_head"): Wanda beats |W| in the same groups
            assert wanda <= per_row, (name, label, wanda, per_row)


def test_layer_error_orders_gptq_below_round_to_nearest(run_dir):
    """On the trained model, every linear layer (the head too): GPTQ's relative output error is
    below round-to-nearest's at the same bits and groups, with round-to-nearest's scales."""
    from lwdsl.backend.calibrated import gram_matrices
    from lwdsl.backends.torch_backend.prune import TorchPruneParts
    from lwdsl.data.builtin import load_data
    from lwdsl.semantics.gptq import gptq_quantize
    from lwdsl.semantics.hessian import output_error
    from lwdsl.semantics.quant import quantize_weight

    lock = json.loads((run_dir / "lwdsl.lock.json").read_text())
    be = torch_backend()
    handle = be.load_model("tiny-llama", (128,), 2048, checkpoint=Path(lock["baseline"]["path"]))
    parts = TorchPruneParts()
    linear = [layer.name for layer in be.layers(handle) if layer.kind == "linear"]
    grams, _ = gram_matrices(parts, handle, linear, 128, make_ctx(load_data("pydoc")), "proof")
    forms = ((8, None), (4, None), (4, 128), (4, 32), (2, 32))
    print(f"\n{'layer':36} " + " ".join(f"{f'int{b} g{g or 0}':>19}" for b, g in forms) + "   (gptq / rtn)")
    for name in linear:
        w, h = parts.weight(handle, name), grams[name].h
        cells = []
        for bits, group in forms:
            q = gptq_quantize(w, h, bits, group)
            rtn = quantize_weight(w, bits, group=group)
            assert np.array_equal(q.scale, rtn.scale) and np.abs(q.codes).max() <= 2 ** (bits - 1) - 1
            cells.append((output_error(w, q.dequantize(), h), output_error(w, rtn.dequantize(), h)))
        print(f"{name:36} " + " ".join(f"{a:9.6f}/{b:9.6f}" for a, b in cells))
        for (bits, group), (gptq, rtn) in zip(forms, cells):
            assert gptq < rtn, (name, bits, group, gptq, rtn)


def test_sparsegpt_2_4_then_gptq_int4_end_to_end(run_dir, tmp_path):
    """``prune sparsegpt 50% nm=2:4 | quantize int4 method=gptq group=32`` as a user runs it (the
    cached baseline): the 2:4 mask survives quantization; the wall time and perplexities printed."""
    import time

    from lwdsl.semantics.quant import unpack_state
    from lwdsl.backend.weights import load_weights

    (tmp_path / "r.lw").write_text('prune sparsegpt 50% nm=2:4 except "lm_head"\n'
                                   'quantize int4 method=gptq group=32 except "lm_head"\n')
    env = {**os.environ, "COLUMNS": "120", "LWDSL_CACHE": str(Path(json.loads((run_dir / "lwdsl.lock.json").read_text())
                                                                    ["baseline"]["path"]).parent.parent)}
    cli = Path(sys.executable).with_name("lwdsl")
    start = time.perf_counter()
    done = subprocess.run([str(cli), "run", str(tmp_path / "r.lw"), "--model", "tiny-llama", "--data", "pydoc", "--baseline-epochs",
                           BASELINE_EPOCHS, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=1200, env=env)
    took = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    ppl = [step["metrics"]["perplexity"] for step in report["steps"]]
    print(f"\nsparsegpt 2:4 | gptq int4 g32: {took:.1f} s end to end (cached baseline); perplexity baseline / 2:4 / +int4:", ppl)
    errors = report["steps"][2]["layer_output_error"]
    print("gptq layer errors:", {k: round(v, 5) for k, v in errors.items()})
    assert ppl[0] < 200 and ppl[2] < 2 * ppl[1]
    state, _ = load_weights(next((tmp_path / "out").glob("*.lwz")))
    weights, quants = unpack_state(state)
    for name in (f"model.layers.{i}.{p}" for i in range(2) for p in ("self_attn.q_proj", "mlp.down_proj")):
        codes = quants[name].codes
        assert quants[name].group == 32 and ((codes.reshape(codes.shape[0], -1, 4) != 0).sum(-1) <= 2).all(), name
    assert "lm_head" not in quants
