"""Inputs of any size or shape: huge or endless recipes, deep nesting, blow-ups through variables
and ``use``, many quantize steps, crafted or damaged ``.lwz`` and idx files, absurd synthetic
sizes. Each is refused with a one-line error naming it, in bounded time and memory, before work.
"""

from __future__ import annotations

import gzip
import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lwdsl
import lwdsl.language.validate as validate_mod
from lwdsl.data.builtin import data_shape, load_data
from lwdsl.errors import RecipeError, UsageError
from lwdsl.language.jsonplan import recipe_from_json
from lwdsl.limits import MAX_NESTING, MAX_RECIPE_BYTES, MAX_RECIPE_TOKENS, MAX_SYNTHETIC_BYTES
from lwdsl.backend.weights import load_weights, save_weights

from ._util import assert_refused, run_cli

# --- recipes ---------------------------------------------------------------------------------


def test_a_10_mb_recipe_and_dev_zero_are_refused_fast_in_little_memory(tmp_path: Path) -> None:
    """In a process capped at 400 MB of address space (a 1 MB recipe used to take 380 MB) and
    20 s; in-process, at most 1 MiB + 1 byte of the file is ever held."""
    (tmp_path / "big.lw").write_text("prune l1 0.5\n" * (10_000_000 // 13))
    done = run_cli(["check", "big.lw"], tmp_path, timeout=20, memory_mb=400)
    assert_refused(done, "big.lw", "more than a recipe may be (1 MiB)")
    done = run_cli(["check", "/dev/zero"], tmp_path, timeout=20, memory_mb=400)
    assert_refused(done, "/dev/zero", "not a regular file")
    tracemalloc.start()
    try:
        with pytest.raises(RecipeError, match="9.5 MiB"):
            lwdsl.load(tmp_path / "big.lw")
        assert tracemalloc.get_traced_memory()[1] < 3 * MAX_RECIPE_BYTES
    finally:
        tracemalloc.stop()


def test_a_recipe_of_too_many_tokens_is_refused_at_the_first_one_past_the_limit() -> None:
    """Checking stays bounded: a recipe under 1 MiB made of many short steps is refused before
    the parser reads it, located at the first token past MAX_RECIPE_TOKENS."""
    per_line = 5  # prune l1 0.2 on conv
    lines = MAX_RECIPE_TOKENS // per_line + 1
    text = "prune l1 0.2 on conv\n" * lines
    assert len(text.encode()) < MAX_RECIPE_BYTES
    with pytest.raises(RecipeError) as err:
        lwdsl.parse(text)
    loc = err.value.location
    assert (loc.line, loc.col) == (lines, 1) and "too many for a recipe" in err.value.message
    # comments are not counted: more commented words than the limit still parse
    lwdsl.parse("# a b c d e f g h i j k l\n" * (MAX_RECIPE_TOKENS // 10) + "prune l1 0.2 on conv\n" * 100)


def test_the_size_limit_holds_for_text_json_and_use_together(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="too large for a recipe"):
        lwdsl.parse("x" * (MAX_RECIPE_BYTES + 1))
    with pytest.raises(RecipeError, match="too large for a recipe"):
        recipe_from_json(" " * (MAX_RECIPE_BYTES + 1))
    half = "#" * (MAX_RECIPE_BYTES // 2) + "\nprune l1 0.5\n"  # each file passes, not both
    for name in ("a.lw", "b.lw"):
        (tmp_path / name).write_text(half)
    (tmp_path / "main.lw").write_text('use "a.lw"\nuse "b.lw"\n')
    with pytest.raises(RecipeError, match=r"main.lw:2:5: .*more than 1 MiB"):
        lwdsl.load(tmp_path / "main.lw")


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 700))
def test_nested_lists_are_refused_past_the_limit_never_recursion(depth: int) -> None:
    text = "distill features=" + "[" * depth + "a->b" + "]" * depth
    try:
        lwdsl.parse(text)
    except RecipeError as exc:
        if depth > MAX_NESTING:
            assert "nested too deeply" in exc.message and exc.location.col == len("distill features=") + MAX_NESTING + 1
        return


def test_variables_and_use_cannot_multiply_a_small_recipe(tmp_path: Path) -> None:
    lets = "let v0 = [1, 1]\n" + "".join(f"let v{i} = [$v{i - 1}, $v{i - 1}]\n" for i in range(1, 40))
    with pytest.raises(RecipeError, match="too large"):
        lwdsl.parse(lets + "prune l1 0.5")
    deep = "let d0 = [[[[[[[[1]]]]]]]]\n" + "".join(f"let d{i} = [[[[[[[[$d{i - 1}]]]]]]]]\n" for i in range(1, 5))
    with pytest.raises(RecipeError, match="nested more than 16"):
        lwdsl.parse(deep + "prune l1 0.5")
    for i in range(40):  # each file uses the next twice: 2**40 copies if nothing stopped it
        (tmp_path / f"f{i}.lw").write_text(f'use "f{i + 1}.lw"\nuse "f{i + 1}.lw"\n' if i < 39 else "prune l1 0.5\n")
    with pytest.raises(RecipeError, match="nested more than 16 files deep|more than 1 MiB"):
        lwdsl.load(tmp_path / "f0.lw")


def test_numbers_and_lines_of_any_length_give_short_errors() -> None:
    for text in ("prune epochs=" + "9" * 5000, "prune nm=" + "9" * 5000 + ":4", "prune l1 0.5 | " * 400 + "prune oops=1"):
        with pytest.raises(RecipeError) as err:
            lwdsl.parse(text)
        assert len(err.value.render()) < 1000, err.value.render()[:300]


def test_quantize_steps_are_checked_in_linear_time(monkeypatch) -> None:
    calls = []
    real = validate_mod._coverage
    monkeypatch.setattr(validate_mod, "_coverage", lambda selector: calls.append(1) or real(selector))
    n = 400
    recipe = lwdsl.parse("".join(f'quantize int8 mode=qat on "l{i}"\nprune l1 0.1 on "p{i}"\n' for i in range(n)))
    calls.clear()
    validate_mod.validate_recipe(recipe)
    assert len(calls) <= 2 * n + 10  # pairwise checking made n*(n-1) = 159,600 calls
    with pytest.raises(RecipeError, match=r"step 401 .*already quantized") as err:
        lwdsl.parse("".join(f'quantize int8 on "l{i}"\n' for i in range(400)) + 'quantize int4 on "l7", linear')
    assert "step 8 `" in err.value.message  # the first step it overlaps, as before


def test_json_plans_of_any_shape(tmp_path: Path) -> None:
    for text, what in [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"variables": {"a": ' + "[" * 40 + "]" * 40 + "}}", "nested more than 16"),
        ('{"version": 99, "steps": []}', "language version 99"),
    ]:
        with pytest.raises(RecipeError, match=what):
            recipe_from_json(text)
    (tmp_path / "v.json").write_text('{\n  "version": 99,\n  "steps": []\n}\n')
    done = run_cli(["check", "v.json"], tmp_path, timeout=30)
    assert_refused(done, "v.json:2:14", "this lwdsl reads versions 1 to 1")


# --- .lwz weights ----------------------------------------------------------------------------


def _npz(entries: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **entries)
    return buf.getvalue()


@pytest.fixture(scope="module")
def good_lwz(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("lwz") / "good.lwz"
    rng = np.random.default_rng(0)
    weight = np.where(rng.random((40, 30)) > 0.8, rng.random((40, 30)), 0).astype(np.float32)
    save_weights(path, {"fc.weight": weight, "fc.bias": np.ones(40, np.float32)}, {"model": "m"})
    return path.read_bytes()


def test_crafted_lwz_files_are_refused_by_name(tmp_path: Path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**50,)})
    lying = io.BytesIO()
    with zipfile.ZipFile(lying, "w") as archive:
        archive.writestr("w.npy", header.getvalue() + b"\0" * 16)
    cases = {
        "empty.lwz": (b"", "empty"),
        "text.lwz": (b"hello", "not a .lwz file"),
        "absurd.lwz": (
            _npz({"w::shape": np.array([2**30, 2**30, 800], np.int64), "w::bitmap": np.zeros(4, np.uint8), "w::values": np.zeros(0, np.float32)}),
            "its bitmap covers 32",
        ),
        "negative.lwz": (_npz({"w::shape": np.array([-3, 4]), "w::bitmap": np.zeros(2, np.uint8), "w::values": np.zeros(0, np.float32)}), "bad shape"),
        "values.lwz": (_npz({"w::shape": np.array([8]), "w::bitmap": np.array([255], np.uint8), "w::values": np.zeros(3, np.float32)}), "8 non-zeros"),
        "lying.lwz": (lying.getvalue(), "declares shape (1125899906842624,)"),
        "objects.lwz": (_npz({"w": np.array([{"a": 1}], dtype=object)}), ""),
        "meta.lwz": (_npz({"__meta__": np.frombuffer(b"[1, 2", np.uint8)}), "__meta__"),
    }
    for name, (data, what) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UsageError) as err:
            load_weights(tmp_path / name)
        assert str(tmp_path / name) in err.value.message and what in err.value.message, err.value.message
        assert "\n" not in err.value.message


@settings(max_examples=80, deadline=None)
@given(cut=st.integers(0, 10**6), flip=st.integers(0, 10**6))
def test_truncated_or_flipped_lwz_files_load_right_or_are_refused(tmp_path_factory, good_lwz: bytes, cut: int, flip: int) -> None:
    data = bytearray(good_lwz[: cut % (len(good_lwz) + 1)])
    if data and flip % 3 == 0:
        data[flip % len(data)] ^= 0xFF
    path = tmp_path_factory.mktemp("cut") / "w.lwz"
    path.write_bytes(bytes(data))
    try:
        state, _ = load_weights(path)
    except UsageError as exc:
        assert str(path) in exc.message
        return
    assert set(state) == {"fc.weight", "fc.bias"} and state["fc.weight"].shape == (40, 30)


# --- data ------------------------------------------------------------------------------------


def _idx(array: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return gzip.compress(head + array.astype(np.uint8).tobytes())


def _mnist(folder: Path, n_train: int = 6, n_test: int = 4, labels_test: int | None = None) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": _idx(rng.integers(0, 255, (n_train, 28, 28))),
        "train-labels-idx1-ubyte.gz": _idx(rng.integers(0, 10, n_train)),
        "t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 255, (n_test, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": _idx(rng.integers(0, 10, labels_test if labels_test is not None else n_test)),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def test_damaged_data_files_are_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LWDSL_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    files = _mnist(tmp_path / "mnist")
    assert load_data("mnist", download=False).train_x.shape == (6, 1, 28, 28)
    labels = files["t10k-labels-idx1-ubyte.gz"]
    good = labels.read_bytes()
    for data, what in [
        (good[: len(good) - 6], "truncated"),
        (gzip.compress(gzip.decompress(good)[:-2]), "is truncated: its header says (4,)"),
        (gzip.compress(bytes([0, 0, 8, 1]) + (2**32 - 1).to_bytes(4, "big")), "at most 2 GiB"),
        (gzip.compress(bytes([0, 0, 8, 3, 0, 0, 0, 4])), "has 3 dimensions, expected 1"),
        (_idx(np.arange(4) + 20), "has label 23; labels are 0 to 9"),
        (_idx(np.arange(3)), "has 4 images but"),
    ]:
        labels.write_bytes(data)
        with pytest.raises(UsageError) as err:
            load_data("mnist", download=False)
        assert what in err.value.message and "t10k-" in err.value.message, err.value.message


@settings(max_examples=60, deadline=None)
@given(c=st.integers(-2, 10**6), h=st.integers(0, 10**6), w=st.integers(0, 10**6), k=st.integers(-1, 10**7))
def test_synthetic_sizes_are_bounded(c: int, h: int, w: int, k: int) -> None:
    name = f"synthetic:{c},{h},{w}:{k}"
    try:
        shape, classes = data_shape(name)
    except UsageError as exc:
        assert name in exc.message or "synthetic:" in exc.message
        return
    assert shape == (c, h, w) and classes == k
    assert 4 * c * h * w * (2048 + 512 + k) <= MAX_SYNTHETIC_BYTES


def test_synthetic_of_the_issue_is_refused_before_any_memory_is_taken() -> None:
    with pytest.raises(UsageError, match=r"synthetic:100000,1000,1000:10' would take .* TiB of memory"):
        load_data("synthetic:100000,1000,1000:10")
