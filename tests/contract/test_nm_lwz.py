"""A run's ``model.lwz`` stores its 2:4-pruned, int4 layers in the N:M layout on every backend:
the run's state is taken before finalize drops the masks (lwdsl/runner/pipeline.py), so the
masks, not the non-zero codes, decide it, and the file gives them back."""

from __future__ import annotations

import numpy as np

import lwdsl

MODEL, DATA = "lenet5", "synthetic:1,28,28:10"


def test_a_runs_model_lwz_holds_the_nm_layout_and_its_masks(backend_name, tmp_path):
    from lwdsl.backend.weights import load_weights
    from lwdsl.semantics.quant import unpack_state
    from lwdsl.semantics.state import unpack_keep

    result = lwdsl.run("prune nm=2:4 on linear\nquantize int4 on linear\n", MODEL, backend=backend_name, data=DATA, quiet=True,
                       latency=False, baseline_epochs=0, out=tmp_path / "run")
    state, _ = load_weights(tmp_path / "run" / "model.lwz")
    assert state["fc1.weight.nm"].tolist() == [2, 4] and "fc1.weight.nonzero" not in state
    keep = unpack_keep(state)["fc1"]
    groups = keep.reshape(keep.shape[0], -1, 4)
    assert (groups.sum(axis=-1) == 2).all()
    _, quants = unpack_state(state)
    assert np.array_equal(quants["fc1"].codes, result.model.quant["fc1"].codes)
    assert not (quants["fc1"].codes[~keep]).any()
