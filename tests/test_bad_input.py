"""Bad input on the command line, table-driven over every command and every numeric option.

The commands and their options are read from the typer app, so a command or option added later is
covered without editing this file: each out-of-range value (zero, negative, huge, not a number)
must end in exit code 2, exactly one line on stderr, no traceback, and no file written. The
numeric options are refused by their range before any model is built (`cli.ranges`), so this
runs in seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from surgeon.core import checks
from surgeon.cli.main import command, main
from surgeon.cli.ranges import range_of

#: A value for each required parameter, by name, so that click gets past parsing to the checks.
#: A new command with a required parameter missing here fails `test_every_required_parameter_has_a_value`.
REQUIRED = {
    "model": "resnet10t", "models": "resnet10t", "kind": "fourier", "path": "m.safetensors",
    "spec": "spec.toml", "folder": "runs", "out_path": "out.safetensors", "out_dir": "runs",
    "blocks": "c2.b1", "with_": "msa", "after": "c1.b-1", "data": "digits", "runs": "runs",
}


def _commands() -> dict:
    return dict(sorted(command().commands.items()))  # the click group main() runs, built once


def _numeric(param) -> type | None:
    kind = param.bare_type() if hasattr(param, "bare_type") else getattr(getattr(param, "type", None), "name", None)
    return {"int": int, "integer": int, "float": float}.get(getattr(kind, "__name__", kind))


def _required_args(command) -> list[str]:
    args = []
    for p in command.params:
        if not p.required:
            continue
        if p.name not in REQUIRED:
            return []
        value = REQUIRED[p.name]
        args += [value] if p.param_type_name == "argument" else [p.opts[0], value]
    return args


def _bad_values(kind: type, rule: checks.Range) -> list[str]:
    """Zero, negative, huge and non-numbers that `rule` refuses."""
    values = [v for v in (0, -1, -5) if not rule.contains(v)]
    if kind is int:
        values += [str(10**30), "1.5", "abc"]
    else:
        values += ["inf", "nan", "-inf", "abc"]
        if rule.max is not None:
            values.append("1e12")
    return [str(v) for v in values]


NUMERIC = [(name, p.name, p.opts[0]) for name, cmd in _commands().items() for p in cmd.params
           if _numeric(p) and p.param_type_name == "option"]


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The `surgeon` entry point in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["surgeon", *args])
    monkeypatch.setenv("COLUMNS", "200")
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_refused(code: int, out: str, err: str, where: Path, what: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"{what}: exit {code}, stderr {err!r}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: stderr is not one line: {err!r}"
    assert "Traceback" not in err + out
    assert list(where.iterdir()) == [], f"{what} wrote {list(where.iterdir())}"


def test_the_table_covers_every_command():
    commands = _commands()
    assert {"alternate", "replace", "probe", "hessian", "landscape", "train", "search", "eval"} <= set(commands)
    assert len(NUMERIC) >= 40  # every command's numeric options, read from the app


def test_every_required_parameter_has_a_value():
    missing = [f"{name}: {p.name}" for name, cmd in _commands().items() for p in cmd.params
               if p.required and p.name not in REQUIRED]
    assert not missing, f"add a value to REQUIRED for {missing}"


def test_every_numeric_option_has_a_range():
    missing = [f"{command} {flag}" for command, name, flag in NUMERIC if range_of(command, name) is None]
    assert not missing, f"give these options a range in surgeon.core.checks.ARGS: {missing}"


@pytest.mark.parametrize("command, name, flag", NUMERIC, ids=[f"{c}{f}" for c, _, f in NUMERIC])
def test_out_of_range_numeric_option_is_one_line_exit_2(tmp_path, monkeypatch, capsys, command, name, flag):
    monkeypatch.chdir(tmp_path)
    cmd = _commands()[command]
    param = next(p for p in cmd.params if p.name == name)
    rule = range_of(command, name)
    assert rule is not None
    for value in _bad_values(_numeric(param), rule):
        code, out, err = run_cli(monkeypatch, capsys, command, *_required_args(cmd), flag, value)
        assert_refused(code, out, err, tmp_path, f"surgeon {command} {flag} {value}")
        if value not in ("abc", "1.5"):  # a range error names the flag and the value; click names the flag
            assert f"{flag}=" in err and "out of range; give" in err, err


@pytest.mark.parametrize("args", [
    # the five inputs that ended in a traceback (issue 12, item 6)
    ["replace", "resnet10t", "--blocks", "c2.b1", "--with", "msa", "--heads", "0", "-o", "r.safetensors"],
    ["replace", "resnet10t", "--blocks", "c2.b1", "--with", "msa", "--heads", "-2", "-o", "r.safetensors"],
    ["replace", "resnet10t", "--blocks", "c2.b1", "--with", "msa", "--window", "0", "-o", "r.safetensors"],
    ["alternate", "resnet10t", "--stages", "c2", "--dim-head", "0", "-o", "a.safetensors"],
    ["probe", "fourier", "resnet10t", "--workers", "-1"],
    # and the accepted ones (item 4)
    ["alternate", "resnet10t", "--stages", "c2", "--drop-path", "5", "-o", "a.safetensors"],
    ["inspect", "resnet10t", "--num-classes", "-5"],
])
def test_issue_inputs_are_refused(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    assert_refused(*run_cli(monkeypatch, capsys, *args), tmp_path, " ".join(args))


@pytest.mark.parametrize("args", [
    ["replace", "--heads", "abc"],                     # missing required options, and a wrong type
    ["replace", "resnet10t", "--nope", "1"],           # an unknown option
    ["nope"],                                          # an unknown command
])
def test_click_usage_errors_are_one_line_exit_2(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    assert_refused(*run_cli(monkeypatch, capsys, *args), tmp_path, " ".join(args))


def test_input_size_text_is_checked(tmp_path, monkeypatch, capsys):
    """--input-size is text: its numbers are checked when it is parsed, before any output."""
    monkeypatch.chdir(tmp_path)
    for value in ("0,32,32", "3,-1,32", "3,x,32", "3,32"):
        args = ["replace", "test_resnet", "--blocks", "c1.b0", "--with", "msa", "--input-size", value, "-o", "r.safetensors"]
        assert_refused(*run_cli(monkeypatch, capsys, *args), tmp_path, " ".join(args))


def test_valid_values_pass_the_range_check(tmp_path, monkeypatch, capsys):
    """The check refuses only what is out of range: a valid --heads reaches the command."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "replace", "test_resnet", "--blocks", "c1.b0", "--with", "msa",
                             "--heads", "2", "--window", "2", "--input-size", "3,32,32", "-o", "r.safetensors")
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["r.safetensors"]


def test_every_default_is_in_range():
    """A default outside its range would refuse every run of the command."""
    for command, name, flag in NUMERIC:
        param = next(p for p in _commands()[command].params if p.name == name)
        if param.default is not None:
            checks.check(flag, param.default, range_of(command, name))


# ----------------------------------------------------------------------------------------------
# Names, choices, lists and data specs: refused before any model loads (issue 18, item 7)

from surgeon.cli.ranges import CHOICES, DATA, LISTS, choices_of  # noqa: E402

#: Text options that take free text (a model, a path, a selection), not a fixed set of values.
FREE = {"model", "models", "data", "val", "blocks", "after", "stages", "input_size", "device", "address", "recipe",
        "spec", "path", "folder", "runs", "weights", "out_path", "out_fig", "out_dir", "json_out", "csv_out",
        "cifar_c", "imagenet_c", "cifar_p", "save", "reliability", "chart", "labels"}


def _text_options() -> list[tuple[str, object]]:
    """(command, param) of every parameter that is neither a number nor a flag."""
    return [(name, p) for name, cmd in _commands().items() for p in cmd.params
            if not _numeric(p) and not getattr(p, "is_flag", False) and getattr(getattr(p, "type", None), "name", "") != "boolean"]


def test_every_text_option_has_a_rule():
    """A text option is free text, a list (LISTS) or a choice (CHOICES): a new option with a fixed set of
    values must say so, so that a typo in it is refused before the model loads."""
    missing = [f"{c} {p.name}" for c, p in _text_options()
               if p.name not in FREE and f"{c}.{p.name}" not in LISTS and choices_of(c, p.name) is None]
    assert not missing, f"give these options a rule in cli/ranges.py (LISTS or CHOICES), or add them to FREE: {missing}"
    lists = {f"{c}.{p.name}" for c, p in _text_options() if "comma-separated" in (getattr(p, "help", "") or "")
             and p.name not in ("blocks",)}
    assert lists <= set(LISTS), f"comma-separated options parsed ad hoc: {lists - set(LISTS)}"
    assert all(k.split(".")[-1] in {p.name for _, p in _text_options()} for k in (*LISTS, *CHOICES))


def _bad_text_inputs() -> list[tuple[str, str, list[str]]]:
    """(command, what, argv) of a bad value for every list, choice and data option of every command."""
    cases = []
    for command, p in _text_options():
        key, flag = f"{command}.{p.name}", p.opts[0] if p.opts else None
        base = _required_args(_commands()[command])
        if key in LISTS:
            kind, example = LISTS[key]
            first = example.split(",")[0]
            cases.append((command, f"{flag} repeat", [*base, flag, f"{first},{first}"]))
            cases.append((command, f"{flag} empty", [*base, flag, ","]))
        elif choices_of(command, p.name) is not None:
            if p.param_type_name == "argument":  # probe KIND: the first argument
                cases.append((command, p.name, ["nope", *base[1:]]))
            else:
                cases.append((command, f"{flag} nope", [*base, flag, "nope"]))
        elif p.name in DATA and p.param_type_name == "option":
            cases.append((command, f"{flag} nowhere", [*base, flag, "no/such/data"]))
    return cases


BAD_TEXT = _bad_text_inputs()


def test_the_bad_text_table_covers_every_rule():
    said = " ".join(what for _, what, _ in BAD_TEXT)
    for flag in ("--eps", "--perturbations", "--corruptions", "--severities", "--frequencies", "--attack", "--which",
                 "--method", "--norm", "--l2", "--nll", "--preset", "--metric", "--backend", "--with", "--block",
                 "--data", "--val"):
        assert flag in said, flag
    assert len(BAD_TEXT) >= 35


@pytest.mark.parametrize("command, what, argv", BAD_TEXT, ids=[f"{c} {w}" for c, w, _ in BAD_TEXT])
def test_bad_names_are_refused_before_any_model_loads(tmp_path, monkeypatch, capsys, command, what, argv):
    import surgeon

    def no_model(*args, **kwargs):
        raise AssertionError(f"surgeon {command} {what}: a model was loaded before the refusal")

    monkeypatch.chdir(tmp_path)
    for name in ("load_model", "load"):
        monkeypatch.setattr(surgeon, name, no_model)
    code, out, err = run_cli(monkeypatch, capsys, command, *argv)
    assert_refused(code, out, err, tmp_path, f"surgeon {command} {what}")
    assert "a model was loaded" not in err
    if "repeat" in what:
        assert "twice; give each value once" in err and what.split()[0] in err, err


@pytest.mark.parametrize("args", [
    ["localize", "test_vit", "-o", "l.safetensors", "--kernel", "4"],       # even: no centred neighbourhood
    ["attack", "test_resnet", "--steps", "1000000"],                        # a count without its bound
    ["train", "test_resnet", "-o", "t.safetensors", "--epochs", "0"],       # the warmup epoch alone
    ["latency", "test_resnet", "--repeats", "1"],                           # no spread from one timing
])
def test_counts_and_odd_sizes_are_refused_before_any_model_loads(tmp_path, monkeypatch, capsys, args):
    import surgeon

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(surgeon, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert_refused(code, out, err, tmp_path, " ".join(args))
    assert f"{args[-2]}={args[-1]} is out of range" in err, err


def test_every_count_has_an_upper_bound():
    """A count without a bound (``--steps 1000000``) runs for days: every integer range has a
    maximum of its own, except the counts the data bounds (a loop stops at the end of the data)."""
    bounded_by_data = {"batches"}
    loose = [n for n, r in checks.ARGS.items() if r.kind is int and r.max is None and n not in bounded_by_data]
    assert not loose, f"give these counts an upper bound (with its reason) in surgeon.core.checks.ARGS: {loose}"


@pytest.mark.parametrize("args, said", [
    (["trajectory", "nowhere.run"], "run folder 'nowhere.run' does not exist"),
    (["trajectory", "afile.txt"], "does not exist"),                              # its run folder afile.run
    (["report", "nowhere"], "search folder 'nowhere' does not exist"),
    (["report", "afile.txt"], "search folder 'afile.txt' is a file, not a folder"),
    (["robustness", "test_resnet", "--cifar-c", "afile.txt"], "'afile.txt' is a file, not a folder; point --cifar-c"),
    (["stability", "test_resnet", "--cifar-p", "afile.txt"], "'afile.txt' is a file, not a folder; point --cifar-p"),
    (["train", "test_resnet", "-o", "t.safetensors", "--val", "nowhere"], "--val 'nowhere' is neither"),
    (["search", "recipes.toml", "--out", "s", "--retries", "1"], "pass --retries 0 or --backend ray"),
    (["hessian", "test_resnet", "--retries", "1"], "pass --retries 0 or --backend ray"),
    (["landscape", "test_resnet", "--job-gpus", "1"], "are Ray options; add --backend ray"),
])
def test_messages_name_the_option_and_the_thing(tmp_path, monkeypatch, capsys, args, said):
    """A missing path is said to be missing, a file where a folder belongs is said to be a file, and
    the option named is the one typed; all before a model loads."""
    import surgeon

    monkeypatch.setattr(surgeon, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile.txt").write_text("x")
    (tmp_path / "recipes.toml").write_text((Path(__file__).parents[1] / "recipes" / "digits_buildup.toml").read_text())
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and said in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile.txt", "recipes.toml"]


def test_an_input_too_small_for_the_stages_is_refused(tmp_path, monkeypatch, capsys):
    """At 2x2 the stem leaves a 1x1 map and every stage would be numbered c1 (the graph tells stages
    apart by map size): refused in one line, by the graph, so every command and the API agree."""
    import surgeon

    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "inspect", "test_resnet", "--input-size", "3,2,2")
    assert_refused(code, out, err, tmp_path, "inspect --input-size 3,2,2")
    assert "too small for this model" in err and "--input-size 3,160,160" in err, err
    model = surgeon.load_model("test_resnet")
    with pytest.raises(surgeon.SurgeonError, match="1x1 from the first block on"):
        surgeon.graph(model, input_size=(3, 4, 4))
    assert list(surgeon.graph(model, input_size=(3, 8, 8)).stages) == ["c1", "c2"]  # 2x2 then 1x1: still told apart


def _api_refusals():
    """(what, call, said): the same rules in the library, so the API is as safe as the CLI."""
    import surgeon

    x, y = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    plain = lambda: surgeon.load_model("test_resnet", num_classes=3)  # noqa: E731 - no dropout module
    return [
        ("mc_dropout without dropout", lambda: surgeon.evaluate(plain(), [(x, y)], mc_dropout=2), "has no dropout"),
        ("n_ff without dropout", lambda: surgeon.adversarial_robustness(plain(), [(x, y)], "fgsm", [0.01], n_ff=2),
         "n_ff=2 asks for MC dropout"),
        ("one-member ensemble", lambda: surgeon.ensemble([plain()]), "two or more members"),
        ("eps twice", lambda: surgeon.adversarial_robustness(plain(), [(x, y)], "fgsm", [0.01, 0.01]),
         "eps=0.01,0.01 gives 0.01 twice"),
        ("corruption twice", lambda: surgeon.evaluation.robustness.check_corruption_args(["fog", "fog"]), "gives fog twice"),
        ("severity twice", lambda: surgeon.evaluation.robustness.check_corruption_args(["fog"], [1, 1]), "gives 1 twice"),
        ("band twice", lambda: surgeon.evaluation.frequency_noise.check_frequency_args([0.1, 0.1]), "gives 0.1 twice"),
        ("perturbation twice", lambda: surgeon.evaluation.stability.check_perturbations(["translate", "translate"]),
         "gives translate twice"),
        ("retries in process", lambda: surgeon.parallel.executors.executor("local", retries=1), "no worker to die"),
        ("epochs 0", lambda: surgeon.train("test_resnet", "digits", recipe=surgeon.training.recipe_with("digits", epochs=0)), "epochs=0 is out of range"),
        ("PGD steps unbounded", lambda: surgeon.adversarial_robustness(plain(), [(x, y)], surgeon.evaluation.Attack("pgd", steps=10**6), [0.01]),
         "steps=1000000 is out of range"),
        ("val names nothing", lambda: surgeon.train("test_resnet", "digits", val="no/such/data"), "val='no/such/data'"),
    ]


API = _api_refusals()


@pytest.mark.parametrize("what, call, said", API, ids=[w for w, _, _ in API])
def test_the_library_refuses_the_same_no_op_and_duplicate_arguments(tmp_path, monkeypatch, what, call, said):
    import surgeon

    monkeypatch.chdir(tmp_path)
    with pytest.raises(surgeon.SurgeonError) as e:
        call()
    assert said in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_mc_dropout_runs_on_a_model_with_dropout():
    """The refusal is about the model, not the option: with stochastic depth the passes differ."""
    import surgeon

    torch.manual_seed(0)
    model = surgeon.load_model("test_resnet", num_classes=3, drop_path_rate=0.5)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    ev = surgeon.evaluate(model, [(x, y)], mc_dropout=3)
    assert ev.samples == 4 and 0 <= ev.metrics["acc"] <= 1


MULTI = sorted(name for name, cmd in _commands().items() if any(p.name == "models" for p in cmd.params)
               and name != "ensemble")


@pytest.mark.parametrize("command", MULTI)
def test_a_model_given_twice_is_refused_before_it_loads(tmp_path, monkeypatch, capsys, command):
    """Every command that compares MODELS (not ensemble: random-init members of one name differ)."""
    import surgeon

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(surgeon, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    args = [command, *(["fourier"] if command == "probe" else []), "test_resnet", "test_resnet"]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert_refused(code, out, err, tmp_path, " ".join(args))
    assert "MODELS gives test_resnet twice" in err, err


def test_localize_says_why_a_block_is_not_a_token_sequence():
    """Swin's attention runs on NHWC windows: the reason is its layout, not the kind it asks for (msa)."""
    from types import SimpleNamespace

    from surgeon.surgery.locality import _not_local

    swin = SimpleNamespace(kind="msa", layout="NHWC", in_shape=(1, 7, 7, 96), grid=(7, 7))
    assert "NHWC feature maps" in _not_local(swin) and "msa" not in _not_local(swin)
    assert _not_local(SimpleNamespace(kind="conv", layout="NCHW", in_shape=(1, 8, 4, 4), grid=(4, 4))) == \
        "is a conv block, not attention"
    assert _not_local(SimpleNamespace(kind="msa", layout="NLC", in_shape=(1, 17, 8), grid=(4, 4))) is None
