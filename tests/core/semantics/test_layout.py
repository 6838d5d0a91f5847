"""Keras layouts <-> canonical: each converter's inverse undoes it, and a Flatten-fed Dense's
rows holding canonical columns are the rows the converter moves there."""

import numpy as np
import pytest

from lwdsl.semantics import layout as L


@pytest.mark.parametrize(
    "make, shape, canon",
    [
        (L.transposed, (3, 3, 2, 5), (5, 2, 3, 3)),
        (L.transposed, (4, 2, 6), (6, 2, 4)),
        (L.depthwise, (3, 3, 4, 2), (8, 1, 3, 3)),
        (lambda s: L.dense(s, None), (12, 7), (7, 12)),
        (lambda s: L.dense(s, (2, 3, 2)), (12, 7), (7, 12)),
        (L.identity, (9,), (9,)),
    ],
)
def test_each_layout_round_trips(make, shape, canon):
    got, to_c, from_c = make(shape)
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert got == canon and to_c(a).shape == canon
    assert np.array_equal(from_c(to_c(a)), a)


def test_flatten_rows_are_where_the_dense_converter_puts_the_columns():
    source, n_out = (2, 3, 4), 5  # (H, W, C) feeding a Dense of 24 inputs
    _, to_c, _ = L.dense((24, n_out), source)
    kernel = np.arange(24 * n_out, dtype=np.float32).reshape(24, n_out)
    columns = np.array([0, 7, 13, 23])
    rows = L.flatten_rows(columns, 24, source)
    assert np.array_equal(np.sort(to_c(kernel)[:, columns].T.reshape(-1)), np.sort(kernel[rows, :].reshape(-1)))
    assert np.array_equal(L.flatten_rows(columns, 24, None), columns)
