"""Dependency groups: building them, scoring them, choosing and locating the kept channels."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.errors import LwdslError
from lwdsl.semantics import masks as M
from lwdsl.semantics.groups import GraphBuilder, axis_keeps, describe, group_keep, group_scores, select_groups

ORDER = {name: i for i, name in enumerate(["stem", "bn0", "a", "bna", "b", "bnb", "dw", "c", "fc"])}


def residual() -> list:
    """stem -> bn0 -> (+ b(a(x))) -> dw (depthwise) -> c -> flatten (4 columns a channel) -> fc -> output."""
    g = GraphBuilder(ORDER)
    x = g.space(3, "they are the model's input")
    g.member(x, "stem", "in")
    s = g.space(8)
    g.member(s, "stem", "out")
    g.member(s, "bn0", "norm")
    g.member(s, "a", "in")
    a = g.space(4)
    g.member(a, "a", "out")
    g.member(a, "bna", "norm")
    g.member(a, "b", "in")
    b = g.space(8)
    g.member(b, "b", "out")
    g.member(b, "bnb", "norm")
    y = g.same(s, b, "a residual addition")
    g.member(y, "dw", "depthwise")
    g.member(y, "c", "in")
    c = g.space(5)
    g.member(c, "c", "out")
    flat = type(c)(c.ids, 4)
    g.member(flat, "fc", "in")
    out = g.space(10)
    g.member(out, "fc", "out")
    g.refuse(out, "it produces the model's output")
    return g.groups()


def test_groups_of_a_residual_net():
    groups = {g.name: g for g in residual()}
    assert set(groups) == {"inputs of stem", "stem", "a", "c", "fc"}
    res = groups["stem"]
    assert res.producers == ["stem", "b"] and res.via == ("a residual addition",)
    assert [(m.layer, m.role) for m in res.members] == [
        ("stem", "out"), ("bn0", "norm"), ("a", "in"), ("b", "out"), ("bnb", "norm"), ("dw", "depthwise"), ("c", "in")
    ]  # fmt: skip
    assert groups["c"].members[-1].block == 4 and groups["c"].reason is None
    assert "model's output" in groups["fc"].reason and "model's input" in groups["inputs of stem"].reason
    assert any("not prunable" in line for line in describe(list(groups.values())))


def test_selection_needs_every_producer_and_names_the_missing_ones():
    groups = residual()
    assert [g.name for g in select_groups(groups, ["stem", "b", "a", "dw"])] == ["stem", "a"]
    with pytest.raises(LwdslError, match=r"'b' by a residual addition") as err:
        select_groups(groups, ["stem"])
    assert "'stem'" in err.value.message and err.value.hint
    with pytest.raises(LwdslError, match="model's output"):
        select_groups(groups, ["fc"])
    with pytest.raises(LwdslError, match="'bn0'"):
        select_groups(groups, ["bn0"])


def weights(rng):
    return {"stem": rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "b": rng.standard_normal((8, 4, 3, 3)).astype(np.float32),
            "a": rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "c": rng.standard_normal((5, 8)).astype(np.float32)}  # fmt: skip


def test_score_is_the_ln_norm_over_all_producers_filters():
    rng = np.random.default_rng(0)
    w = weights(rng)
    group = next(g for g in residual() if g.name == "stem")
    both = np.concatenate([w["stem"].reshape(8, -1), w["b"].reshape(8, -1)], axis=1).astype(np.float64)
    for p in (1.0, 2.0, 3.0):
        np.testing.assert_allclose(group_scores(group, w.__getitem__, p), np.sum(np.abs(both) ** p, axis=1) ** (1 / p), rtol=1e-12)
    keep = group_keep(group, w.__getitem__, 0.5, "l2", 2.0)
    want = np.ones(8, bool)
    want[np.argsort(np.sqrt((both**2).sum(1)))[:4]] = False
    assert keep.tolist() == want.tolist()


@pytest.mark.parametrize("method, p", [("l1", 1.0), ("l2", 2.0), ("ln", 3.0), ("random", 1.0)])
def test_one_producer_group_is_exactly_the_layer_rule(method, p):
    """A group of one producer keeps what structured_keep keeps, planted ties included."""
    rng = np.random.default_rng(1)
    w = weights(rng)
    w["a"][1] = w["a"][3] = w["a"][0]  # ties: the lower index goes first
    group = next(g for g in residual() if g.name == "a")
    for amount in (0.25, 0.5, 0.75):
        keep = group_keep(group, w.__getitem__, amount, method, p, seed=7)
        assert keep.tolist() == M.structured_keep(w["a"], amount, axis=0, method=method, p=p, seed=7).tolist()


def test_amount_rounds_half_to_even_per_group_and_never_empties_one():
    w = weights(np.random.default_rng(2))
    group = next(g for g in residual() if g.name == "c")  # 5 channels
    assert [int((~group_keep(group, w.__getitem__, a, "l1")).sum()) for a in (0.1, 0.3, 0.5, 0.7)] == [0, 2, 2, 4]
    with pytest.raises(LwdslError, match="all 5"):
        group_keep(group, w.__getitem__, 0.95, "l1")


def test_axis_keeps_locate_every_member():
    groups = residual()
    chosen = select_groups(groups, ["stem", "b", "c"])
    keeps = [np.array([1, 0, 1, 1, 0, 1, 1, 0], bool), np.array([0, 1, 1, 0, 1], bool)]
    sizes = {("stem", 0): 8, ("bn0", 0): 8, ("a", 1): 8, ("b", 0): 8, ("bnb", 0): 8, ("dw", 0): 8, ("c", 1): 8, ("c", 0): 5, ("fc", 1): 20}
    kept = axis_keeps(chosen, keeps, sizes)
    for key in [("stem", 0), ("bn0", 0), ("a", 1), ("b", 0), ("bnb", 0), ("dw", 0), ("c", 1)]:
        assert kept[key].tolist() == [0, 2, 3, 5, 6]
    assert kept[("c", 0)].tolist() == [1, 2, 4]
    assert kept[("fc", 1)].tolist() == [4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19]  # 4 columns a channel


def test_concatenation_puts_groups_side_by_side():
    g = GraphBuilder({"p": 0, "q": 1, "r": 2})
    p, q = g.space(3), g.space(2)
    g.member(p, "p", "out")
    g.member(q, "q", "out")
    g.member(g.concat([p, q]), "r", "in")
    gp, gq = g.groups()
    assert [(m.layer, m.offset) for m in gq.members] == [("q", 0), ("r", 3)]
    kept = axis_keeps([gp, gq], [np.array([1, 0, 1], bool), np.array([0, 1], bool)], {("p", 0): 3, ("q", 0): 2, ("r", 1): 5})
    assert kept[("r", 1)].tolist() == [0, 2, 4]


def test_joining_differently_laid_out_channels_is_refused():
    g = GraphBuilder({})
    p, q, r = g.space(3), g.space(2), g.space(5)
    for ch, name in ((p, "p"), (q, "q"), (r, "r")):
        g.member(ch, name, "out")
    g.same(g.concat([p, q]), r, "a residual addition")
    assert all("laid out differently" in grp.reason for grp in g.groups())


def test_a_layer_met_twice_joins_its_groups():
    g = GraphBuilder({})
    a, b = g.space(4), g.space(4)
    g.member(a, "shared", "out")
    g.member(b, "shared", "out")
    assert len(g.groups()) == 1 and g.groups()[0].via == ("the same layer used twice",)
