"""What a run says: ``--quiet`` still prints the one final line (or the error, with where a
failed run's report went); ``--verbose`` adds the model, the data and where it came from, each
step's resolved arguments and layers, a line for every loop and the time of each phase; the
baseline, which trains for minutes, says after each epoch how long it took and about how long
the rest will take. All in a non-terminal (CliRunner), as in CI logs."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from lwdsl.backend import registry as backend_mod
from lwdsl.cli.app import app
from lwdsl.runner.pipeline import run

from .fake_backend import FakeBackend

DATA = "synthetic:1,6,6:3"


class EpochBackend(FakeBackend):
    """Trains as a real backend reports it: one progress bar per epoch."""

    def train(self, model: Any, options: Any, ctx: Any) -> Any:
        for epoch in range(options.epochs):
            bar = ctx.progress(4, f"train epoch {epoch + 1}/{options.epochs}")
            bar.update(4)
            bar.close()
        return super().train(model, options, ctx)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    be = EpochBackend()
    monkeypatch.setitem(backend_mod._instances, "fake", be)
    monkeypatch.setitem(backend_mod.BACKENDS, "fake", ("tests.runner.fake_backend", "FakeBackend", "fake"))
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.lw").write_text("prune l1 0.5 | finetune epochs=1\n")
    return be


ARGS = ["run", "r.lw", "--backend", "fake", "--model", "linear2", "--data", DATA, "--out", "out"]


def test_quiet_prints_only_the_final_line_with_where_the_run_went(fake, tmp_path):
    result = CliRunner().invoke(app, [*ARGS, "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("accuracy ") and f"report in {tmp_path / 'out'}/report.md" in lines[0]


def test_quiet_failed_run_still_says_where_its_report_went(fake, tmp_path):
    fake.fail_on = "finetune"
    result = CliRunner().invoke(app, [*ARGS, "-q"])
    assert result.exit_code == 1
    assert "error: finetune failed on purpose" in result.stderr
    assert f"its report so far and the last good model are in {tmp_path / 'out.failed'}" in result.stderr
    assert result.stdout == ""


def test_verbose_says_the_model_data_resolved_arguments_layers_and_phase_times(fake, tmp_path):
    result = CliRunner().invoke(app, [*ARGS, "--verbose"])
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "model: linear2 (fake backend, cpu), " in err and " parameters in 2 layers, built in " in err
    assert "data: synthetic:1,6,6:3: " in err and " test images of 1x6x6, 3 classes, sha256 " in err and "; read in " in err
    assert "step 1/2 `prune l1 0.5`: prune scope=layer method=l1 amount=0.5 of=weights structured=none" in err
    assert "schedule=oneshot; on 2 layers: fc1, fc2" in err and "epochs=" not in err.split("step 1/2")[1].splitlines()[0]
    assert "step 2/2 `finetune epochs=1`: finetune epochs=1 lr=0.01 optimizer=sgd momentum=0.9" in err
    assert "step 1/2 `prune l1 0.5`: applied in " in err and ", measured in " in err
    assert "baseline: train epoch 1/3: 4 steps in 0.0" in err  # a short loop says its line only with --verbose
    time_line = err.strip().splitlines()[-1]
    assert time_line.startswith("time: ") and " s in all: prepare " in time_line
    assert all(f"{phase} " in time_line for phase in ("baseline", "measuring", "steps", "write"))
    assert result.stdout.splitlines()[-1].startswith("accuracy ")  # the table and the final line, as always

    plain = CliRunner().invoke(app, [*ARGS[:-1], "out2"])
    assert plain.exit_code == 0, plain.output
    assert plain.stderr.count("\n") < err.count("\n")
    assert not any(line.startswith(("model: ", "data: ", "step 1/2", "time: ", "baseline: train epoch")) for line in plain.stderr.splitlines())


def test_quiet_and_verbose_together_are_refused(fake):
    result = CliRunner().invoke(app, [*ARGS, "-q", "-v"])
    assert result.exit_code == 2 and "--quiet and --verbose together" in result.stderr
    assert not fake.calls


def test_the_baseline_says_each_epoch_and_the_time_left(fake, tmp_path):
    said: list[str] = []
    run("prune l1 0.5", "linear2", backend="fake", data=DATA, out=None, baseline_epochs=3, echo=said.append)
    epochs = [line for line in said if line.startswith("baseline: ") and "epoch" in line]
    assert epochs[0].startswith("baseline: training linear2") and "3 epoch(s)" in epochs[0]
    assert epochs[1].startswith("baseline: epoch 1/3 done, ") and epochs[1].endswith(" s left")
    assert epochs[2].startswith("baseline: epoch 2/3 done, ")
    assert epochs[3].startswith("baseline: 3 epoch(s) trained in ")
    quiet: list[str] = []
    run("prune l1 0.5", "linear2", backend="fake", data=DATA, out=None, baseline_epochs=2, quiet=True, echo=quiet.append)
    assert quiet == []


def test_the_final_table_fits_80_columns_with_one_line_per_step(monkeypatch, capsys):
    from lwdsl.runner.report import print_table

    long = "finetune epochs=2 lr=0.01 schedule=cosine optimizer=sgd momentum=0.9 on conv, linear except \"fc*\""
    steps = [{"op": op, "text": text, "metrics": {"accuracy": 0.9876, "nonzero_params": 431_080 // (i + 1), "params": 431_080,
                                                  "size_bytes": 1_724_320, "size_gzip_bytes": 1_600_000 // (i + 1),
                                                  "latency_ms_b1": 0.123, "latency_ms_b64": 4.5, "seconds": 12.3}}
             for i, (op, text) in enumerate([("baseline", "baseline"), ("prune", "prune global l1 0.9"), ("finetune", long),
                                              ("quantize", "quantize int8 calibrate=1000 observer=percentile")])]
    monkeypatch.setenv("COLUMNS", "80")
    print_table({"model": "lenet5", "data": "mnist", "backend": "torch", "steps": steps})
    lines = capsys.readouterr().out.splitlines()
    assert lines and max(len(line) for line in lines) <= 80
    rows = [line for line in lines if line.startswith("│")]
    assert [row.split("│")[2].strip() for row in rows] == ["baseline", "prune", "finetune", "quantize"]  # one line each
    legend = "\n".join(lines[lines.index(next(l for l in lines if l.startswith("└"))) + 1:])
    assert "1 prune global l1 0.9" in legend and 'except "fc*"' in legend and "quantize int8 calibrate=1000" in legend


def test_train_takes_verbose_too(fake):
    args = ["train", "linear2", "--backend", "fake", "--data", DATA, "--epochs", "1"]
    loud = CliRunner().invoke(app, [*args, "--verbose"])
    assert loud.exit_code == 0, loud.output
    assert "model: linear2 (fake backend, cpu), " in loud.stderr and "data: synthetic:1,6,6:3: " in loud.stderr
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert "model: linear2 (fake backend" not in plain.stderr
    both = CliRunner().invoke(app, [*args, "-q", "-v"])
    assert both.exit_code == 2 and "--quiet and --verbose together" in both.stderr


def test_verbose_describes_token_sequences():
    """A language model's data (``task`` lm: token ids) has sequences and a vocabulary, no images:
    ``--verbose`` says so instead of failing on the missing image shape."""
    import numpy as np

    from lwdsl.data.dataset import Dataset
    from lwdsl.runner.verbose import data_line

    x = np.zeros((5, 16), np.int64)
    line = data_line(Dataset("pydoc", x[:3], x[:3], x[3:], x[3:], 2048, task="lm"), 0.5)
    assert line.startswith("data: pydoc: 3 train and 2 test sequences of 16 tokens, a vocabulary of 2,048")
    assert line.endswith("; read in 0.50 s")
