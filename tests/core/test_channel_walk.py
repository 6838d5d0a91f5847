"""The channel-dependency walk (lwdsl.backend.channel_walk) driven by hand-made ops, no framework:
each rule of docs/semantics.md ("Pruning") once, with the messages both backends give."""

from __future__ import annotations

import pytest

from lwdsl.backend.channel_walk import Op, walk

N = 1  # the batch


def op(kind: str, name: str = "", ins=(), outs=(), shapes=(), **kw) -> Op:
    """An op whose values are named by strings; ``shapes`` maps each value to its shape."""
    shape = dict(shapes)
    label = kw.pop("label", f"'{name}' ({kind})")
    return Op(kind, name, label, tuple(ins), tuple(outs), tuple(shape.get(k) for k in ins), tuple(shape.get(k) for k in outs), **kw)


def graph(*ops: Op, shapes) -> dict[str, object]:
    """The groups of ``ops`` (input ``x``, output of the last op refused), by name."""
    ops = [Op("input", outs=("x",), out_shapes=(shapes["x"],)), *ops]
    last = ops[-1].outs[0]
    ops.append(Op("output", ins=(last,), in_shapes=(shapes[last],)))
    order = {o.name: i for i, o in enumerate(ops) if o.name}  # model order: the ops' order
    return {g.name: g for g in walk(ops, order)}


def conv(name, x, y, width, shapes, kind="conv", **kw):
    return op(kind, name, [x], [y], shapes.items(), width=width, **kw)


S = {"x": (N, 3, 8, 8), "a": (N, 4, 8, 8), "r": (N, 4, 8, 8), "b": (N, 4, 8, 8), "n": (N, 4, 8, 8), "c": (N, 5, 8, 8)}


def roles(g) -> list[tuple[str, str, int, int]]:
    return [(m.layer, m.role, m.offset, m.block) for m in g.members]


def test_conv_norm_pass_and_the_model_input_and_output():
    gs = graph(
        conv("a", "x", "a", 4, S),
        op("pass", "relu", ["a"], ["r"], S.items()),
        op("norm", "bn", ["r"], ["n"], S.items()),
        conv("c", "n", "c", 5, S),
        shapes=S,
    )
    assert roles(gs["a"]) == [("a", "out", 0, 1), ("bn", "norm", 0, 1), ("c", "in", 0, 1)] and gs["a"].reason is None
    assert gs["inputs of a"].reason == "they are the model's input"
    assert gs["c"].reason == "it produces the model's outputs (a classifier's outputs are its classes)"


def test_a_norm_off_the_channel_axis_and_an_unknown_op_refuse_with_the_op_named():
    gs = graph(conv("a", "x", "a", 4, S), op("norm", "bn", ["a"], ["n"], S.items(), channel_axis=False), conv("c", "n", "c", 5, S), shapes=S)
    assert gs["a"].reason == "its channels reach 'bn' (norm), which needs all its channels"
    assert gs["inputs of c"].reason == "they come out of 'bn' (norm), which lwdsl cannot follow"
    gs = graph(conv("a", "x", "a", 4, S), op("unknown", "ln", ["a"], ["n"], S.items(), label="'ln' (LayerNorm)"), conv("c", "n", "c", 5, S), shapes=S)
    assert gs["a"].reason == "its channels reach 'ln' (LayerNorm), which needs all its channels"


def test_grouped_conv_refuses_its_inputs_and_its_outputs():
    gs = graph(conv("a", "x", "a", 4, S), conv("g", "a", "b", 4, S, kind="grouped_conv", groups=2), conv("c", "b", "c", 5, S), shapes=S)
    why = "'g' is a grouped convolution (2 groups), whose channels lwdsl does not remove"
    assert gs["a"].reason == f"its channels reach {why}" and gs["g"].reason == why
    assert roles(gs["g"]) == [("g", "out", 0, 1), ("c", "in", 0, 1)]


@pytest.mark.parametrize("multiplier, activation", [(1, None), (1, "relu"), (2, None), (1, "sigmoid")])
def test_depthwise_passes_channels_at_multiplier_one_with_a_zero_keeping_activation(multiplier, activation):
    dw = op("depthwise", "dw", ["a"], ["b"], S.items(), multiplier=multiplier, activation=activation)
    gs = graph(conv("a", "x", "a", 4, S), dw, conv("c", "b", "c", 5, S), shapes=S)
    if multiplier == 1 and activation != "sigmoid":
        assert roles(gs["a"]) == [("a", "out", 0, 1), ("dw", "depthwise", 0, 1), ("c", "in", 0, 1)] and gs["a"].reason is None
    elif activation == "sigmoid":
        assert gs["a"].reason == "its channels reach 'dw' ends in activation 'sigmoid', which does not keep 0 at 0"
    else:
        assert gs["a"].reason == "its channels reach 'dw' (depthwise), which needs all its channels"


def test_a_layer_ending_in_an_activation_that_moves_zero_makes_unprunable_channels():
    gs = graph(conv("a", "x", "a", 4, S, activation="softmax"), conv("c", "a", "c", 5, S), shapes=S)
    assert gs["a"].reason == "'a' ends in activation 'softmax', which does not keep 0 at 0"
    gs = graph(conv("a", "x", "a", 4, S), op("pass", "act", ["a"], ["b"], S.items(), activation="sigmoid"), conv("c", "b", "c", 5, S), shapes=S)
    assert gs["a"].reason == "its channels reach 'act' ends in activation 'sigmoid', which does not keep 0 at 0"


def test_flatten_into_a_linear_layer_gives_blocks_and_a_mixing_reshape_refuses():
    s = {**S, "f": (N, 64 * 4), "fc": (N, 10), "v": (N, 8, 32)}
    gs = graph(conv("a", "x", "a", 4, s), op("flatten", "flatten", ["a"], ["f"], s.items()), conv("fc", "f", "fc", 10, s, kind="linear"), shapes=s)
    assert roles(gs["a"]) == [("a", "out", 0, 1), ("fc", "in", 0, 64)] and gs["a"].reason is None
    gs = graph(conv("a", "x", "a", 4, s), op("flatten", "view", ["a"], ["v"], s.items()), op("unknown", "t", ["v"], ["fc"], s.items()), shapes=s)
    assert gs["a"].reason == "its channels reach a reshape (1, 4, 8, 8) -> (1, 8, 32) that mixes them"
    with pytest.raises(ValueError, match="kind 'reshape'"):
        graph(op("reshape", "r", ["x"], ["a"], s.items()), shapes=s)


def test_linear_on_a_feature_map_is_refused():
    s = {**S, "fc": (N, 4, 8, 10)}
    gs = graph(conv("a", "x", "a", 4, s), conv("fc", "a", "fc", 10, s, kind="linear"), shapes=s)
    assert gs["a"].reason == "its channels reach 'fc', a linear layer on the last axis of a feature map (no flatten)"


def test_joins_tie_inputs_of_the_output_width_and_concat_puts_channels_side_by_side():
    s = {**S, "m": (N, 4, 8, 8), "d": (N, 4, 8, 8), "k": (N, 8, 8, 8), "q": (N, 4, 16, 8), "two": None}
    gs = graph(
        conv("a", "x", "a", 4, s),
        conv("b", "a", "b", 4, s),
        op("join", "add", ["a", "b"], ["m"], s.items(), via="a residual addition"),
        op("join", "mul", ["m", "two"], ["n"], s.items(), via="a multiplication"),  # "two": no tensor, no channels
        conv("d", "x", "d", 4, s),
        op("concat", "cat", ["n", "d"], ["k"], s.items()),
        op("concat", "stack", ["k", "k"], ["q"], s.items(), channel_axis=False),
        conv("c", "q", "c", 5, s),
        shapes=s,
    )
    assert gs["a"].producers == ["a", "b"] and gs["a"].via == ("a residual addition",) and gs["a"].reason is None
    assert roles(gs["d"]) == [("d", "out", 0, 1), ("c", "in", 4, 1)] and ("c", "in", 0, 1) in roles(gs["a"])
    gs = graph(conv("a", "x", "a", 4, s), conv("d", "x", "d", 4, s), op("concat", "stack", ["a", "d"], ["q"], s.items(), channel_axis=False),
               conv("c", "q", "c", 5, s), shapes=s)  # fmt: skip
    assert gs["a"].producers == ["a", "d"] and gs["a"].via == ("a concatenation along another axis",)


def test_reduce_over_spatial_axes_passes_and_an_unfollowed_input_makes_an_unknown():
    s = {**S, "p": (N, 4), "fc": (N, 10)}
    gs = graph(conv("a", "x", "a", 4, s), op("reduce", "mean", ["a"], ["p"], s.items(), channel_axis=False), conv("fc", "p", "fc", 10, s, kind="linear"), shapes=s)
    assert roles(gs["a"]) == [("a", "out", 0, 1), ("fc", "in", 0, 1)]
    gs = graph(conv("a", "x", "a", 4, s), op("reduce", "sum", ["a"], ["p"], s.items(), label="'sum'"), conv("fc", "p", "fc", 10, s, kind="linear"), shapes=s)
    assert gs["a"].reason == "its channels reach 'sum', which needs all its channels"
    s["hidden"] = (N, 4, 8, 8)  # made by an operation the graph does not list
    gs = graph(conv("a", "x", "a", 4, s), op("join", "mul", ["a", "hidden"], ["b"], s.items(), via="a multiplication"), conv("c", "b", "c", 5, s), shapes=s)
    assert gs["a"].reason == "its channels reach 'mul' (join), which needs all its channels"


def test_a_constant_and_shape_reads():
    s = {**S, "w": (1, 4, 1, 1), "size": None}
    gs = graph(
        conv("a", "x", "a", 4, s),
        op("constant", "w", [], ["w"], s.items()),
        op("shape", "size", ["a"], ["size"], s.items()),
        op("join", "mul", ["a", "w", "size"], ["b"], s.items(), via="a multiplication"),
        conv("c", "b", "c", 5, s),
        shapes=s,
    )
    assert gs["a"].reason == "they meet a constant tensor of the model" and gs["a"].via == ("a multiplication",)
