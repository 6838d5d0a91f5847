"""The run report (JSON, Markdown, PNG plots, terminal table) and the run folder.

``report.json`` holds ``steps[]``; the first is the baseline (op ``baseline``); each has ``op``,
``text`` (the step in canonical form) and ``metrics`` with ``accuracy``, ``loss``, ``params``,
``nonzero_params``, ``size_bytes`` and ``size_gzip_bytes`` (of the compact ``.lwz`` weights),
``latency_ms_b1``, ``latency_ms_b64``, ``seconds`` and ``layers[]`` (``name``, ``kind``,
``weights``, ``sparsity`` achieved, ``requested``). The ``summary``'s ``speedup_b1``/``_b64`` (the
last step against the baseline) come with ``int8_speedup_b1``/``_b32`` and ``int8_runtime`` after
an int8 quantize step: its file against the same model as a float32 file in the same runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from ..backend import Backend
from ..data.dataset import Dataset
from ..language.plan import Recipe
from ..semantics.forms import TRIAL_FORMS
from .report_prune import prune_markdown, prune_plots

__all__ = ["build_report", "staging_dir", "write_run_dir", "report_markdown", "print_table"]


def build_report(plan: Recipe, be: Backend, model_ref: Any, data: Dataset, seed: int, steps: list) -> dict[str, Any]:
    base, final = steps[0]["metrics"], steps[-1]["metrics"]
    summary = {
        "accuracy_before": base["accuracy"],
        "accuracy_after": final["accuracy"],
        "accuracy_change_points": round(100 * (final["accuracy"] - base["accuracy"]), 3),
        "nonzero_compression": round(base["nonzero_params"] / max(final["nonzero_params"], 1), 3),
        "size_ratio": round(base["size_bytes"] / max(final["size_bytes"], 1), 3),
        "size_gzip_ratio": round(base["size_gzip_bytes"] / max(final["size_gzip_bytes"], 1), 3),
    }
    if "perplexity" in base and "perplexity" in final:  # a language model (task lm)
        summary["perplexity_before"], summary["perplexity_after"] = base["perplexity"], final["perplexity"]
    if base.get("latency_ms_b1") and final.get("latency_ms_b1"):
        summary["speedup_b1"] = round(base["latency_ms_b1"] / final["latency_ms_b1"], 3)
        summary["speedup_b64"] = round(base["latency_ms_b64"] / final["latency_ms_b64"], 3)
        gain = _last_int8_gain(steps)  # beside it, what int8 itself bought in the same runtime
        if gain is not None:
            summary.update(int8_runtime=gain["runtime"], int8_speedup_b1=gain["int8_speedup_b1"],
                           int8_speedup_b32=gain["int8_speedup_b32"])
    return {
        "recipe": plan.name,
        "backend": be.name,
        "model": model_ref if isinstance(model_ref, str) else type(model_ref).__name__,
        "data": data.name,
        "data_source": data.describe(),
        "seed": seed,
        "summary": summary,
        "steps": steps,
    }


def _fmt_bytes(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):,.2f} MiB"


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the step table, per-layer sparsity, summary, model changes,
    measured artifacts, each ``quantize auto`` choice (with its plot when the run folder has
    one, ``report["files"]``) and warnings."""
    lines = [
        f"# lwdsl run: {report.get('recipe') or 'recipe'}",
        "",
        f"Backend `{report['backend']}`, model `{report['model']}`, data `{report['data']}`, seed {report['seed']}"
        + (f"; {report['threads']['training']} training thread(s), {report['threads']['latency']} for latency." if report.get("threads") else "."),
        *([f"Device `{report['device']['device']}` ({report['device'].get('model', '?')}); training precision "
           f"{report['device'].get('precision', 'fp32')}"
           + (f"; bf16 on this CPU: {report['device']['bf16_cpu']}" if report["device"].get("bf16_cpu") else "")
           + "; evaluation in float32."] if report.get("device") else []),
        *_data_markdown(report),
        *(["", "Accuracy is next-token accuracy and loss the mean token cross-entropy; perplexity = exp(loss)."]
          if "perplexity" in report["steps"][0]["metrics"] else []),
        "",
        "| step | accuracy | loss | params | non-zero | size | gzip | latency b1 (ms) | latency b64 (ms) | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["steps"]:
        m = s["metrics"]
        lat1 = f"{m['latency_ms_b1']:.3f}" if m.get("latency_ms_b1") is not None else "-"
        lat64 = f"{m['latency_ms_b64']:.3f}" if m.get("latency_ms_b64") is not None else "-"
        lines.append(
            f"| `{s['text']}` | {100 * m['accuracy']:.2f}% | {m['loss']:.4f} | {m['params']:,} | {m['nonzero_params']:,} "
            f"| {_fmt_bytes(m['size_bytes'])} | {_fmt_bytes(m['size_gzip_bytes'])} | {lat1} | {lat64} | {m['seconds']:.1f} |"
        )
    lines += ["", "## Per-layer sparsity after the last step", "", "| layer | kind | weights | requested | achieved |", "|---|---|---:|---:|---:|"]
    for layer in report["steps"][-1]["metrics"]["layers"]:
        req = "-" if layer["requested"] is None else f"{100 * layer['requested']:.1f}%"
        lines.append(f"| {layer['name']} | {layer['kind']} | {layer['weights']:,} | {req} | {100 * layer['sparsity']:.1f}% |")
    s = report["summary"]
    lines += [
        "",
        "## Summary",
        "",
        *([f"- perplexity {s['perplexity_before']:.2f} -> {s['perplexity_after']:.2f}"] if "perplexity_before" in s else []),
        f"- accuracy {100 * s['accuracy_before']:.2f}% -> {100 * s['accuracy_after']:.2f}% ({s['accuracy_change_points']:+.2f} points)",
        f"- non-zero weights {s['nonzero_compression']:.2f}x fewer; file {s['size_ratio']:.2f}x smaller ({s['size_gzip_ratio']:.2f}x gzip)",
    ]
    if "speedup_b1" in s:
        lines.append(f"- latency {s['speedup_b1']:.2f}x at batch 1, {s['speedup_b64']:.2f}x at batch 64")
        lines += _int8_gain(report)
    lines += _model_changes(report)
    lines += _smoothquant_markdown(report)
    lines += _artifacts_markdown(report)
    lines += _int8_markdown(report)
    lines += _auto_bits_markdown(report, report.get("files", []))
    lines += prune_markdown(report, report.get("files", []))
    warned = [(step["text"], w) for step in report["steps"] for w in step.get("warnings", ())]
    if warned:
        lines += ["", "## Warnings", ""] + [f"- {text}: {w}" for text, w in warned]
    return "\n".join(lines) + "\n"


def _data_markdown(report: dict[str, Any]) -> list[str]:
    """What the data is: its source, layout or split, classes, sizes and preprocessing."""
    d = report.get("data_source")
    if not d:
        return []
    if "sequence_length" in d and "classes" in d:  # labelled token sequences (lwdsl.data.pycode)
        tok = d.get("tokenizer", {})
        return ["", f"Data: {d.get('source', 'text')} ({d.get('task', 'classification')}; {tok.get('kind', 'tokenizer')}, "
                f"vocabulary {tok.get('vocab')}, sha256 {str(tok.get('sha256', ''))[:12]}); {d['train_sequences']:,} training "
                f"and {d['test_sequences']:,} test sequences of {d['sequence_length']} tokens ({d.get('split', '')}; "
                f"{d.get('balance', '')}).", "", f"Classes ({len(d['classes'])}): {', '.join(d['classes'])}."]
    if "sequence_length" in d:  # token sequences (lwdsl.data.text)
        tok = d.get("tokenizer", {})
        return ["", f"Data: {d.get('source', 'text')}, {d.get('characters', 0):,} characters, {d.get('tokens', 0):,} tokens "
                f"({tok.get('kind', 'tokenizer')}, vocabulary {tok.get('vocab', d.get('vocabulary'))}, sha256 "
                f"{str(tok.get('sha256', ''))[:12]}); {d['train_sequences']:,} training and {d['test_sequences']:,} test "
                f"sequences of {d['sequence_length']} tokens ({d.get('split', '')}); perplexity over {d['test_tokens']:,} "
                "test tokens."]
    classes = d.get("classes", [])
    shown = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
    lines = ["", f"Data: {d.get('source', 'arrays')}" + (f" `{d['path']}`" if d.get("path") else "")
             + (f", {d['layout']}" if d.get("layout") else "") + "; "
             + f"{d['train_images']:,} training and {d['test_images']:,} test images of {'x'.join(map(str, d['image_shape']))} (C x H x W)"
             + ("; decoded as batches need them" if d.get("streamed") else "") + ".",
             "", f"Classes ({len(classes)}): {shown}."]
    p = d.get("preprocess")
    if p:
        steps = [f"resize {p['resize']}" if p.get("resize") else "", f"centre crop {p['crop']}" if p.get("crop") else "",
                 f"mean {', '.join(f'{v:g}' for v in p.get('mean', []))}", f"std {', '.join(f'{v:g}' for v in p.get('std', []))}",
                 f"{p['channels']} channel(s)" if p.get("channels") else ""]
        lines += ["", "Preprocessing: " + "; ".join(x for x in steps if x) + "."]
    return lines


def _model_changes(report: dict[str, Any]) -> list[str]:
    """The "Model replaced" section: each step whose handler put a new model in place of the
    current one (``distill student=``, noted as ``student`` in the step's row)."""
    rows = []
    for i, step in enumerate(report["steps"]):
        new = step.get("student")
        if not new:
            continue
        before, after = report["steps"][i - 1]["metrics"], step["metrics"]
        rows.append(
            f"- `{step['text']}`: `{new['replaces']}` ({new['params_before']:,} params) replaced by the student "
            f"`{new['name']}` ({new['params_after']:,} params, {new['params_before'] / max(new['params_after'], 1):.2f}x fewer); "
            f"accuracy {100 * before['accuracy']:.2f}% -> {100 * after['accuracy']:.2f}%; later steps apply to the student"
        )
    return ["", "## Model replaced", "", *rows] if rows else []


def _smoothquant_markdown(report: dict[str, Any]) -> list[str]:
    """The "Language model int8" section: each ``smoothquant`` step's pairs and activation maxima,
    and each W8A8 ``quantize int8`` of a language model (simulated in the model; its int8 ONNX
    file, where the backend writes one, with its perplexity and latency beside ONNX Runtime's fp32)."""
    rows = []
    for step in report["steps"]:
        sq = step.get("smoothquant")
        if sq:
            pairs = sq["pairs"].values()
            rows.append(f"- `{step['text']}`: {len(sq['pairs'])} norm -> linear pairs smoothed on {sq['examples']} examples "
                        f"(alpha {sq['alpha']}); largest activation channel max {max(p['act_absmax'] for p in pairs):.4g} -> "
                        f"{max(p['act_absmax_after'] for p in pairs):.4g}, scales {min(p['scale_min'] for p in pairs):.4g} to "
                        f"{max(p['scale_max'] for p in pairs):.4g}")
        if step.get("w8a8"):
            rows.append(f"- `{step['text']}`: W8A8 {step['w8a8']}")
            a = step.get("int8_artifact") or {}
            if "perplexity" in a and "int8_speedup_b1" in a:
                rows.append(f"- `{step['text']}`: int8 file {a.get('file') or '(no run folder)'} in {a['runtime']}: perplexity "
                            f"{a['perplexity']:.3f}; {a['latency_ms_b1']:.3f} / {a['latency_ms_b32']:.3f} ms at batch 1 / 32 "
                            f"against {a['fp32_latency_ms_b1']:.3f} / {a['fp32_latency_ms_b32']:.3f} ms for the float32 "
                            f"ONNX file ({a['int8_speedup_b1']:.2f}x / {a['int8_speedup_b32']:.2f}x, 1 thread)")
    return ["", "## Language model int8", "", *rows] if rows else []


def _quality(a: dict[str, Any]) -> str:
    """A file's accuracy cell: top-1, or for a language model perplexity and next-token accuracy."""
    acc = "-" if a.get("accuracy") is None else f"{100 * a['accuracy']:.2f}%"
    return f"perplexity {a['perplexity']:.3f} ({acc} next-token)" if "perplexity" in a else acc


def _int8_files(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(step text, its ``int8_artifact`` note) of every quantize step that measured an int8 file."""
    return [(s["text"], s["int8_artifact"]) for s in report["steps"] if "latency_ms_b1" in s.get("int8_artifact", {})]


def _last_int8_gain(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``int8_artifact`` of the last step that measured its int8 file beside the runtime's fp32."""
    found = [s["int8_artifact"] for s in steps if "int8_speedup_b1" in s.get("int8_artifact", {})]
    return found[-1] if found else None


def _int8_gain(report: dict[str, Any]) -> list[str]:
    """The summary's line on what int8 itself bought: the last int8 file against the same model
    as a float32 file in the same runtime (the speed-up over the baseline also counts the runtime)."""
    found = [(t, a) for t, a in _int8_files(report) if "int8_speedup_b1" in a]
    if not found:
        return []
    text, a = found[-1]
    slower = min(a["int8_speedup_b1"], a["int8_speedup_b32"]) < 1
    return [f"- int8 itself: {a['int8_speedup_b1']:.2f}x at batch 1, {a['int8_speedup_b32']:.2f}x at batch 32 over the same "
            f"model as a float32 file in {a['runtime']} (`{text}`, 1 thread); the rest of the speed-up over the baseline is "
            "the runtime's" + ("; below 1x, int8 is slower than float32 there" if slower else "")]


def _int8_markdown(report: dict[str, Any]) -> list[str]:
    """The int8 file each quantize step wrote (``int8_artifact``), measured in its runtime beside
    the same model as a float32 file in that runtime: what int8 itself bought."""
    found = _int8_files(report)
    if not found:
        return []
    lines = [
        "",
        "## Int8 files (written by quantize, measured in their runtime, 1 thread)",
        "",
        "fp32: the same model as a float32 file in the same runtime; gain: fp32 / int8, what int8 itself bought. The "
        "step table's latency columns time the same file (batch 1 and 64, the run's latency threads).",
        "",
        "| step | file | runtime | accuracy | int8 b1 (ms) | fp32 b1 (ms) | int8 b32 (ms) | fp32 b32 (ms) | gain b1 / b32 "
        "| weighted ops int8 / float | codes equal to lwdsl's |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ms = lambda a, k: "-" if a.get(k) is None else f"{a[k]:.3f}"  # noqa: E731
    for text, a in found:
        acc = _quality(a)
        gain = f"{a['int8_speedup_b1']:.2f}x / {a['int8_speedup_b32']:.2f}x" if "int8_speedup_b1" in a else "-"
        codes = f"{a['codes_equal']:,} / {a['codes_total']:,}" if "codes_total" in a else "-"
        lines.append(f"| `{text}` | {a.get('file') or '(not written: no run folder)'} | {a.get('runtime', '-')} | {acc} "
                     f"| {ms(a, 'latency_ms_b1')} | {ms(a, 'fp32_latency_ms_b1')} | {ms(a, 'latency_ms_b32')} "
                     f"| {ms(a, 'fp32_latency_ms_b32')} | {gain} | {a.get('int8_ops', 0)} / {a.get('float_ops', 0)} | {codes} |")
    floats = [(text, a) for text, a in found if a.get("runs_float")]
    if floats:
        lines.append("")
    for text, a in floats:
        if a.get("runs_float"):
            lines.append(f"- `{text}` runs in float: " + "; ".join(f"{k} ({v})" for k, v in a["runs_float"].items()))
    return lines


def _artifacts_markdown(report: dict[str, Any]) -> list[str]:
    """Each exported artifact as its own runtime measured it (the ``artifacts`` notes of export
    steps): size, accuracy, latency, how many weighted ops run in int8 and in float, how many
    weight codes equal the canonical ones, and every op with its dtypes."""
    found = [(s["text"], a["path"], a) for s in report["steps"] for a in s.get("artifacts", ()) if "size_bytes" in a]
    fallbacks = [(s["text"], a) for s in report["steps"] for a in s.get("artifacts", ()) if a.get("written") is False]
    if not found:
        return ["", "## Artifacts", "", *_fallbacks_markdown(fallbacks)] if fallbacks else []
    lines = [
        "",
        "## Artifacts (measured in their own runtime, 1 thread)",
        "",
        "| step | file | runtime | size | accuracy | latency b1 (ms) | latency b32 (ms) | weighted ops int8 / float | codes equal to lwdsl's |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    ms = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for text, name, a in found:
        acc = _quality(a)
        codes = f"{a['codes_equal']:,} / {a['codes_total']:,}" if "codes_total" in a else "-"
        lines.append(
            f"| `{text}` | {name} | {a.get('runtime', '-')} | {_fmt_bytes(a['size_bytes'])} | {acc} | {ms(a.get('latency_ms_b1'))} "
            f"| {ms(a.get('latency_ms_b32'))} | {a.get('int8_ops', 0)} / {a.get('float_ops', 0)} | {codes} |"
        )
    lines.append("")
    for _, name, a in found:
        ops = ", ".join(f"{op} x{n}" for op, n in a.get("ops", {}).items())
        lines.append(f"- `{name}` ops: {ops or '-'}")
        if a.get("float_layers"):
            lines.append(f"- `{name}` layers left float32: {', '.join(a['float_layers'])}")
        if "int8_speedup_b1" in a:
            lines.append(f"- `{name}` int8 itself: {a['int8_speedup_b1']:.2f}x at batch 1, {a['int8_speedup_b32']:.2f}x at batch 32 "
                         f"over the same model as a float32 file in {a.get('runtime', 'its runtime')} "
                         f"({ms(a.get('fp32_latency_ms_b1'))} / {ms(a.get('fp32_latency_ms_b32'))} ms)")
        if a.get("weights_dtype"):
            lines.append(f"- `{name}` weights stored as {a['weights_dtype']}; the runtime's CPU kernels compute in float32 "
                         "(the gain is size, not speed)")
        if "onnx_latency_ms_b1" in a:
            lines.append(f"- `{name}` against the int8 ONNX file of the same model in onnxruntime: "
                         + ", ".join(f"batch {b}: {ms(a.get(f'latency_ms_b{b}'))} vs {ms(a.get(f'onnx_latency_ms_b{b}'))} ms, "
                                     f"{'this file' if a.get(f'faster_b{b}') == a.get('format') else 'the ONNX file'} is faster"
                                     for b in (1, 32)))
    return lines + _fallbacks_markdown(fallbacks)


def _fallbacks_markdown(fallbacks: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Each export that wrote no file (its engine cannot run this model here), with why."""
    return [f"- `{text}` wrote no file: {a['fallback']}" for text, a in fallbacks]


def _auto_steps(report: dict[str, Any]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(step index, step, its ``auto_bits`` notes) of every ``quantize auto`` step."""
    return [(i, s, s["auto_bits"]) for i, s in enumerate(report["steps"]) if isinstance(s.get("auto_bits"), dict)]


def _sens(v: float, digits: int = 4) -> str:
    return "0" if v == 0 else f"{v:.{digits}g}"


def _auto_bits_markdown(report: dict[str, Any], plots: list[str]) -> list[str]:
    """The "Bits per layer" section: each ``quantize auto`` step's choice (form, bits, weights)
    and the sensitivity it was chosen from, with the plot when there is one."""
    lines: list[str] = []
    for i, step, notes in _auto_steps(report):
        measure = notes.get("sensitivity", "weight_error")
        how = (f"KL divergence of the outputs on {notes.get('calibration_images', 0)} calibration images, one layer at a time "
               "quantized" if measure == "kl" else "squared weight error (no training images)")
        forms = [f for f in TRIAL_FORMS if any(f in r.get("sensitivity", {}) for r in notes["layers"])]
        lines += [
            "",
            f"## Bits per layer: `{step['text']}`",
            "",
            f"Budget {notes['budget']:g} bits per weight, reached {notes['average_bits']:.3f}; sensitivity: {how}.",
            "",
            "| layer | weights | form | bits | " + " | ".join(f"sensitivity {f}" for f in forms) + " |",
            "|---|---:|---|---:|" + "---:|" * len(forms),
        ]
        for r in notes["layers"]:
            sens = r.get("sensitivity", {})
            cells = " | ".join(_sens(sens[f]) if f in sens else "-" for f in forms)
            lines.append(f"| {r['layer']} | {r['weights']:,} | {r['form']} | {r['bits']} | {cells} |")
        name = _bits_plot_name(i, len(_auto_steps(report)))
        if name in plots:
            lines += ["", f"![bits per layer]({name})"]
    return lines


def _bits_plot_name(index: int, count: int) -> str:
    return "bits.png" if count == 1 else f"bits-step{index}.png"


def print_table(report: dict[str, Any]) -> None:
    """The report as a rich table on the terminal. Narrower than 110 columns (an 80-column
    terminal, a CI log): one line per step, the step numbered and named by its op, the full step
    texts listed under the table, sizes after gzip only, latency at batch 1 only."""
    import textwrap

    from rich.console import Console
    from rich.table import Table

    console = Console()
    if console.width < 110:
        m0 = report["steps"][0]["metrics"]
        table = Table(title=f"{report['model']} on {report['data']} ({report['backend']}), {m0['params']:,} params")
        for col in ("#", "step", "accuracy", "non-zero", "gzip", "b1 ms", "s"):
            table.add_column(col, justify="left" if col == "step" else "right", no_wrap=True)
        for i, s in enumerate(report["steps"]):
            m = s["metrics"]
            table.add_row(str(i), s["op"], f"{100 * m['accuracy']:.2f}%", f"{m['nonzero_params']:,}", _fmt_bytes(m["size_gzip_bytes"]),
                          "-" if m.get("latency_ms_b1") is None else f"{m['latency_ms_b1']:.3f}", f"{m['seconds']:.1f}")
        console.print(table)
        for i, s in enumerate(report["steps"][1:], 1):
            console.print(textwrap.fill(s["text"], width=max(40, console.width - 1), initial_indent=f"{i:>3} ",
                                        subsequent_indent="    "), highlight=False, markup=False)
        _print_auto(report, console)
        return
    table = Table(title=f"{report['model']} on {report['data']} ({report['backend']})")
    for col in ("step", "accuracy", "non-zero / params", "size (gzip)", "lat b1 ms", "lat b64 ms", "s"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for s in report["steps"]:
        m = s["metrics"]
        table.add_row(
            s["text"],
            f"{100 * m['accuracy']:.2f}%",
            f"{m['nonzero_params']:,} / {m['params']:,}",
            f"{_fmt_bytes(m['size_bytes'])} ({_fmt_bytes(m['size_gzip_bytes'])})",
            "-" if m.get("latency_ms_b1") is None else f"{m['latency_ms_b1']:.3f}",
            "-" if m.get("latency_ms_b64") is None else f"{m['latency_ms_b64']:.3f}",
            f"{m['seconds']:.1f}",
        )
    console.print(table)
    _print_auto(report, console)


def _print_auto(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    for _, step, notes in _auto_steps(report):
        auto = Table(title=f"{step['text']}: {notes['average_bits']:.3f} bits per weight on average "
                           f"(sensitivity: {notes.get('sensitivity', 'weight_error')})")
        for col in ("layer", "weights", "form", "bits") + TRIAL_FORMS:
            auto.add_column(col, justify="left" if col in ("layer", "form") else "right")
        for r in notes["layers"]:
            sens = r.get("sensitivity", {})
            auto.add_row(r["layer"], f"{r['weights']:,}", r["form"], str(r["bits"]),
                         *(_sens(sens[f], 2) if f in sens else "-" for f in TRIAL_FORMS))
        console.print(auto)


def _plots(report: dict[str, Any], folder: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional: matplotlib comes with the framework extras
        return []
    steps = report["steps"]
    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = [s["metrics"]["size_gzip_bytes"] / 1024 for s in steps]
    accs = [100 * s["metrics"]["accuracy"] for s in steps]
    ax.plot(sizes, accs, "o-")
    for i, s in enumerate(steps):
        ax.annotate(f"{i}: {s['op']}", (sizes[i], accs[i]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("model size, gzip (KiB)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs size, step by step")
    fig.tight_layout()
    fig.savefig(folder / "accuracy_size.png", dpi=100)
    plt.close(fig)
    layers = steps[-1]["metrics"]["layers"]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = range(len(layers))
    ax.bar([x - 0.2 for x in xs], [100 * (l["requested"] or 0) for l in layers], 0.4, label="requested")
    ax.bar([x + 0.2 for x in xs], [100 * l["sparsity"] for l in layers], 0.4, label="achieved")
    ax.set_xticks(list(xs), [l["name"] for l in layers], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("sparsity (%)")
    ax.set_title("per-layer sparsity after the last step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "sparsity.png", dpi=100)
    plt.close(fig)
    names = ["accuracy_size.png", "sparsity.png"]
    autos = _auto_steps(report)
    for i, step, notes in autos:  # bits per layer of each quantize auto step
        rows = notes["layers"]
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = range(len(rows))
        bars = ax.bar(list(xs), [r["bits"] for r in rows], 0.6)
        for bar, r in zip(bars, rows):
            ax.annotate(r["form"], (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", fontsize=8,
                        xytext=(0, 2), textcoords="offset points")
        ax.axhline(notes["budget"], color="gray", linestyle="--", label=f"budget {notes['budget']:g}")
        ax.axhline(notes["average_bits"], color="C1", linestyle=":", label=f"average {notes['average_bits']:.2f}")
        ax.set_yscale("log", base=2)
        ax.set_yticks([1, 2, 4, 8, 32], ["1", "2", "4", "8", "32"])
        ax.set_xticks(list(xs), [f"{r['layer']}\n{r['weights']:,}" for r in rows], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("bits per weight")
        ax.set_title(f"{step['text']}: bits per layer")
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = _bits_plot_name(i, len(autos))
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names + prune_plots(report, folder, plt)


def staging_dir(out: Path) -> Path:
    """A new empty folder beside ``out`` where a run writes until it succeeds."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    from ..backend.weights import default_mode

    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    os.chmod(staging, default_mode(directory=True))
    return staging


def write_run_dir(
    out: Path, staging: Path, be: Backend, handle: Any, plan: Recipe, report: dict[str, Any], lock: dict[str, Any],
    state: Optional[dict[str, Any]] = None,
) -> Path:
    """Finish the run folder in ``staging`` (from :func:`staging_dir`; exports may already be
    there), then swap it in place of ``out``.

    Until the final rename nothing in ``out`` changes; the old folder is removed only after the
    new one is in place (and is put back if the swap fails half-way). Just before the swap,
    ``out`` is checked again by :func:`lwdsl.runner.outdir.check_out`: if it became something lwdsl
    must not replace, nothing is replaced and the finished run is kept beside it, under a
    visible name the error gives. On any other error the staging folder is removed.
    """
    from ..errors import UsageError
    from .outdir import check_out
    from ..backend.weights import save_weights

    out = Path(os.path.abspath(out))
    try:
        (staging / "recipe.lw").write_text(plan.source or plan.to_text())
        weights = be.state(handle) if state is None else state  # the pipeline's is taken before finalize (N:M layout)
        save_weights(staging / "model.lwz", weights, {"backend": be.name, "model": report["model"]})
        be.save_native(handle, staging / f"model{be.native_suffix}")
        report = dict(report, files=sorted(p.name for p in staging.iterdir()) + ["report.json", "report.md", "lwdsl.lock.json"])
        report["files"] += _plots(report, staging)
        (staging / "report.json").write_text(json.dumps(report, indent=2))
        (staging / "report.md").write_text(report_markdown(report))
        (staging / "lwdsl.lock.json").write_text(json.dumps(lock, indent=2))
        try:
            check_out(out)
        except UsageError as exc:
            kept = Path(tempfile.mkdtemp(prefix=f"{out.name}.result-", dir=out.parent))
            os.replace(staging, kept / out.name)
            raise UsageError(f"{exc.message}; nothing was replaced, and this run's results are in {kept / out.name}", hint=exc.hint) from None
        _swap(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _swap(new: Path, out: Path) -> None:
    """Put folder ``new`` in the place of ``out``: the old folder is moved aside first and is
    put back if the second rename fails or is interrupted, then removed."""
    old = None
    if os.path.lexists(out):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    try:
        os.replace(new, out)
    except BaseException:
        if old is not None and not os.path.lexists(out):
            os.replace(old / out.name, out)
            old.rmdir()
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
