"""GPTQ's group scales: fixed before any update (lwdsl's choice, "static groups") against taken
from the updated weights when a group is reached (the paper's reference code), and round to
nearest, by the layer objective ``||X (W - W')^T||^2 / ||X W^T||^2`` on random layers whose
input features differ in scale and correlate (as a transformer's do). Numpy only, seconds.

    python bench/gptq_scales.py [--seeds 3] [--rows 64] [--cols 256] [--tokens 2000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lwdsl.semantics.codes import WeightQuant, quantize_weight  # noqa: E402
from lwdsl.semantics.gptq import gptq_quantize  # noqa: E402
from lwdsl.semantics.hessian import output_error  # noqa: E402
from lwdsl.semantics.sparsegpt import damped_inverse_factor  # noqa: E402


def dynamic_groups(w: np.ndarray, h: np.ndarray, bits: int, group: int, block: int = 128) -> np.ndarray:
    """The reference code's order: a group's scale from the weights as updated when its first
    column is reached (lwdsl's integer rule on them); returns the new weight."""
    W = np.array(w, dtype=np.float64)
    U = damped_inverse_factor(h, 0.01, W)
    qmax = 2 ** (bits - 1) - 1
    step = max(group, block - block % group)
    scale = np.ones(W.shape[0])
    for i1 in range(0, W.shape[1], step):
        i2 = min(i1 + step, W.shape[1])
        W1, U1, E1 = W[:, i1:i2].copy(), U[i1:i2, i1:i2], np.zeros((W.shape[0], i2 - i1))
        for i in range(i2 - i1):
            if (i1 + i) % group == 0:
                scale = quantize_weight(W1[:, i : i + group].astype(np.float32), bits).scale.astype(np.float64)
            c = np.clip(np.rint(W1[:, i] / scale), -qmax, qmax)
            q = (c.astype(np.float32) * scale.astype(np.float32)).astype(np.float64)
            W[:, i1 + i] = q
            e = (W1[:, i] - q) / U1[i, i]
            W1[:, i:] -= np.outer(e, U1[i, i:])
            E1[:, i] = e
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    return W


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--cols", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=2000)
    args = ap.parse_args()
    print(f"{'seed':>4} {'bits':>4} {'group':>5} {'fixed (lwdsl)':>14} {'from updates':>13} {'round to nearest':>17}")
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        mix = np.eye(args.cols) + 0.3 * rng.standard_normal((args.cols, args.cols))
        x = (rng.standard_normal((args.tokens, args.cols)) @ mix * np.exp(rng.standard_normal(args.cols))).astype(np.float32)
        w = rng.standard_normal((args.rows, args.cols)).astype(np.float32)
        h = x.astype(np.float64).T @ x
        for bits in (4, 3, 2):
            for group in (32, 128):
                fixed: WeightQuant = gptq_quantize(w, h, bits, group)
                errors = (output_error(w, fixed.dequantize(), h), output_error(w, dynamic_groups(w, h, bits, group), h),
                          output_error(w, quantize_weight(w, bits, group=group).dequantize(), h))
                print(f"{seed:>4} {bits:>4} {group:>5} {errors[0]:>14.5f} {errors[1]:>13.5f} {errors[2]:>17.5f}")


if __name__ == "__main__":
    main()
