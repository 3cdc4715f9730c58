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

from surgeon import checks
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
    assert not missing, f"give these options a range in surgeon.checks.ARGS: {missing}"


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
