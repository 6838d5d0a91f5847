"""Semantic diff of recipes."""

from __future__ import annotations

import lwdsl
from lwdsl.language.diff import Change, diff_recipes, render_diff


def changes(old: str, new: str) -> list[Change]:
    return diff_recipes(lwdsl.parse(old), lwdsl.parse(new))


def test_layout_comments_variables_and_defaults_make_no_difference() -> None:
    assert changes("prune l1 0.2", "let a = 20%\n# same\nprune   layer l1 $a on conv, linear") == []
    assert changes("quantize int8 on linear, conv", "quantize int8 mode=static") == []
    assert render_diff([]) == "no semantic difference"


def test_changed_steps_list_their_options() -> None:
    (change,) = changes("prune l1 0.2 | quantize int8", "prune l1 0.2 | quantize int8 mode=dynamic calibrate=512")
    assert change.kind == "changed" and (change.old, change.new) == (2, 2)
    assert change.text == "quantize: mode: static -> dynamic; calibrate: 256 -> 512"
    (change,) = changes("prune l1 0.2", "prune l1 0.2 on conv")
    assert change.text == "prune: selector: on conv, linear -> on conv"


def test_added_removed_and_moved() -> None:
    old = "prune l1 0.2\nfinetune epochs=2\nquantize int8"
    found = changes(old, "finetune epochs=2\nprune l1 0.2\nquantize int8\nexport onnx")
    assert {(c.kind, c.text) for c in found} == {
        ("moved", "finetune epochs=2: step 2 -> 1"),
        ("added", "export onnx"),
    }
    (removed,) = changes("prune l1 0.2 | finetune", "prune l1 0.2")
    assert (removed.kind, removed.old, removed.text) == ("removed", 2, "finetune")
    assert render_diff([removed]) == "- step 2: finetune"


def test_header_changes() -> None:
    found = changes('recipe "a"\ntarget m on d\nprune 0.1', 'recipe "b"\ntarget m\nprune 0.1')
    assert [c.text for c in found] == ["recipe name: 'a' -> 'b'", "target: m on d -> m"]
