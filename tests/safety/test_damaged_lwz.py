"""Damaged weight files are refused before any work (issue 27, class 1).

Every tensor of a ``.lwz`` file is checked on load against what the file declares for it
(:func:`lwdsl.semantics.quant.check_state`): a NaN scale, a NaN codebook, a missing or
mis-shaped scale, codes stored as floats or out of their range, a bitmap that does not fit ...
is a bad-input error (``UsageError``, exit code 2) naming the file and the tensor, never a
model at chance and never an internal error. The same for ``.pt`` checkpoints and data files.

The property test feeds random damage (bit flips, truncation, NaN and inf, shape and dtype
changes, missing entries) to a small ``.lwz`` of every quantize form, built with the core
functions (no training), and loads it the way ``lwdsl run --checkpoint`` does: refused naming
the file, or loaded to exactly the model that was saved.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwdsl.data.builtin import load_data
from lwdsl.errors import LwdslError, UsageError
from lwdsl.semantics import quant as Q
from lwdsl.backend.weights import load_weights, save_weights

from ._util import TINY, assert_refused, cli_env, run_cli

FORMS = ("int8", "int8/per_tensor", "int8/static", "int4", "int2", "ternary", "binary", "cluster", "fp16", "bf16")


def _float_state(seed: int = 0) -> dict[str, np.ndarray]:
    """A small canonical state: a conv, a pruned linear (its packed codes go sparse) and a
    linear with a zero row (a zero channel: scale 1, or 0 for binary)."""
    rng = np.random.default_rng(seed)
    big = rng.normal(size=(64, 96)).astype(np.float32)
    big[rng.random(big.shape) < 0.9] = 0.0
    fc = rng.normal(size=(10, 64)).astype(np.float32)
    fc[3] = 0.0
    return {
        "conv.weight": rng.normal(size=(6, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(size=6).astype(np.float32),
        "big.weight": big,
        "big.bias": rng.normal(size=64).astype(np.float32),
        "fc.weight": fc,
        "fc.bias": rng.normal(size=10).astype(np.float32),
    }


LAYERS = ("conv", "big", "fc")


def _packed(form: str) -> dict[str, np.ndarray]:
    """The canonical state of :func:`_float_state` with every layer in ``form``."""
    state = _float_state()
    if form in Q.HALF_FORMS:
        return Q.pack_state(state, {}, casts={layer: form for layer in LAYERS})
    dtype, _, how = form.partition("/")
    granularity = "per_tensor" if how == "per_tensor" else "per_channel"
    quants = {layer: Q.quantize_as(state[f"{layer}.weight"], dtype, granularity, bits=3 if dtype == "cluster" else None) for layer in LAYERS}
    acts = {layer: Q.act_qparams(-0.5 - i, 2.0 + i) for i, layer in enumerate(LAYERS)} if how == "static" else None
    return Q.pack_state(state, quants, acts)


def _refused(path: Path, *named: str) -> UsageError:
    with pytest.raises(UsageError) as err:
        load_weights(path)
    exc = err.value
    assert exc.exit_code == 2 and str(path) in exc.message, exc.message
    for word in named:
        assert word in exc.message, exc.message
    assert "\n" not in exc.message
    return exc


def _save(tmp_path: Path, form: str, damage: Callable[[dict], None], name: str = "m.lwz") -> Path:
    state = _packed(form)
    damage(state)
    path = tmp_path / name
    save_weights(path, state)
    return path


def _savez(path: Path, entries: dict[str, np.ndarray]) -> None:
    """The entries as a ``.lwz`` archive as they are (another writer: no float32 conversion)."""
    with open(path, "wb") as f:
        np.savez(f, **entries)


def _set(key: str, index, value) -> Callable[[dict], None]:
    def damage(state: dict) -> None:
        arr = state[key].copy()
        arr[index] = value
        state[key] = arr

    return damage


# --- one test per damage class ------------------------------------------------------------------


def test_the_undamaged_files_load_back_exactly(tmp_path: Path) -> None:
    for form in FORMS:
        state = _packed(form)
        save_weights(tmp_path / "ok.lwz", state)
        back, _ = load_weights(tmp_path / "ok.lwz")
        assert _unpacked(back) == _unpacked(state), form
    assert "big.weight.nonzero" in _packed("int4") and "big.weight.nonzero" in _packed("cluster")


@pytest.mark.parametrize("form", ["int8", "int4", "ternary", "int8/per_tensor"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 0.0, -0.5])
def test_a_nan_infinite_zero_or_negative_scale_is_refused(tmp_path: Path, form: str, bad: float) -> None:
    index = () if form.endswith("per_tensor") else 2
    path = _save(tmp_path, form, _set("fc.weight.scale", index, bad))
    _refused(path, "'fc.weight.scale'", "scales are finite and > 0")


def test_a_binary_scale_may_be_zero_only_with_codes_plus_one(tmp_path: Path) -> None:
    state = _packed("binary")
    assert state["fc.weight.scale"][3] == 0  # the zero row: scale 0, codes +1
    save_weights(tmp_path / "ok.lwz", state)
    load_weights(tmp_path / "ok.lwz")
    _refused(_save(tmp_path, "binary", _set("fc.weight.scale", 0, -1.0)), "'fc.weight.scale'", ">= 0")
    _refused(_save(tmp_path, "binary", _set("fc.weight.scale", 1, np.nan)), "'fc.weight.scale'")

    def flip_row(state: dict) -> None:  # codes of the zero channel all -1: its weights -0.0
        codes = Q.unpack_codes(state["fc.weight.codes"], 1, (10, 64))
        codes[3] = -1
        state["fc.weight.codes"] = Q.pack_codes(codes, 1)

    _refused(_save(tmp_path, "binary", flip_row), "'fc.weight.codes'", "scale 0")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_nan_or_infinite_cluster_codebook_is_refused(tmp_path: Path, bad: float) -> None:
    _refused(_save(tmp_path, "cluster", _set("big.weight.codebook", 5, bad)), "'big.weight.codebook'", "finite")


def test_a_codebook_whose_code_0_is_not_zero_is_refused(tmp_path: Path) -> None:
    _refused(_save(tmp_path, "cluster", _set("fc.weight.codebook", 0, 0.25)), "'fc.weight.codebook'", "+0.0")


@pytest.mark.parametrize("form", ["int8", "int4", "binary"])
def test_a_missing_scale_is_refused(tmp_path: Path, form: str) -> None:
    _refused(_save(tmp_path, form, lambda s: s.pop("fc.weight.scale")), "'fc.weight.scale'")


@pytest.mark.parametrize("form", ["int8", "int2"])
def test_a_wrongly_shaped_scale_is_refused(tmp_path: Path, form: str) -> None:
    _refused(_save(tmp_path, form, lambda s: s.update({"fc.weight.scale": s["fc.weight.scale"][:-1]})), "'fc.weight.scale'", "shape [9]")
    _refused(_save(tmp_path, form, lambda s: s.update({"fc.weight.scale": s["fc.weight.scale"].reshape(2, 5)})), "'fc.weight.scale'")


def test_a_scale_of_another_dtype_is_refused(tmp_path: Path) -> None:
    # save_weights stores floats as float32; a writer that does not is caught on load
    state = _packed("int8")
    state["fc.weight.scale"] = state["fc.weight.scale"].astype(np.float16)
    _savez(tmp_path / "m.lwz", state)
    _refused(tmp_path / "m.lwz", "'fc.weight.scale'", "float16")


@pytest.mark.parametrize("form", ["int8", "int4", "cluster"])
def test_codes_stored_as_floats_are_refused(tmp_path: Path, form: str) -> None:
    _refused(_save(tmp_path, form, lambda s: s.update({"conv.weight.codes": s["conv.weight.codes"].astype(np.float32)})), "'conv.weight.codes'", "float32")


def test_int8_codes_out_of_range_are_refused(tmp_path: Path) -> None:
    _refused(_save(tmp_path, "int8", _set("conv.weight.codes", (0, 0, 0, 0), -128)), "'conv.weight.codes'", "-128", "[-127, 127]")


def test_packed_codes_out_of_range_or_with_stray_bits_are_refused(tmp_path: Path) -> None:
    _refused(_save(tmp_path, "int4", _set("conv.weight.codes", 0, 0x88)), "'conv.weight.codes'", "narrow range")
    _refused(_save(tmp_path, "int2", _set("conv.weight.codes", 0, 0b10)), "'conv.weight.codes'", "narrow range")
    # conv: 162 codes at 4 bits fill 81 bytes; at 2 bits 40.5 bytes: bits past the last code are 0
    _refused(_save(tmp_path, "int2", _set("conv.weight.codes", -1, 0xF0)), "'conv.weight.codes'", "past its last code")


def test_a_shape_that_does_not_fit_the_packed_codes_is_refused(tmp_path: Path) -> None:
    _refused(_save(tmp_path, "int4", _set("conv.weight.shape", 0, 7)), "'conv.weight.codes'", "do not fit shape")
    _refused(_save(tmp_path, "int4", _set("conv.weight.shape", 1, -3)), "'conv.weight.shape'")
    _refused(_save(tmp_path, "int4", lambda s: s.update({"conv.weight.shape": s["conv.weight.shape"].astype(np.float32)})), "'conv.weight.shape'")
    _refused(_save(tmp_path, "int4", lambda s: s.pop("conv.weight.shape")), "'conv.weight.shape'")


def test_a_sparse_bitmap_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    for form in ("int4", "cluster"):
        state = _packed(form)
        on = int(np.argmax(np.unpackbits(state["big.weight.nonzero"]) == 0))  # a zero code: mark it non-zero
        _refused(_save(tmp_path, form, _set("big.weight.nonzero", on // 8, state["big.weight.nonzero"][on // 8] | (0x80 >> (on % 8)))), "'big.weight.codes'")
        _refused(_save(tmp_path, form, lambda s: s.update({"big.weight.nonzero": s["big.weight.nonzero"][:-1]})), "'big.weight.nonzero'")
        _refused(_save(tmp_path, form, lambda s: s.pop("big.weight.codes")), "'big.weight.")


def test_bits_missing_or_out_of_range_are_refused(tmp_path: Path) -> None:
    _refused(_save(tmp_path, "int4", lambda s: s.pop("fc.weight.bits")), "'fc.weight.bits'")
    _refused(_save(tmp_path, "int8", lambda s: s.update({"fc.weight.bits": np.asarray(9, np.int8)})), "'fc.weight.bits'", "1..8")
    _refused(_save(tmp_path, "cluster", lambda s: s.update({"fc.weight.bits": np.asarray(1, np.int8)})), "'fc.weight.bits'", "2..8")
    _refused(_save(tmp_path, "int8", lambda s: s.update({"fc.weight.bits": np.asarray(8.0, np.float32)})), "'fc.weight.bits'")


def test_static_activation_parameters_are_checked(tmp_path: Path) -> None:
    _refused(_save(tmp_path, "int8/static", lambda s: s.update({"fc.act.scale": np.asarray(np.nan, np.float32)})), "'fc.act.scale'")
    _refused(_save(tmp_path, "int8/static", lambda s: s.update({"fc.act.zero_point": np.asarray(300, np.int32)})), "'fc.act.zero_point'", "300")
    _refused(_save(tmp_path, "int8/static", lambda s: s.pop("fc.act.zero_point")), "'fc.act.zero_point'")


@pytest.mark.parametrize("form", ["fp16", "bf16"])
def test_a_nan_or_infinite_cast_weight_is_refused(tmp_path: Path, form: str) -> None:
    inf = 0x7C00 if form == "fp16" else 0x7F80
    _refused(_save(tmp_path, form, _set("fc.weight." + form, (0, 0), inf)), f"'fc.weight.{form}'", "NaN or infinite")
    _refused(_save(tmp_path, form, _set("fc.weight." + form, (0, 0), inf + 1)), f"'fc.weight.{form}'")
    _refused(_save(tmp_path, form, lambda s: s.update({f"fc.weight.{form}": s[f"fc.weight.{form}"].astype(np.int32)})), f"'fc.weight.{form}'", "uint16")


def test_a_nan_plain_weight_is_refused(tmp_path: Path) -> None:
    _refused(_save(tmp_path, "int4", _set("fc.bias", 2, np.nan)), "'fc.bias'", "finite")
    _refused(_float_nan(tmp_path), "'big.weight'", "-inf")


def _float_nan(tmp_path: Path) -> Path:
    """A float state whose sparsely stored weight (90% zeros: bitmap and values) holds -inf."""
    state = _float_state()
    state["big.weight"][0, 1] = -np.inf
    save_weights(tmp_path / "f.lwz", state)
    with np.load(tmp_path / "f.lwz") as z:
        assert "big.weight::values" in z.files
    return tmp_path / "f.lwz"


def test_parts_without_their_layer_or_a_layer_stored_twice_are_refused(tmp_path: Path) -> None:
    _refused(_save(tmp_path, "int8", lambda s: s.pop("fc.weight.codes")), "'fc.weight.")
    _refused(_save(tmp_path, "int8", lambda s: s.update({"fc.weight": np.zeros((10, 64), np.float32)})), "'fc.weight")
    _refused(_save(tmp_path, "fp16", lambda s: s.update({"fc.weight": np.zeros((10, 64), np.float32)})), "'fc.weight.fp16'")
    save_weights(tmp_path / "f.lwz", _float_state())
    with np.load(tmp_path / "f.lwz") as z:
        sparse = {k: z[k] for k in z.files if k != "big.weight::shape"}  # without it the tensor vanished
    _savez(tmp_path / "s.lwz", sparse)
    _refused(tmp_path / "s.lwz", "big.weight::")


def test_an_unreadable_archive_is_refused_not_an_internal_error(tmp_path: Path) -> None:
    save_weights(tmp_path / "m.lwz", _packed("int4"))
    data = bytearray((tmp_path / "m.lwz").read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        first = z.infolist()[0]
    data[first.header_offset + 8] = 99  # compression method 99: zipfile raises NotImplementedError
    central = bytes(data).rfind(b"PK\x01\x02")
    data[central + 10] = 99
    (tmp_path / "m.lwz").write_bytes(bytes(data))
    _refused(tmp_path / "m.lwz", "damaged")


# --- through the backends and the command line ------------------------------------------------


torch = pytest.importorskip("torch")


def _module():
    from torch import nn

    class Tiny(nn.Module):  # the layer names of _float_state
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3)
            self.big = nn.Linear(96, 64)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = torch.relu(self.conv(x)).flatten(1)
            return self.fc(torch.relu(self.big(x)))

    return Tiny()


def _load_torch(path: Path):
    from backends.torch_backend.backend import TorchBackend

    return TorchBackend().load_model(_module(), (3, 6, 6), 10, checkpoint=path)


def _model_of(handle) -> tuple:
    """Everything a loaded torch model is: weights (bit for bit), quantized layers (codes,
    scales, bits, axis, codebook), static input ranges and cast layers."""
    weights = {k: (tuple(v.shape), str(v.dtype), v.detach().numpy().tobytes()) for k, v in handle.module.state_dict().items()}
    quants = {
        layer: (q.codes.tobytes(), q.codes.shape, np.asarray(q.scale).tobytes(), q.bits, q.axis, None if q.codebook is None else q.codebook.tobytes())
        for layer, q in handle.quant.items()
    }
    return weights, quants, dict(handle.act), dict(handle.qstate.mode)


def _unpacked(state: dict) -> tuple:
    flat, quants = Q.unpack_state(state)
    return (
        {k: (v.shape, v.dtype.str, v.tobytes()) for k, v in flat.items()},
        {k: (q.codes.tobytes(), q.bits, q.axis, np.asarray(q.scale).tobytes()) for k, q in quants.items()},
        Q.unpack_act(state),
        Q.unpack_casts(state),
    )


def test_a_damaged_lwz_is_refused_by_the_torch_backend_naming_file_and_tensor(tmp_path: Path) -> None:
    path = _save(tmp_path, "int8", _set("fc.weight.scale", 3, np.nan))
    with pytest.raises(UsageError, match=r"m\.lwz: tensor 'fc.weight.scale' holds nan \(channel 3 of 10\)"):
        _load_torch(path)
    save_weights(tmp_path / "ok.lwz", _packed("int4"))
    handle = _load_torch(tmp_path / "ok.lwz")
    assert set(handle.quant) == set(LAYERS) and torch.isfinite(handle.module.fc.weight).all()


def test_damaged_torch_checkpoints_are_usage_errors_naming_the_file(tmp_path: Path) -> None:
    good = {k: torch.from_numpy(v) for k, v in _float_state().items()}
    torch.save(good, tmp_path / "good.pt")
    _load_torch(tmp_path / "good.pt")
    nan = dict(good, **{"fc.bias": torch.full((10,), float("nan"))})
    torch.save(nan, tmp_path / "nan.pt")
    packed = {k: torch.from_numpy(np.array(v)) for k, v in _packed("int8").items()}
    packed["fc.weight.scale"] = packed["fc.weight.scale"][:-1]
    torch.save(packed, tmp_path / "scale.pt")
    torch.save(dict(good, **{"fc.bias": torch.zeros(10, dtype=torch.int32)}), tmp_path / "int.pt")
    torch.save(dict(good, **{"fc.bias": torch.zeros(11)}), tmp_path / "shape.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:300])
    for name, what in [("nan.pt", "'fc.bias'"), ("scale.pt", "'fc.weight.scale'"), ("int.pt", "'fc.bias'"), ("shape.pt", "'fc.bias'"), ("cut.pt", "not a torch file")]:
        with pytest.raises(UsageError) as err:
            _load_torch(tmp_path / name)
        assert err.value.exit_code == 2 and name in err.value.message and what in err.value.message, err.value.message


def test_damaged_data_files_are_usage_errors(tmp_path: Path, monkeypatch) -> None:
    import gzip

    monkeypatch.setenv("LWDSL_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, dims in [("train-images-idx3-ubyte", (4, 28, 28)), ("train-labels-idx1-ubyte", (4,)), ("t10k-images-idx3-ubyte", (2, 28, 28)), ("t10k-labels-idx1-ubyte", (2,))]:
        head = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
        (folder / f"{name}.gz").write_bytes(gzip.compress(head + bytes(int(np.prod(dims)))))
    assert load_data("mnist", download=False).train_x.shape == (4, 1, 28, 28)
    cut = folder / "t10k-images-idx3-ubyte.gz"
    cut.write_bytes(cut.read_bytes()[:-9])
    with pytest.raises(UsageError) as err:
        load_data("mnist", download=False)
    assert err.value.exit_code == 2 and str(cut) in err.value.message


def test_the_command_line_refuses_a_damaged_checkpoint_with_exit_2(tmp_path: Path) -> None:
    from backends.torch_backend.backend import TorchBackend

    be = TorchBackend()
    handle = be.load_model("lenet300", (1, 8, 8), 3)
    state = be.state(handle)
    quants = {layer: Q.quantize_as(state[f"{layer}.weight"], "int8") for layer in ("fc1", "fc2", "fc3") if f"{layer}.weight" in state}
    assert quants, sorted(state)
    packed = Q.pack_state(state, quants)
    layer = sorted(quants)[0]
    packed[f"{layer}.weight.scale"][1] = np.nan
    save_weights(tmp_path / "bad.lwz", packed)
    (tmp_path / "r.lw").write_text("prune l1 0.5\n")
    done = run_cli(["run", "r.lw", *TINY, "--checkpoint", "bad.lwz"], tmp_path, env=cli_env(tmp_path), timeout=120)
    assert_refused(done, "bad.lwz", f"'{layer}.weight.scale'")
    assert not list((tmp_path / "runs").glob("*")) and not (tmp_path / ".cache-lwdsl" / "baselines").exists()  # no run, no baseline


# --- random damage ------------------------------------------------------------------------------

_ORIGINAL: dict[str, tuple[bytes, dict[str, np.ndarray], tuple]] = {}


def _original(form: str, folder: Path) -> tuple[bytes, dict[str, np.ndarray], tuple]:
    """(the file's bytes, its raw entries, the model it loads to), made once per form."""
    if form not in _ORIGINAL:
        path = folder / f"{form.replace('/', '-')}.lwz"
        save_weights(path, _packed(form))
        with np.load(path) as z:
            entries = {k: z[k] for k in z.files}
        _ORIGINAL[form] = (path.read_bytes(), entries, _model_of(_load_torch(path)))
    return _ORIGINAL[form]


_DTYPES = (np.float32, np.float64, np.float16, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64)


def _damage_entry(entries: dict[str, np.ndarray], data: st.DataObject) -> dict[str, np.ndarray]:
    out = dict(entries)
    key = data.draw(st.sampled_from(sorted(k for k in out if k != "__meta__")), label="entry")
    arr = np.array(out[key])
    # (another valid value in a consistent archive cannot be told from the original: stray bytes
    # are the byte-level damage below, which the archive's CRC-32 of each entry catches)
    kind = data.draw(st.sampled_from(["nan", "inf", "drop", "append", "reshape", "missing", "dtype"]), label="damage")
    if kind in ("nan", "inf"):
        if not arr.size:
            return out
        i = data.draw(st.integers(0, arr.size - 1), label="index")
        flat = arr.reshape(-1).astype(arr.dtype if arr.dtype.kind == "f" else np.float32)
        flat[i] = np.nan if kind == "nan" else data.draw(st.sampled_from([np.inf, -np.inf]), label="sign")
        arr = flat.reshape(arr.shape)
    elif kind == "drop":
        arr = arr.reshape(-1)[:-1] if arr.size else arr.reshape(-1)
    elif kind == "append":
        arr = np.concatenate([arr.reshape(-1), arr.reshape(-1)[:1] if arr.size else np.zeros(1, arr.dtype)])
    elif kind == "reshape":
        shapes = [(-1,), (1, -1), (-1, 1)] + ([(arr.shape[0], -1)] if arr.ndim > 2 else []) + ([()] if arr.size == 1 else [])
        arr = arr.reshape(data.draw(st.sampled_from(shapes), label="shape"))
    elif kind == "missing":
        del out[key]
        return out
    else:
        arr = arr.astype(data.draw(st.sampled_from(_DTYPES), label="dtype"))
    out[key] = arr
    return out


def _damage_bytes(raw: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "cut", "byte"]), label="damage")
    buf = bytearray(raw)
    if kind == "cut":
        return bytes(buf[: data.draw(st.integers(0, len(buf) - 1), label="length")])
    i = data.draw(st.integers(0, len(buf) - 1), label="offset")
    if kind == "flip":
        buf[i] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    else:
        buf[i] = data.draw(st.integers(0, 255), label="to")
    return bytes(buf)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(form=st.sampled_from(FORMS), in_bytes=st.booleans(), data=st.data())
def test_random_damage_is_refused_naming_the_file_or_loads_the_same_model(tmp_path_factory, form: str, in_bytes: bool, data) -> None:
    folder = tmp_path_factory.getbasetemp() / "damage-originals"
    folder.mkdir(exist_ok=True)
    raw, entries, model = _original(form, folder)
    path = tmp_path_factory.mktemp("damaged") / "model.lwz"
    if in_bytes:
        path.write_bytes(_damage_bytes(raw, data))
    else:
        _savez(path, _damage_entry(entries, data))  # a consistent archive saying something else
    try:
        handle = _load_torch(path)
    except LwdslError as exc:
        assert isinstance(exc, UsageError) and exc.exit_code == 2, f"{type(exc).__name__}: {exc.message}"
        assert str(path) in exc.message, exc.message
        return
    assert _model_of(handle) == model, "a damaged file loaded as another model"


def test_tf_backend_refuses_a_damaged_lwz_the_same_way(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from backends.tf_backend.io import LOAD
    from lwdsl.backend.load import read_checkpoint

    path = _save(tmp_path, "cluster", _set("fc.weight.codebook", 2, np.nan))
    with pytest.raises(UsageError, match=r"m\.lwz: tensor 'fc.weight.codebook' holds nan"):
        read_checkpoint(LOAD, path)
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 not a keras file")
    with pytest.raises(UsageError, match="bad.keras"):
        read_checkpoint(LOAD, tmp_path / "bad.keras")
    from backends.tf_backend.backend import KerasBackend
    from backends.torch_backend.backend import TorchBackend

    state = TorchBackend().state(TorchBackend().load_model("lenet300", (1, 8, 8), 3))  # the canonical state is the same
    save_weights(tmp_path / "ok.lwz", state)
    KerasBackend().load_model("lenet300", (1, 8, 8), 3, checkpoint=tmp_path / "ok.lwz")
    bias = next(k for k in state if k.endswith(".bias"))
    save_weights(tmp_path / "short.lwz", dict(state, **{bias: state[bias][:-1]}))
    with pytest.raises(UsageError, match=rf"checkpoint .*short\.lwz does not fit lenet300: tensor '{bias}' has shape"):
        KerasBackend().load_model("lenet300", (1, 8, 8), 3, checkpoint=tmp_path / "short.lwz")
