"""``prune wanda`` and ``prune sparsegpt`` as the language reads them: fields, refusals, forms."""

from __future__ import annotations

import pytest

import lwdsl
from lwdsl.errors import RecipeError
from lwdsl.language.validate import check_backend


def step(text: str):
    (only,) = lwdsl.parse(text).steps
    return only


def test_defaults_and_forms() -> None:
    wanda = step("prune wanda 50%")
    assert (wanda.method, wanda.amount, wanda.calibrate, wanda.forms(), wanda.layer_kinds()) == ("wanda", 0.5, 128, ("wanda",), ("linear",))
    sparse = step('prune sparsegpt 50% nm=2:4 calibrate=64 damp=0.05 block=64 except "lm_head"')
    assert (sparse.nm.n, sparse.nm.m, sparse.calibrate, sparse.damp, sparse.block) == (2, 4, 64, 0.05, 64)
    assert sparse.forms() == ("sparsegpt", "nm") and sparse.requested_sparsity() == 0.5
    assert step("prune sparsegpt nm=2:4").amount is None
    assert step("prune l1 0.5").layer_kinds() is None


@pytest.mark.parametrize(
    "text, words",
    [
        ("prune wanda 60% nm=2:4", "nm=2:4 prunes 0.5 of the weights itself; AMOUNT 0.6 contradicts it"),
        ("prune l1 0.6 nm=2:4", "AMOUNT 0.6 contradicts it"),
        ("prune global wanda 50%", "wanda prunes each linear layer once"),
        ("prune sparsegpt 50% structured=filters", "sparsegpt prunes each linear layer once"),
        ("prune wanda 50% schedule=gradual epochs=2", "wanda prunes each linear layer once"),
        ("prune wanda 50% damp=0.1", "damp= only applies to prune sparsegpt"),
        ("prune l1 50% calibrate=64", "calibrate= only applies to prune wanda or sparsegpt"),
        ("prune wanda", "AMOUNT is missing"),
        ("prune sparsegpt 50% damp=0", "damp"),
    ],
)
def test_refusals(text: str, words: str) -> None:
    with pytest.raises(RecipeError) as err:
        lwdsl.parse(text)
    assert words in str(err.value)


def test_both_backends_take_calibrated_pruning() -> None:
    for backend in ("tensorflow", "torch"):
        check_backend(lwdsl.parse("prune sparsegpt 50% nm=2:4\nprune wanda 50%"), backend, load=False)


@pytest.mark.parametrize("model", ["tiny-gpt2", '"tiny-gpt2?layers=4"', "tiny-llama", "tiny-bert"])
def test_both_backends_build_the_transformers(model) -> None:
    recipe = lwdsl.parse(f"target {model} on pydoc\nprune l1 20%")
    for backend in ("tensorflow", "torch"):
        check_backend(recipe, backend, load=False)


def test_a_support_table_refuses_a_model_by_its_name_before_any_sizes() -> None:
    from lwdsl.backend.support import SupportTable

    table = SupportTable("x", runs={}, no_models={"tiny-x": "tiny-x is not built here"})
    assert table.model_refusal("tiny-x?layers=4") == table.model_refusal("tiny-x") == "tiny-x is not built here"
    assert table.model_refusal("tiny-llama") is None
