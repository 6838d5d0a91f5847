"""A run with ``prune auto`` and ``amount=auto`` on every backend: the report's sections and
plots (tiny: lenet300 on synthetic data, one-shot levels)."""

from __future__ import annotations

import json

import lwdsl


def test_report_shows_the_allocation_and_the_level_search(backend_name, tmp_path, monkeypatch):
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = lwdsl.run("prune auto 60% on linear | prune l1 amount=auto drop=5 epochs=0", "lenet300",
                       data="synthetic:1,28,28:10", backend=backend_name, baseline_epochs=1, out=out, latency=False,
                       quiet=True)
    steps = result.report["steps"]
    auto, level = steps[1]["auto_prune"], steps[2]["level_search"]
    assert auto["pruned"] == round(0.6 * auto["weights"])
    assert level["trajectory"][0]["level"] == 0.5 and level["epochs"] == 0
    md = (out / "report.md").read_text()
    assert "## Per-layer amounts: `prune auto 60% on linear`" in md and "## Level search:" in md
    assert "![level search](level-search.png)" in md or "level-search.png" not in result.report.get("files", [])
    saved = json.loads((out / "report.json").read_text())
    assert saved["steps"][2]["level_search"]["chosen"] == level["chosen"]
    if "level-search.png" in saved["files"]:
        assert (out / "prune-auto.png").exists() and (out / "level-search.png").exists()


def test_report_shows_the_filters_removed_for_macs(backend_name, tmp_path, monkeypatch):
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = lwdsl.run("prune auto 60% of=macs", "lenet5", data="synthetic:1,28,28:10", backend=backend_name,
                       baseline_epochs=1, out=out, latency=False, quiet=True)
    notes = result.report["steps"][1]["auto_channels"]
    assert notes["kept"] <= notes["target"] == int(0.4 * notes["baseline"])
    md = (out / "report.md").read_text()
    assert "## Filters removed for MACs: `prune auto 60% of=macs`" in md and "| conv2 |" in md
    assert "left whole: fc2" in md
