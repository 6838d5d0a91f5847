"""Syntax -> plan: positional values, options, flags, selectors, header, variables, use."""

from __future__ import annotations

from pathlib import Path

import pytest

import lwdsl
from lwdsl.errors import RecipeError
from lwdsl.language.specs import ExportSpec, FeaturePair, Glob, NMRatio, PruneSpec, QuantizeSpec, Selector


def one(text: str, **kwargs):
    (step,) = lwdsl.parse(text, **kwargs).steps
    return step


def error(text: str, **kwargs) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        lwdsl.parse(text, file="t.lw", **kwargs)
    return info.value


@pytest.mark.parametrize(
    "text, fields",
    [
        ("prune global l1 0.2", {"scope": "global", "method": "l1", "amount": 0.2}),
        ("prune 0.2", {"scope": "layer", "method": "l1", "amount": 0.2}),
        ("prune random 20%", {"method": "random", "amount": 0.2}),
        ("prune threshold 0.1", {"method": "threshold", "amount": 0.1}),
        ("prune amount = 0.3 l2", {"method": "l2", "amount": 0.3}),
        ("prune ln 0.5 n=3", {"method": "ln", "n": 3.0}),
    ],
)
def test_positional_values_fill_the_first_field_that_takes_them(text: str, fields: dict) -> None:
    step = one(text)
    assert isinstance(step, PruneSpec)
    assert {k: getattr(step, k) for k in fields} == fields


def test_export_path_is_positional_after_the_format() -> None:
    step = one('export onnx "out/model.onnx"')
    assert isinstance(step, ExportSpec) and (step.format, step.path) == ("onnx", "out/model.onnx")
    assert one("export tflite model.tflite").path == "model.tflite"


def test_flags_and_options() -> None:
    step = one("quantize int4 weights_only mode=static calibrate=512")
    assert isinstance(step, QuantizeSpec)
    assert (step.weights_only, step.mode, step.calibrate) == (True, "static", 512)
    assert step.model_fields_set == {"op", "dtype", "weights_only", "mode", "calibrate"}


def test_compound_values_become_spec_types() -> None:
    assert one("prune nm=2:4 on linear").nm == NMRatio(n=2, m=4)
    step = one('distill teacher=[a.pt, "b c.pt"] features=[conv1->conv1, fc1->"fc 2"]')
    assert step.teacher == ("a.pt", "b c.pt")
    assert step.features == (FeaturePair(teacher="conv1", student="conv1"), FeaturePair(teacher="fc1", student="fc 2"))


def test_selectors() -> None:
    step = one('prune l1 0.2 on conv, "features.*" except linear expect>=2')
    on = ("conv", Glob(glob="features.*"))
    assert step.selector == Selector(on=on, **{"except": ("linear",)}, expect=2, expect_at_least=True)
    assert one("prune l1 0.2 expect=3 on all").selector.expect == 3
    assert one('prune l1 0.2 except "fc3"').selector.on == ("conv", "linear")  # the op's default kinds
    assert one("distill T=2").selector is None


def test_header() -> None:
    header = 'lwdsl 1\nrecipe "seed"\ntarget "torchvision:resnet18" on "synthetic:3,32,32:10"\n'
    recipe = lwdsl.parse(header + "\nprune l1 0.2")
    assert (recipe.version, recipe.name) == (1, "seed")
    assert (recipe.target.model, recipe.target.data) == ("torchvision:resnet18", "synthetic:3,32,32:10")
    assert lwdsl.parse("target lenet5\nprune l1 0.2").target.data is None


def test_variables_and_overrides() -> None:
    text = "let a = 20%\nlet b = $a\nlet kinds = [x.pt, y.pt]\nprune l1 $b | distill teacher=$kinds"
    recipe = lwdsl.parse(text)
    assert recipe.steps[0].amount == 0.2 and recipe.steps[1].teacher == ("x.pt", "y.pt")
    assert recipe.variables == {"a": 0.2, "b": 0.2, "kinds": ["x.pt", "y.pt"]}
    recipe = lwdsl.parse(text, overrides={"a": "0.5", "kinds": "[z.pt]"})
    assert recipe.steps[0].amount == 0.5 and recipe.steps[1].teacher == ("z.pt",)


def test_override_errors() -> None:
    err = error("let amount = 0.2\nprune l1 $amount", overrides={"amont": "0.3"})
    assert "--set amont" in err.message and err.suggestion == "amount"
    err = error("let amount = 0.2\nprune l1 $amount", overrides={"amount": "0.3 |"})
    assert str(err.location).startswith("--set amount:1:")
    err = error("let amount = 0.2\nprune l1 $amount", overrides={"amount": ""})
    assert err.message == "syntax error: unexpected end of the value"
    err = error("let amount = 0.2\nprune l1 $amount", overrides={"amount": "2"})
    assert "AMOUNT is a fraction" in err.message and str(err.location) == "t.lw:2:10"


@pytest.mark.parametrize(
    "text, message, where",
    [
        ("prune l1 $amout\n", "variable `amout` is not defined", "1:10"),
        ("let a = 1\nlet a = 2\nprune l1 0.2", "defined twice", "2:1"),
        ("prune l1 0.2\nlet a = 1", "`let` comes after the steps", "2:1"),
        ('recipe "a"\nrecipe "b"', "`recipe` is given twice", "2:1"),
        ("lwdsl 2\nprune l1 0.2", "language version 2, but this lwdsl reads versions 1 to 1", "1:1"),
        ("lwdsl 0", "language version 0", "1:1"),
        ("target 5 on mnist", "expected a model name", "1:8"),
        ('target ""', "expected a model name", "1:8"),
        ("prune l1 1e999", "too large", "1:10"),
        ("prune nm=4:2", "N:M needs N < M", "1:10"),
        ('distill features=[""->a]', "cannot be empty", "1:19"),
        ('prune l1 0.2 on ""', "an empty glob", "1:17"),
        ("prune l1 0.2 on conv on linear", "`on` is given twice", "1:22"),
        ("prune l1 0.2 amount>=3", "only `expect>=N` uses `>=`", "1:14"),
        ("prune l1 amount", "not a valid argument", "1:10"),
        ("prune l1 0.2 0.3", "`amount` is given twice", "1:14"),
        ("prune l1 0.2 layer l2", "`method` is given twice", "1:20"),
        ("export onnx a.onnx 5", "one value too many", "1:20"),
        ("distill 2", "takes no bare values", "1:9"),
        ("prune l1 0.2 expect=2.5", "`expect` must be", "1:14"),
        ("quantize", "`dtype` is missing", "1:1"),
        ("regularize epochs=2", "`l1` is missing", "1:1"),
        ("prune l1 0.2 remove", "remove=true physically removes filters", "1:14"),
        ('distill T="2"', "`T` must be a number", "1:9"),
    ],
)
def test_compile_errors_are_located(text: str, message: str, where: str) -> None:
    err = error(text)
    assert message in err.message
    assert str(err.location) == f"t.lw:{where}"
    assert err.found is not None and err.expected
    assert "pydantic" not in err.render() and "http" not in err.render()


def test_a_bare_option_name_gets_a_hint() -> None:
    err = error("prune l1 amount")
    assert err.hint == "options are written key=value: amount=..."


def write(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)


def test_use_brings_variables_steps_and_header(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "lib/base.lw": 'recipe "base"\ntarget lenet5 on mnist\nlet a = 0.3\nprune l1 $a\nfinetune epochs=1',
            "main.lw": 'recipe "main"\nuse "lib/base.lw"\nquantize int8 | use "lib/tail.lw"',
            "lib/tail.lw": "export onnx",
        },
    )
    recipe = lwdsl.load(tmp_path / "main.lw", overrides={"a": "0.5"})
    assert [s.op for s in recipe.steps] == ["prune", "finetune", "quantize", "export"]
    assert recipe.steps[0].amount == 0.5
    assert (recipe.name, recipe.target.model) == ("main", "lenet5")
    assert str(recipe.location(0)).startswith(str(tmp_path / "lib" / "base.lw") + ":4:1")


def test_use_cycles_and_missing_files(tmp_path: Path, monkeypatch) -> None:
    write(tmp_path, {"a.lw": 'use "sub/b.lw"', "sub/b.lw": 'use "../a.lw"', "c.lw": 'use "nope.lw"'})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        lwdsl.load("a.lw")
    assert info.value.found == "a.lw -> sub/b.lw -> a.lw" and str(info.value.location) == "sub/b.lw:1:5"
    with pytest.raises(RecipeError) as info:
        lwdsl.load("c.lw")
    assert "no such file" in info.value.message and str(info.value.location) == "c.lw:1:5"


def test_load_reads_json_and_reports_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(lwdsl.parse("prune l1 0.2").to_json())
    assert lwdsl.load(tmp_path / "p.json") == lwdsl.parse("prune l1 0.2")
    with pytest.raises(RecipeError, match="no such file"):
        lwdsl.load(tmp_path / "missing.lw")
    (tmp_path / "bin.lw").write_bytes(b"\xff\xfe")
    with pytest.raises(RecipeError, match="not UTF-8"):
        lwdsl.load(tmp_path / "bin.lw")


def test_written_options_survive_even_at_their_default() -> None:
    recipe = lwdsl.parse("prune l1 0.5 epochs=1 schedule=gradual")
    assert "epochs" in recipe.steps[0].model_fields_set
    assert lwdsl.parse(recipe.to_text()) == recipe
    assert "epochs=1" in recipe.to_text()


# --- issue 27: --set values, step labels, teacher paths, recipes that do nothing --------------


def test_a_wrong_value_from_set_shows_the_value_and_where_it_comes_from() -> None:
    err = error("let budget = 6\nquantize auto budget=$budget", overrides={"budget": "99"})
    shown = err.render()
    assert "step 1 `quantize auto budget=99`" in shown  # the label shows the value used
    assert "found: budget=$budget, with $budget = 99" in shown
    assert "hint: $budget comes from --set budget=99" in shown
    err = error("let amount = 3\nprune l1 $amount")
    assert "$amount = 3" in err.render() and "comes from let amount at t.lw:1:1" in err.render()


def test_step_labels_show_the_values_used() -> None:
    from lwdsl.language.validate import step_label, step_text

    recipe = lwdsl.parse("let b = 6\nlet t = [a.pt, b.pt]\nquantize auto budget=$b on linear\ndistill teacher=$t", overrides={"b": "4"})
    assert step_label(recipe, 0) == "step 1 `quantize auto budget=4 on linear`"
    assert step_text(recipe, 1) == "distill teacher=[a.pt, b.pt]"
    long = lwdsl.parse("let t = [" + ", ".join(f"t{i}.pt" for i in range(40)) + "]\ndistill teacher=$t")
    assert step_text(long, 0).endswith("...") and len(step_text(long, 0)) < 70


def test_teacher_paths_are_relative_to_the_recipe_folder(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "r" / "sub").mkdir(parents=True)
    (tmp_path / "r" / "sub" / "base.lw").write_text("distill teacher=[t.pt, original]\n")
    (tmp_path / "r" / "main.lw").write_text('use "sub/base.lw"\ndistill teacher="../u.pt"\ndistill teacher="/abs/v.pt"\n')
    monkeypatch.chdir(tmp_path)  # not the recipe's folder
    steps = lwdsl.load("r/main.lw").steps
    assert steps[0].teacher == (str(tmp_path / "r" / "sub" / "t.pt"), "original")
    assert steps[1].teacher == str(tmp_path / "u.pt") and steps[2].teacher == "/abs/v.pt"
    (tmp_path / "r" / "plan.json").write_text('{"steps": [{"op": "distill", "teacher": "t.pt"}]}')
    assert lwdsl.load("r/plan.json").steps[0].teacher == str(tmp_path / "r" / "t.pt")
    assert lwdsl.parse("distill teacher=t.pt").steps[0].teacher == "t.pt"  # text that is not a file


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing\n", 'recipe "r"\nlet a = 1\n'])
def test_a_recipe_with_no_step_is_refused(text: str) -> None:
    err = error(text)
    assert "has no steps" in err.message and err.expected
    with pytest.raises(RecipeError, match="has no steps"):
        lwdsl.Recipe.from_json('{"steps": []}')


@pytest.mark.parametrize(
    "text, where",
    [("finetune epochs=0", "t.lw:1:10"), ("distill T=2 epochs=0", "t.lw:1:13"), ("regularize l1=0.1 epochs=0", "t.lw:1:19")],
)
def test_a_training_step_of_no_epoch_is_refused_at_the_argument(text: str, where: str) -> None:
    shown = error(text).render()
    assert shown.startswith(f"{where}: error:") and "epochs=0 trains for no epoch" in shown and "from 1 to 10000" in shown


@pytest.mark.parametrize("text, col", [(r'prune l1 0.2 on "conv\d"', 22), (r'export torch "a\.pt"', 16), (r'recipe "x\ty\q"', 13)])
def test_an_unknown_escape_is_refused_where_it_is(text: str, col: int) -> None:
    shown = error(text).render()
    assert shown.startswith(f"t.lw:1:{col}: error: unknown escape") and "expected: one of the escapes" in shown


def test_known_escapes_keep_their_meaning() -> None:
    assert lwdsl.parse(r'recipe "a\"b\\c\nd\te\rf"' + "\nprune l1 0.2").name == 'a"b\\c\nd\te\rf'
