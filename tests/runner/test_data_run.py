"""``lwdsl run --data PATH`` end to end on a PNG class folder (torch), the preprocessing options
of the command line, and bad data: each refused with the place named, exit code 2, no
traceback, nothing written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lwdsl.cli.app import app
from tests.data_files import mnist_u8, write_images

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "r.lw").write_text("prune l1 50% | finetune epochs=1 | quantize int8\n")
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "100"})


def _refused(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    for word in words:
        assert word in result.output, result.output


@needs_torch
def test_a_png_folder_runs_prune_finetune_int8_on_torch_and_the_report_names_data_and_classes(work):
    xtr, ytr, xte, yte = mnist_u8(300, 100)
    write_images(work / "digits" / "train", xtr, ytr, names=NAMES)
    write_images(work / "digits" / "test", xte, yte, names=NAMES)
    result = invoke("run", "r.lw", "--model", "lenet5", "--data", "digits", "--mean", "0.1307", "--std", "0.3081",
                    "--baseline-epochs", "1", "--out", "out", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((work / "out" / "report.json").read_text())
    assert report["data"] == "digits?mean=0.1307&std=0.3081"
    src = report["data_source"]
    assert src["source"] == "folder" and src["classes"] == sorted(NAMES) and src["train_images"] == 300 and src["test_images"] == 100
    assert src["streamed"] and src["preprocess"]["mean"] == [0.1307]
    assert [s["op"] for s in report["steps"]] == ["baseline", "prune", "finetune", "quantize"]
    assert report["summary"]["accuracy_after"] > 0.3  # 300 digits, 2 short epochs: far above chance (0.1)
    md = (work / "out" / "report.md").read_text()
    assert "Data: folder `digits`" in md and "Classes (10): eight, five, four, nine, one" in md
    lock = json.loads((work / "out" / "lwdsl.lock.json").read_text())
    assert lock["data"] == "digits?mean=0.1307&std=0.3081" and len(lock["data_sha256"]) == 64


@pytest.fixture
def digits():
    return mnist_u8(40, 10)


@needs_torch
@pytest.mark.parametrize("make, words", [
    ("empty class", ("class folder", "zebra", "holds no image")),
    ("one class", ("one class folder", "at least two")),
    ("truncated", ("0003.png", "truncated")),
    ("npz keys", ("bad.npz", "has no x_test, y_test")),
    ("npz label", ("y_train[0] is 5", "labels are 0 to 1")),
    ("npz ambiguous", ("ambiguous", "layout=nchw or layout=nhwc")),
    ("bad option", ("data option resize=big",)),
    ("option on a name", ("--resize apply to data read from a path",)),
])
def test_bad_data_exits_2_with_the_place_named(work, digits, make, words):
    xtr, ytr, xte, yte = digits
    data, extra = "d", []
    if make == "empty class":
        write_images(work / "d", xtr, ytr)
        (work / "d" / "zebra").mkdir()
    elif make == "one class":
        write_images(work / "d", xtr, np.zeros_like(ytr))
    elif make == "truncated":
        paths = write_images(work / "d", xtr, ytr)
        paths[3].write_bytes(paths[3].read_bytes()[:-20])
    elif make.startswith("npz"):
        data = "bad.npz"
        arrays = dict(x_train=xtr, y_train=ytr)
        if make == "npz label":
            arrays.update(x_test=xte, y_test=yte, classes=np.array(["a", "b"]))
        if make == "npz ambiguous":
            arrays = dict(x_train=np.zeros((4, 3, 6, 3), np.uint8), y_train=[0, 1, 0, 1], x_test=np.zeros((2, 3, 6, 3), np.uint8), y_test=[0, 1])
        np.savez(work / "bad.npz", **arrays)
    elif make == "bad option":
        write_images(work / "d", xtr, ytr)
        extra = ["--resize", "big"]
    else:
        data, extra = "synthetic:1,28,28:10", ["--resize", "14"]
    result = invoke("run", "r.lw", "--model", "lenet5", "--data", data, *extra, "--out", "out")
    _refused(result, *words)
    assert not (work / "out").exists()


@needs_torch
def test_pixels_damaged_inside_a_file_stop_the_run_when_decoded_with_exit_2(work, digits):
    xtr, ytr, _, _ = digits
    paths = write_images(work / "d", xtr, ytr)
    raw = bytearray(paths[6].read_bytes())
    at = raw.index(b"IDAT") + 12
    raw[at : at + 40] = bytes(40)
    paths[6].write_bytes(bytes(raw))
    result = invoke("run", "r.lw", "--model", "lenet300", "--data", "d", "--baseline-epochs", "1", "--out", "out", "-q")
    _refused(result, str(Path("d") / paths[6].relative_to(work / "d")), "cannot be decoded")
    assert not (work / "out").exists()


def test_command_line_options_join_the_data_reference():
    from lwdsl.cli.args import with_data_options

    assert with_data_options("photos", {"resize": "256", "crop": "224", "mean": None}) == "photos?resize=256&crop=224"
    assert with_data_options("photos?crop=200&split=0.1", {"crop": "224"}) == "photos?crop=224&split=0.1"
    assert with_data_options("mnist", {}) == "mnist"


@needs_torch
def test_a_transfer_set_and_calibration_read_from_folders(work):
    """``distill data="PATH"`` trains on another folder's images (streamed like the run's), and
    static int8 calibrates on the run's folder, batch by batch."""
    from lwdsl.runner.pipeline import run

    xtr, ytr, xte, yte = mnist_u8(120, 40)
    write_images(work / "run" / "train", xtr[:60], ytr[:60])
    write_images(work / "run" / "test", xte, yte)
    write_images(work / "unlabelled", xtr[60:], ytr[60:])
    from lwdsl.data.builtin import load_data

    recipe = 'distill data="unlabelled" alpha=1 epochs=1 | quantize int8 mode=static calibrate=32\n'
    result = run(recipe, "lenet300", backend="torch", data="run", quiet=True, latency=False, baseline_epochs=1)
    distill, quant = result.report["steps"][1], result.report["steps"][2]
    assert distill["transfer_set"] == {"data": "unlabelled", "images": len(load_data("unlabelled").train_x),
                                       "sha256": load_data("unlabelled").sha256}
    assert quant["op"] == "quantize" and result.report["data_source"]["train_images"] == 60
