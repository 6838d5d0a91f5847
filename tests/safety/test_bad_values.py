"""Ordinary bad values end as a one-line usage error (exit 2) naming the value, never as an
"internal error", a traceback or a crash: seeds, threads, epochs, names, ``--set``, ``train
--out``, JSON plan versions. All are refused before any model is built."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lwdsl.cli.app import app
from lwdsl.data.builtin import is_path
from lwdsl.limits import MAX_SEED, MAX_THREADS

from ._util import TINY, assert_refused, cli_env, run_cli, snapshot


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "r.lw").write_text("prune l1 0.5\n")
    (tmp_path / "v99.json").write_text('{"version": 99, "steps": [{"op": "prune", "amount": 0.5}]}')
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / "foreign.lwz").write_text("not weights\n")
    (tmp_path / "adir").mkdir()
    return tmp_path


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    return result


_SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_SEED + 1)), command=st.sampled_from(["run", "train"]))
def test_seeds_out_of_range_are_usage_errors(work: Path, seed: int, command: str) -> None:
    args = ["run", "r.lw", *TINY] if command == "run" else ["train", "lenet300", "--data", "synthetic:1,8,8:3"]
    result = invoke(*args, "--seed", str(seed))
    assert result.exit_code == 2 and "--seed" in result.output


@_SETTINGS
@given(threads=st.one_of(st.integers(max_value=0), st.integers(min_value=MAX_THREADS + 1)))
def test_threads_out_of_range_are_usage_errors(work: Path, threads: int) -> None:
    result = invoke("run", "r.lw", *TINY, "--threads", str(threads))
    assert result.exit_code == 2 and "--threads" in result.output


@_SETTINGS
@given(name=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30))
def test_unknown_names_are_usage_errors_naming_them(work: Path, name: str) -> None:
    known = {"torch", "tensorflow", "pytorch", "tf", "keras", "mnist", "fashion_mnist", "fashion-mnist"}
    if name.strip().lower().replace("-", "_") in known or name.startswith("-") or name.lower().startswith("synthetic:"):
        return
    for args, shown in [
        (("check", "r.lw", "--backend", name), "unknown backend"),
        (("run", "r.lw", "--model", "lenet300", "--backend", name), "unknown backend"),
        (("run", "r.lw", "--model", "lenet300", "--data", name), "unknown data set"),
        (("train", "lenet300", "--data", name), "unknown data set"),
    ]:
        result = invoke(*args)
        if "--data" in args and is_path(name):  # read as a path to the user's data: what is wrong with it, named
            shown = "error: data "
        assert result.exit_code == 2 and shown in result.stderr, (args, result.output)


def test_other_bad_values_name_what_is_wrong(work: Path) -> None:
    before = snapshot(work, skip=(work / "cache",))
    for args, shown in [
        (("run", "r.lw", *TINY, "--set", "foo"), "--set 'foo': write NAME=VALUE"),
        (("check", "r.lw", "--set", "=3"), "write NAME=VALUE"),
        (("run", "r.lw", *TINY, "--set", "amount=0.3"), "--set amount: the recipe has no variable"),
        (("run", "r.lw", *TINY[:4], "--baseline-epochs", "0"), "--baseline-epochs"),
        (("run", "r.lw", *TINY, "--checkpoint", "missing.lwz"), "missing.lwz"),
        (("run", "r.lw", *TINY, "--checkpoint", "adir"), "adir"),
        (("run", "r.lw", "--model", "lenet300", "--data", "synthetic:100000,1000,1000:10"), "TiB of memory"),
        (("run", "r.lw", "--model", "lenet300", "--data", "synthetic:1,8:3"), "bad synthetic data name"),
        (("run", "v99.json", *TINY), "language version 99"),
        (("check", "v99.json"), "language version 99"),
        (("train", "lenet300", "--data", "synthetic:1,8,8:3", "--out", "adir"), "--out adir is a folder"),
        (("train", "lenet300", "--data", "synthetic:1,8,8:3", "--out", "notes.txt"), "must end with .lwz"),
        (("train", "lenet300", "--data", "synthetic:1,8,8:3", "--out", "foreign.lwz"), "not a weights file lwdsl wrote"),
        (("train", "lenet300", "--data", "synthetic:1,8,8:3", "--epochs", "0"), "--epochs"),
        (("explain", "r.lw", "--model", "lenet300", "--backend", "nope"), "unknown backend 'nope'"),
        (("explain", "r.lw", "--model", "lenet300", "--data", "synthetic:0,1,1:2"), "bad synthetic data name"),
    ]:
        result = invoke(*args)
        assert result.exit_code == 2 and shown in result.stderr, (args, result.output)
    assert snapshot(work, skip=(work / "cache",)) == before


def test_in_a_real_process_too(work: Path) -> None:
    assert_refused(run_cli(["run", "r.lw", *TINY, "--seed", "-1"], work, env=cli_env(work), timeout=30), "--seed")
    assert_refused(run_cli(["train", "lenet5", "--out", "adir"], work, env=cli_env(work), timeout=30), "--out adir is a folder")
