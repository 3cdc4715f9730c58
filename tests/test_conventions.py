"""One convention across commands (issue 12, items 10-13): outputs refused without --force,
--json/--csv with - for stdout, tidy tables (tidy() -> CSV and to_pandas), strict JSON, shared
options with one meaning (--seed seeds the model too), output while running, a fast --help."""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke
from rich.table import Table

import surgeon
from surgeon.core import jsonio
from surgeon.core import tables
from surgeon.cli import common
from surgeon.cli.main import app
from surgeon.core.errors import SurgeonError

ROOT = Path(__file__).resolve().parents[1]


def commands() -> dict[str, object]:
    """Every command of the app (click commands, as typer builds them), by its name."""
    import typer.main

    return dict(typer.main.get_command(app).commands)


def _flags(command) -> set[str]:
    return {o for p in command.params for o in getattr(p, "opts", [])}


# ----------------------------------------------------------------------------------------------
# Item 10: outputs

#: the least each command needs to reach its output check (a new command gets ["test_resnet"])
MINIMAL = {
    "alternate": ["test_resnet", "--stages", "c3"],
    "lesion": ["test_resnet", "-b", "c3.b0"],
    "insert": ["test_resnet", "--after", "c3.b0"],
    "replace": ["test_resnet", "-b", "c3.b0", "--with", "identity"],
    "eval": ["test_resnet", "--data", "digits"],
    "lesion-study": ["test_resnet", "--data", "digits"],
    "probe": ["stats", "test_resnet"],
    "search": ["recipes/digits_buildup.toml", "--out", "runs_x"],
    "report": ["runs_x"],
    "ensemble": ["test_resnet", "test_resnet"],
    "localize": ["test_resnet"],
    "info": ["model.safetensors"],
}
#: --out that is a model file, not a figure; --out that is a folder (resumed with --resume, not overwritten)
MODEL_OUT = {"alternate", "lesion", "insert", "replace", "train", "ensemble", "localize"}
FOLDER_OUT = {"search", "compare"}
SUFFIX = {"--json": ".json", "--csv": ".csv", "--reliability": ".png"}


def file_options(command) -> list[str]:
    """The options of a command that name a file it writes."""
    return [o for o in ("--out", "--json", "--csv", "--reliability") if o in _flags(command)]


def test_every_command_that_writes_a_file_refuses_an_existing_one_without_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "digits_buildup.toml").write_text((ROOT / "recipes" / "digits_buildup.toml").read_text())
    checked = []
    for name, callback in commands().items():
        for opt in file_options(callback):
            if opt == "--out" and name in FOLDER_OUT:
                continue
            suffix = ".safetensors" if opt == "--out" and name in MODEL_OUT else SUFFIX.get(opt, ".png")
            target = tmp_path / f"existing{suffix}"
            target.write_bytes(b"keep me")
            args = [a for a in MINIMAL.get(name, ["test_resnet"])]
            if name in MODEL_OUT and opt != "--out":
                args += ["--out", "fresh.safetensors"]
            res = invoke(name, *args, opt, target.name)
            said = common.with_flags(str(res.exception), ["--force"])  # what main() prints
            assert isinstance(res.exception, SurgeonError) and "exists; pass --force" in said, \
                f"surgeon {name} {opt}: {res.exception!r} {res.output[-300:]}"
            assert target.read_bytes() == b"keep me"
            checked.append(f"{name} {opt}")
    assert {"probe --out", "probe --json", "hessian --json", "hessian --csv", "inspect --json", "eval --reliability",
            "lesion --out", "train --out", "landscape --csv", "report --out"} <= set(checked)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("existing")) == ["recipes"]


def test_every_json_option_takes_dash_and_has_a_csv_sibling():
    for name, callback in commands().items():
        opts = file_options(callback)
        if "--json" in opts:
            assert "--csv" in opts, f"surgeon {name} has --json but no --csv"
            assert "--force" in _flags(callback), f"surgeon {name} writes files but has no --force"


def test_json_dash_prints_json_alone_on_stdout_and_csv_rows_agree(tmp_path):
    res = invoke("inspect", "test_resnet", "--input-size", "3,32,32", "--json", "-", "--csv", str(tmp_path / "g.csv"))
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # nothing but the JSON on stdout: the tables went to stderr
    assert data["model"] == "test_resnet" and "blocks" in res.stderr
    rows = list(csv.DictReader((tmp_path / "g.csv").open()))
    params = {r["block"]: int(r["value"]) for r in rows if r["quantity"] == "params"}
    assert params == {b["address"]: b["params"] for b in data["blocks"]}
    res = invoke("inspect", "test_resnet", "--input-size", "3,32,32", "--csv", "-")
    assert res.exit_code == 0 and res.stdout.splitlines()[0] == "model,block,path,kind,stage,output,quantity,value"
    res = invoke("inspect", "test_resnet", "--json", "-", "--csv", "-")
    assert isinstance(res.exception, SurgeonError) and "both ask for stdout" in str(res.exception)


def test_eval_csv_holds_the_json_numbers(tmp_path):
    res = invoke("eval", "test_resnet", "--data", "digits", "--num-classes", "10", "--input-size", "3,16,16",
                 "--batches", "1", "--batch-size", "16", "--json", str(tmp_path / "e.json"), "--csv",
                 str(tmp_path / "e.csv"))
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "e.json").read_text())["metrics"]
    rows = list(csv.DictReader((tmp_path / "e.csv").open()))
    assert {r["quantity"] for r in rows} == set(metrics)
    for r in rows:
        want = metrics[r["quantity"]]
        assert (r["value"] == "" and want is None) or float(r["value"]) == want  # full precision, not 4 digits
        assert r["model"] == "test_resnet" and r["data"] == "digits"


# ----------------------------------------------------------------------------------------------
# to_pandas / tidy() on every result type


def _block_graph():
    m = surgeon.load_model("test_resnet", num_classes=10)
    return surgeon.graph(m, input_size=(3, 16, 16))


def _examples() -> dict[type, object]:
    """A small instance of every result type (built directly: the rows are what is tested)."""
    from surgeon.analysis.curvature import DensityResult, SpectrumResult, TraceResult
    from surgeon.analysis.eigensolvers import EigResult
    from surgeon.analysis.landscapes import LandscapeResult
    from surgeon.analysis.lesions import LesionRow
    from surgeon.analysis.reductions import ActivationStats, FourierResult

    g = _block_graph()
    metrics = {"acc": 0.5, "nll": 1.25, "ece": float("nan")}
    ev = surgeon.results.EvaluationResult(metrics, {}, 16, 1)
    b = g.blocks[1]
    lesion = surgeon.results.LesionResult("m", g, ev, [LesionRow(b.address, b.path, b.kind, b.stage, b.depth,
                                                         {"acc": 0.25, "nll": 2.0, "ece": 0.1},
                                                         {"acc": -0.25, "nll": 0.75, "ece": float("nan")})], {})
    fourier = FourierResult(np.array([0.0, 1.0]), np.array([1.0, 0.5]), np.array([0.0, -0.5]))
    stats = ActivationStats(0.1, 1.0, 3.0, 0.0, 0, 100)
    probe = surgeon.results.ProbeResult("m", g, [b], {b.address: {"fourier": fourier, "stats": stats, "variance": 2.0}}, 1, 8)
    spectrum = SpectrumResult("m", np.array([[3.0, 1.0]]), np.array([[1e-5, 2e-5]]), np.array([0.7]), "LM", 10)
    land = LandscapeResult("m", np.array([-1.0, 0.0, 1.0]), np.array([[1.0, 2.0, np.nan]] * 3),
                           np.full((3, 3), 0.1), {}, 0.5, 0.25)
    corr = surgeon.results.CorruptionResult("m", "generated", ["fog"], [1, 2], {"acc": 0.9},
                                    {"fog": {1: {"acc": 0.8}, 2: {"acc": 0.6}}}, 16)
    freq = surgeon.results.FrequencyNoiseResult("m", [0.1, 0.9], [0.7, float("nan")], 0.8, 0.1, 0.2, 16)
    search = surgeon.results.SearchResult(Path("runs/x"), [{"step": 0, "id": "base", "msa": {}, "metric": "val_acc", "mean": 0.5, "std": 0.0, "failed": False, "name": "base",
                                                    "accepted": True, "runs": [{"seed": 0, "metrics": {"val_acc": 0.5}},
                                                                               {"seed": 1, "failed": "diverged"}]}])
    from surgeon.evaluation.latency import LatencyResult, LatencyRow

    latency = LatencyResult("m", "cpu", (3, 16, 16), 0, 2, 1, [LatencyRow(1, 2.5, 0.1, 400.0, None)])
    adversarial = surgeon.results.AdversarialResult("m", "fgsm", [0.01], None, None, False, 1, {"acc": 0.9}, [{"acc": 0.5}], 8)
    from surgeon.evaluation.stability import StabilityResult
    from surgeon.analysis.trajectory import TrajectoryResult

    stability = StabilityResult("m", "made on the fly (seed 0)", ["translate"], {"translate": 6},
                                {"translate": {"consistency": 0.9, "cec": 0.05, "flip_probability": 0.1}}, 8)
    trajectory = TrajectoryResult("r", [0, 1, 2], [0.0, 1.5, 2.5], [0.0, 10.0, 0.0], 100, 4, [])
    train = surgeon.results.TrainResult(None, surgeon.training.recipe.Recipe(), [{"epoch": 1, "lr": 1e-3, "train_loss": 0.5,
                                                          "val_acc": float("nan")}])
    comparison = surgeon.results.ComparisonResult({"measures": ["lesions"]}, [{"label": "m", "spec": "test_resnet", "blocks": [],
                                                                                          "input_size": [3, 16, 16], "params": 1000}])
    from surgeon.comparison.claims import ClaimResult

    claim = ClaimResult("flat", "MSAs flatten the loss landscape", "Fig. 4", "rule", "max |eigenvalue|", {"m": 1.5},
                        "holds")
    return {type(x): x for x in (ev, lesion, probe, spectrum, TraceResult(12.5, 0.5, 30, "hutch++"), comparison, claim,
                                  DensityResult(np.array([0.0, 1.0]), np.array([0.5, 0.5]), np.zeros((1, 2)),
                                                np.zeros((1, 2)), 0.1, 10), land, corr, freq, search, train, g, latency, adversarial,
                                  stability, trajectory, fourier,
                                  EigResult(np.array([3.0, -1.0]), np.array([1e-6, 2e-6]), 30, 12, "lanczos", "LM", True))}


def test_every_result_type_has_tidy_rows_csv_and_to_pandas(tmp_path):
    pandas = pytest.importorskip("pandas")
    for info in pkgutil.iter_modules(surgeon.__path__):  # every result class of the package, found by its base
        importlib.import_module(f"surgeon.{info.name}")
    examples = _examples()
    kinds = {c for c in _subclasses(tables.Tabular)}
    assert kinds <= set(examples), f"no example for {sorted(c.__name__ for c in kinds - set(examples))}"
    results = {v for m in list(sys.modules) if m.startswith("surgeon.") for k, v in vars(sys.modules[m]).items()
               if isinstance(v, type) and k.endswith("Result") and v.__module__ == m}
    assert results <= kinds, f"result types without tidy rows: {sorted(c.__name__ for c in results - kinds)}"
    for kind, result in examples.items():
        rows = result.tidy()
        assert rows and all({"quantity", "value"} <= set(r) for r in rows), kind
        df = result.to_pandas()
        assert isinstance(df, pandas.DataFrame) and len(df) == len(rows)
        assert list(df.columns[-2:]) == ["quantity", "value"] or "quantity" in df.columns
        path = result.to_csv(tmp_path / f"{kind.__name__}.csv")
        back = pandas.read_csv(path)
        assert len(back) == len(rows)
        np.testing.assert_allclose(pandas.to_numeric(back["value"]).to_numpy(dtype=float),
                                   pandas.to_numeric(df["value"]).to_numpy(dtype=float), rtol=1e-15)
    lesion = examples[surgeon.results.LesionResult].to_pandas()
    assert set(lesion["block"].dropna()) == {examples[surgeon.results.LesionResult].rows[0].address}
    assert lesion.loc[(lesion["block"].notna()) & (lesion["quantity"] == "acc"), "delta"].item() == -0.25


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_to_pandas_without_pandas_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(SurgeonError, match=re.escape("pip install 'surgeon[tables]'")):
        surgeon.results.EvaluationResult({"acc": 1.0}, {}, 1, 1).to_pandas()


# ----------------------------------------------------------------------------------------------
# One JSON writer: NaN -> null


def test_json_writer_maps_nan_to_null_and_numpy_torch_to_python():
    text = jsonio.dumps({"a": float("nan"), "b": np.float32(1.5), "c": torch.tensor(2.0), "d": [np.inf, -np.inf],
                         "e": np.arange(2), 3: (Path("x"),)})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == \
        {"a": None, "b": 1.5, "c": 2.0, "d": [None, None], "e": [0, 1], "3": ["x"]}


def test_training_log_writes_null_not_nan(tmp_path):
    from surgeon.training import checkpoints

    checkpoints._write_logs(tmp_path, [{"epoch": 1, "train_loss": 0.5, "val_acc": float("nan")}])
    line = (tmp_path / "log.jsonl").read_text().strip()
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c}"))["val_acc"] is None


def test_json_is_written_by_one_function_only():
    """Every json.dump(s) of surgeon/ and cli/ goes through surgeon.jsonio (the class of bare-NaN bugs), or is
    strict (allow_nan=False: refuses NaN, as the recipe record in a surgeon file does)."""
    found = []
    for path in [*ROOT.glob("surgeon/**/*.py"), *ROOT.glob("cli/*.py")]:
        if path.name == "jsonio.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if (re.search(r"\bjson\.dumps?\(", line) and "allow_nan=False" not in line) or "print_json(" in line:
                found.append(f"{path.relative_to(ROOT)}:{i}")
    assert not found, f"JSON written outside surgeon.core.jsonio: {found}"


# ----------------------------------------------------------------------------------------------
# Item 11: options


def test_shared_options_have_one_meaning_everywhere():
    """--seed, --device, --blocks, --pretrained, --force, --json, --csv, --l2: the shared definitions."""
    shared = {"--seed": common.SeedOpt, "--device": common.DeviceOpt, "--pretrained": common.PretrainedOpt,
              "--force": common.ForceOpt, "--json": common.JsonOpt, "--csv": common.CsvOpt, "--l2": common.L2Opt}
    helps = {flag: opt.__metadata__[0].help for flag, opt in shared.items()}
    for name, cmd in commands().items():
        for p in cmd.params:
            for flag in set(p.opts) & set(helps):
                assert p.help == helps[flag], f"surgeon {name} {flag}: {p.help!r}"
            if "--l2" in p.opts:
                assert p.default == common.L2_DEFAULT, name
            if "--blocks" in p.opts:
                assert "-b" in p.opts, f"surgeon {name} --blocks has no -b"
    loads_a_model = {"inspect", "alternate", "lesion", "insert", "replace", "eval", "lesion-study", "probe", "hessian",
                     "landscape", "robustness", "frequency-noise", "train"}
    for name in loads_a_model:
        assert {"--pretrained", "--weights"} <= _flags(commands()[name]), name
    computes = {"eval", "lesion-study", "probe", "hessian", "landscape", "robustness", "frequency-noise", "train"}
    for name in computes | {"alternate", "lesion", "insert", "replace"}:
        assert "--seed" in _flags(commands()[name]), name
    for name in computes:
        assert "--device" in _flags(commands()[name]), name
    assert surgeon.analysis.Objective().l2 == common.L2_DEFAULT


def test_seed_also_seeds_the_random_initialisation():
    """The same hessian command on a random-init model gives the same numbers twice (was 4.53, then 8.35)."""
    args = ["hessian", "test_resnet", "--num-classes", "10", "--input-size", "3,16,16", "--batch-size", "8",
            "--batches", "1", "--top-k", "1", "--tol", "1e-2", "--json", "-"]
    first, again, other = (invoke(*args, "--seed", s) for s in ("3", "3", "4"))
    values = [json.loads(r.stdout)[0]["eigenvalues"][0][0] for r in (first, again, other)]
    assert values[0] == values[1] and values[0] != values[2]


def test_library_errors_name_arguments_not_flags():
    """No string of the library (docstrings aside) names a CLI flag: messages name API arguments
    (num_classes=10), and the CLI turns them into its options (--num-classes 10)."""
    import ast

    flag = re.compile(r"(?<![`\w-])--[a-z][a-z-]*")
    found = []
    for path in sorted(ROOT.glob("surgeon/**/*.py")):
        tree = ast.parse(path.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docs:
                continue
            text = re.sub(r"`[^`]*`|surgeon [a-z-]+ .*", "", node.value)  # shell commands shown as such stay
            if not re.fullmatch(r"--[a-z][a-z0-9-]*(=\S*)?", text) and flag.search(text):  # argv tokens stay
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"library strings that mention CLI flags: {found}"


def test_cli_says_the_options_of_the_command():
    from surgeon.cli.main import _options

    msg = "label 9 is out of range; pass num_classes=10 (or more); check data= (and subset=); pass overwrite=True"
    assert common.with_flags(msg, _options(["eval"])) == \
        "label 9 is out of range; pass --num-classes 10 (or more); check --data (and --subset); pass --force"
    assert common.with_flags("k=0 must be at least 1", _options(["hessian"])) == "--top-k 0 must be at least 1"
    assert common.with_flags("unknown which='XX'", _options(["eval"])) == "unknown which='XX'"  # not an eval option
    r = subprocess.run([sys.executable, "-m", "surgeon.cli", "hessian", "test_resnet", "--input-size", "3,16,16",
                        "--num-classes", "5", "--batch-size", "200"], capture_output=True, text=True)
    assert r.returncode == 2 and "build it with --num-classes 10 (a new head)" in r.stderr, r.stderr


def test_cli_constants_agree_with_the_library():
    from surgeon.cli import robustness, train

    assert robustness.FREQUENCIES_TEXT == ",".join(map(str, surgeon.evaluation.frequency_noise.FREQUENCIES))
    assert set(train.RECIPE_NAMES) == set(surgeon.training.recipe.RECIPES)


# ----------------------------------------------------------------------------------------------
# Item 12: output while running


@pytest.mark.parametrize("columns", [None, "80"])
def test_output_to_a_file_is_never_cut_at_80_columns(monkeypatch, columns):
    """Also when the environment says COLUMNS=80 (pytest-xdist's workers, some shells export it)."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    buf = io.StringIO()
    console = common._Console(file=buf)
    table = Table()
    for i in range(12):
        table.add_column(f"column {i}")
    table.add_row(*(f"{math.pi * 10 ** i:.10f}" for i in range(12)))
    console.print(table)
    assert all(f"{math.pi * 10 ** i:.10f}" in buf.getvalue() for i in range(12))


def test_train_reports_each_epoch_when_it_ends(tmp_path, capsys):
    seen = []

    def on_epoch(row):  # called after the epoch's log line is on disk, before the next epoch starts
        lines = (tmp_path / "r.run" / "log.jsonl").read_text().splitlines()
        seen.append((row["epoch"], len(lines)))

    surgeon.train("test_resnet", "digits", recipe=surgeon.training.recipe_with("digits", epochs=1, input_size=(3, 16, 16)), subset=0.25, val="none", seed=0, out=tmp_path / "r.safetensors", run=surgeon.parallel.Run(callback=on_epoch))
    assert seen == [(1, 1), (2, 2)]
    from surgeon.cli.train import epoch_line

    assert epoch_line({"epoch": 2, "lr": 1e-3, "train_loss": 0.123456, "val_acc": float("nan")}) == \
        "epoch 2: lr 1.000e-03, train loss 0.1235, val acc -"


def test_lesion_table_shows_the_block_that_changed():
    from surgeon.cli.surgery import changes

    g = surgeon.graph(surgeon.load_model("resnet18"), input_size=(3, 32, 32))
    after = surgeon.graph(surgeon.remove(g.model, "layer3.1", input_size=g.input_size), input_size=g.input_size)
    rows = changes(g, after)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("c3.b1", "layer3.1", "[green]conv[/]", "identity")]
    assert rows[0][4].endswith("-> 0")


def test_help_starts_without_torch():
    """`surgeon --help` imports neither torch nor matplotlib, and the whole process (interpreter start
    included) takes well under a second of CPU (CPU, not wall time: a loaded CI machine must not fail it;
    it was 7-8 s of CPU, 24 s of wall time on a loaded 2-core machine, with torch imported eagerly)."""
    code = ("import resource, sys; sys.argv = ['surgeon', '--help']\n"
            "from surgeon.cli.main import main\n"
            "try: main()\nexcept SystemExit: pass\n"
            "r = resource.getrusage(resource.RUSAGE_SELF)\n"
            "print(r.ru_utime + r.ru_stime, 'torch' in sys.modules, 'matplotlib' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds, torch_loaded, mpl_loaded = r.stderr.split()
    assert torch_loaded == "False" and mpl_loaded == "False" and "Usage: surgeon" in r.stdout
    assert float(seconds) < 1.0, f"surgeon --help took {seconds} s of CPU"


def test_lazy_package_exports_everything_in_all():
    r = subprocess.run([sys.executable, "-c", "import surgeon, sys; print('torch' in sys.modules); "
                        "[getattr(surgeon, n) for n in surgeon.__all__]; import surgeon.surgery.passes; "
                        "print(callable(surgeon.graph))"], capture_output=True, text=True)
    assert r.stdout.split() == ["False", "True"], r.stderr


# ----------------------------------------------------------------------------------------------
# Item 13: cosmetic


def test_help_shows_no_bool_type_and_upper_case_arguments():
    res = invoke("lesion-study", "--help")
    assert "<bool>" not in res.stdout and "{" not in res.stdout.splitlines()[1]
    assert "MODELS..." in res.stdout


def test_counts_are_pluralised():
    from surgeon.core.text import plural

    assert (plural(1, "stage"), plural(2, "stage"), plural(1, "MSA"), plural(3, "MSA"), plural(1, "batch"),
            plural(2, "batch")) == ("1 stage", "2 stages", "1 MSA", "3 MSAs", "1 batch", "2 batches")
    res = invoke("inspect", "test_vit", "--input-size", "3,32,32", "--img-size", "32")
    assert res.exit_code == 0, res.output
    assert " in 1 stage," in res.stdout


def test_downsampling_swatch_is_visible():
    from matplotlib.colors import to_rgba

    fig, ax = surgeon.viz.plots.plt.subplots()
    blocks = [b for b in _block_graph().blocks if b.downsamples]
    handles = surgeon.viz.plots._shade(ax, blocks, 0.1)
    for h in handles:
        edge, face = to_rgba(h.get_edgecolor()), to_rgba(h.get_facecolor())
        assert h.get_linewidth() > 0 and edge[3] > 0 and sum(edge[:3]) < 2.0 and edge != face
    surgeon.viz.plots.plt.close(fig)


_C = ("--num-classes", "10", "--input-size", "3,32,32", "--batches", "1", "--batch-size", "8")


@pytest.mark.parametrize("args", [
    ("attack", "resnet18", "--attack", "pgdx", *_C),
    ("attack", "resnet18", "--eps", "2", *_C),
    ("stability", "resnet18", "-p", "translat", *_C),
    ("robustness", "resnet18", "-c", "fogg", *_C),
    ("probe", "fourier", "resnet18", "--blocks", "c9", *_C),
    ("hessian", "resnet18", "--which", "XX", *_C),
    ("landscape", "resnet18", "--norm", "l3", *_C),
    ("eval", "resnet18", "--data", "nowhere", *_C),
], ids=lambda a: " ".join(a[:4]))
def test_a_refused_command_prints_nothing_on_stdout(tmp_path, args):
    """Bad input found after the model is built (a block, a data path) or before: stdout stays
    empty (the line saying which input size a command uses waits for its first result), so that a
    script reading stdout sees nothing but a refusal."""
    from test_cli import one_line_error, surgeon as run

    r = run(*args, cwd=tmp_path)
    one_line_error(r, "")
    assert r.stdout == ""
    ok = run("probe", "stats", "resnet18", "--blocks", "c1", *_C, cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith("input 3x32x32 (--input-size)\n"), ok.stdout[:200]


# ----------------------------------------------------------------------------------------------
# The documentation names options that exist (issue 18: docs/architecture.md used --figure)


def _documented_commands() -> list[tuple[str, str, str]]:
    """(file:line, command, text) of every ``surgeon COMMAND ...`` in README.md and docs/*.md
    (a shell line continued with a backslash is joined to the next)."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", path.read_text())
        for i, line in enumerate(text.splitlines(), 1):
            for m in re.finditer(r"surgeon ([a-z][a-z-]*)((?: +[^\s`|]+)*)", line):
                found.append((f"{path.name}:{i}", m.group(1), m.group(2)))
    return found


def test_documented_commands_use_existing_options():
    known = commands()
    checked, wrong = 0, []
    for where, name, args in _documented_commands():
        if name not in known:
            continue
        flags = _flags(known[name]) | {o for p in known[name].params for o in getattr(p, "secondary_opts", [])}
        checked += 1
        for token in args.split():
            flag = token.split("=")[0].rstrip(",.;:)")
            if flag.startswith("--") and len(flag) > 2 and flag not in flags:
                wrong.append(f"{where}: surgeon {name} {flag}")
    assert checked > 50
    assert not wrong, f"options that do not exist: {wrong}"


def test_every_data_option_has_one_default():
    """--data defaults to digits wherever it takes labelled data (eval and lesion-study required it
    while every other command defaulted to digits); probe takes unlabelled images too and defaults to
    its built-in photos."""
    defaults = {name: p.default for name, cmd in commands().items() for p in cmd.params if "--data" in p.opts}
    assert len(defaults) >= 10 and defaults.pop("probe") is None
    assert set(defaults.values()) == {"digits"}, defaults
