"""Every ```python and ```bash block of README.md runs as written.

How each block runs:

- a ``python`` block is written to ``block.py`` and run by the venv's python in a fresh folder, as
  a user who pastes it into a script runs it (so a missing ``if __name__ == "__main__":`` guard
  before spawned workers fails here as it fails there);
- a ``bash`` block runs command by command: ``surgeon ...`` in this process through typer's
  CliRunner on the installed app (20+ cold starts of torch would not fit the CI budget; exit code
  0 is required, ``> FILE`` is honoured), ``python ...`` as a subprocess; any other program must
  be listed in NOT_IN_CI;
- every block runs in its own folder holding the files the README's examples read (STAND_INS:
  random-init models and weights standing for the user's trained files, made on first use), with
  ``recipes/``, ``bench/``, ``examples/`` linked in and HOME pointing at a folder whose
  ``~/imagenet/train`` and ``~/imagenet/val`` are tiny generated ImageFolder trees;
- SUBSTITUTIONS rewrite what CI cannot afford (data that cannot be downloaded, budgets of minutes),
  each with its reason; NOT_IN_CI lists the commands that cannot run on a 2-core CPU machine
  without data, with the reason and the test that covers the same code instead. A command that
  no rule runs fails the test, so a new README block is run too.

A block opts out only with a line ``# readme-test: skip (reason)``; it is reported as skipped with
that reason.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TIMEOUT = 300  # seconds per python block (a hang fails instead of stalling CI)

#: (pattern, replacement, reason), applied in order to the text of every block.
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (r"cifar(10|100):~/data", "digits", "CIFAR cannot be downloaded in CI: scikit-learn's bundled digits stand in"),
    (r"recipes/digits_buildup\.toml", "ci_buildup.toml",
     "the digits search takes a minute: the same recipe on 10% of the digits, one seed, stage c3 only"),
    (r'recipe=recipe, out="r18', 'recipe=recipe, subset=0.1, out="r18', "10 epochs of digits take a minute: 2 on 10%"),
    (r'"digits", epochs=5\)', '"digits", epochs=1)', "the same: 2 epochs"),
    (r"--recipe digits --out", "--recipe digits --epochs 1 --subset 0.1 --out", "the same, on the command line"),
    (r'load_model\("resnet18", num_classes=10, weights="r18_cifar10', 'load_model("test_resnet", num_classes=10, weights="r18_cifar10',
     "Hessians of a ResNet-18 take minutes on 2 cores: timm's test_resnet (its stand-in weights)"),
    (r"surgeon (hessian|landscape) resnet18", r"surgeon \1 test_resnet", "the same on the command line"),
    (r"test_resnet vit_tiny_patch16_224", "test_resnet test_vit", "the same for the ViT (its stand-in weights)"),
    (r"train=True, batch_size=64,", "train=True, batch_size=8,", "the same: batch 8"),
    (r'k=5, which="LM"', 'k=2, which="LM"', "5 eigenvalues: 2"),
    (r'k=3, which="SA"', 'k=1, which="SA"', "3 eigenvalues: 1"),
    (r'k=5, blocks="c4.b-1"', 'k=1, blocks="c4.b-1"', "5 eigenvalues: 1"),
    (r'k=5, solver=Solver\(method="power"\)', 'k=1, solver=Solver(method="power")', "power iteration with deflation: 1 eigenvalue"),
    (r"k=5, batches=20\)", "k=1, batches=1)", "20 Lanczos solves of 5 eigenvalues: one of 1"),
    (r"hessian_trace\(model, \(x, y\)\)", "hessian_trace(model, (x, y), matvecs=12)", "60 products: 12"),
    (r"hessian_density\(model, \(x, y\)\)", "hessian_density(model, (x, y), vectors=1, solver=surgeon.analysis.Solver(max_iter=10))", "90 products: 10"),
    (r'Lattice\(grid=21, span=1, norm="filter"\)', 'Lattice(grid=3, span=1, norm="filter")',
     "441 landscape points take minutes: 9"),
    (r'lattice=lattice, batches=4', 'lattice=lattice, batches=1',
     "441 landscape points over 4 batches take minutes: 9 over 1"),
    (r"--batches 8 --out", "--batches 1 --out", "8 Lanczos solves: one"),
    (r"--grid 21", "--grid 3", "441 landscape points: 9"),
    (r"--top-k 5 --which LM", "--top-k 2 --which LM --batches 1 --batch-size 8 --input-size 3,32,32 --matvecs 12",
     "two models x 5 eigenvalues x 4 batches of 64 at 160 px, with trace and density: 2 eigenvalues, one batch of 8 "
     "at 32 px, a trace of 12 products"),
    (r"--batches 20 --out fig8", "--batches 1 --out fig8", "one batch of the stand-in images"),
    (r"surgeon hessian resnet50 --weights r50\.pth ([^\n#]*)--top-k 3",
     r"surgeon hessian test_resnet --weights r18.pth \1--top-k 1 --input-size 3,32,32 --batch-size 8 --batches 1",
     "the most negative eigenvalues of a ResNet-50 block over 4 batches take many minutes: timm's test_resnet "
     "(its stand-in weights), one eigenvalue, 32 px, batch 8, one batch"),
    (r"corruption_robustness\(model, test\)", 'corruption_robustness(model, test, ["fog", "contrast"], [1, 5])',
     "12 corruptions x 5 severities: 2 x 2"),
    (r"--out robustness\.png", "-c fog,contrast -s 1,5 --out robustness.png", "the same, on the command line"),
    (r"--data ~/imagenet/val --subset 0\.1", "--data ~/imagenet/val", "the stand-in folder has 8 images"),
    (r"--data digits --out lesions\.png", "--data digits --batches 1 --batch-size 16 --out lesions.png",
     "a lesion study evaluates the whole test split once per block: one batch of 16"),
    (r"(frequency-noise r18\.safetensors vit\.safetensors --data digits)", r"\1 --batches 2",
     "nine bands x two models over the whole digits test split take half a minute: 2 batches per band"),
]

#: (pattern of a command or Python line, reason): lines that cannot run in CI.
NOT_IN_CI: list[tuple[str, str]] = [
    (r"^make (demo|test)\b", "sets up .venv and runs the whole suite: what CI itself runs"),
    (r"^make bench-|^python bench/\w+_speed\.py", "benchmarks take minutes; bench/RESULTS.md records their output"),
    (r"^torchrun ", "DDP over processes: tests/test_training.py runs 2 gloo processes against one"),
    (r"--resume +# after Ctrl-C", "continues an interrupted run: resume is tested bit for bit in tests/test_training.py"),
    (r"alternet\.safetensors[\"']?,? (--data )?[\"']?digits[\"']?,? (--)?recipe[ =][\"']?strong",
     "trains a ResNet-50-sized AlterNet at 224 px with the 305-epoch strong recipe: GPU work"),
    (r"imagenet/train", "trains a ResNet-50 on ImageNet: GPU work"),
    (r"alternet50_cifar100\.toml", "the paper's search: GPU hours"),
    (r"CIFAR-10{1,2}-C|ImageNet-C", "needs the released corruption files; tests/test_robustness.py reads generated ones"),
]

#: files the README's examples read, made on first use: name -> (how, model name, constructor arguments).
STAND_INS: dict[str, tuple[str, str, dict]] = {
    "alternet.safetensors": ("alternet", "resnet50", {}),
    "r18.safetensors": ("trained", "resnet18", {}),  # one epoch on 10% of digits: it records 32 px, as a trained file does
    "vit.safetensors": ("trained", "vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}),
    "resnet50.safetensors": ("state_dict", "resnet50", {}),
    "r18_cifar10.safetensors": ("state_dict", "test_resnet", {"num_classes": 10}),  # see SUBSTITUTIONS
    "r50.pth": ("state_dict", "resnet50", {}),
    "my_resnet50.pth": ("state_dict", "resnet50", {"num_classes": 100}),
    "vit_ti.pth": ("state_dict", "vit_tiny_patch16_224", {}),
    "vit.pth": ("state_dict", "test_vit", {}),  # see SUBSTITUTIONS
    "r18.pth": ("state_dict", "test_resnet", {}),
    "my_images": ("images", "", {}),
    "ci_buildup.toml": ("recipe", "", {}),
}

SKIP_MARK = re.compile(r"#\s*readme-test:\s*skip\s*\((.+)\)")


def readme_blocks() -> list[tuple[str, str, str]]:
    """(id, language, text) of every python and bash block, the id naming its line and heading."""
    blocks, heading, lang, start, lines = [], "top", None, 0, []
    for n, line in enumerate(README.read_text().splitlines(), 1):
        fence = re.match(r"\s*```(\w*)\s*$", line)
        if lang is None and line.startswith("#"):
            heading = re.sub(r"[^a-z0-9]+", "-", line.lstrip("#").strip().lower()).strip("-")[:30]
        if fence and lang is None:
            lang, start, lines = fence.group(1), n, []
        elif fence:
            if lang in ("python", "bash"):
                blocks.append((f"L{start}-{heading}", lang, "\n".join(lines)))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def substituted(text: str) -> str:
    for pattern, replacement, _ in SUBSTITUTIONS:
        text = re.sub(pattern, replacement, text)
    return text


def not_in_ci(line: str) -> str | None:
    return next((why for pattern, why in NOT_IN_CI if re.search(pattern, line)), None)


# ----------------------------------------------------------------------------------------------
# Stand-ins


def _images(folder: Path, classes: int = 2, per_class: int = 4) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"class{c}" / f"{i}.png")


def _make(path: Path, how: str, model: str, kwargs: dict) -> None:
    import surgeon
    import torch

    if how == "images":
        _images(path)
    elif how == "recipe":
        text = (ROOT / "recipes" / "digits_buildup.toml").read_text()
        text = text.replace('train = "digits"', 'train = "digits"\nsubset = 0.1').replace("repeats = [0, 1]", "repeats = [0]")
        path.write_text(text.replace('stages = ["c2", "c3"]', 'stages = ["c3"]'))
    elif how == "alternet":
        surgeon.save(surgeon.alternate(surgeon.load_model(model), stages={"c2": 1, "c3": 1}), path)
    elif how == "trained":
        surgeon.train(model, "digits", recipe=surgeon.training.recipe_with("digits", epochs=1), subset=0.1, out=path,
                      **kwargs)
    else:
        import timm
        from safetensors.torch import save_file

        state = timm.create_model(model, **kwargs).state_dict()
        save_file(state, str(path)) if path.suffix == ".safetensors" else torch.save(state, path)


@pytest.fixture(scope="session")
def stand_ins(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    _images(home / "imagenet" / "val")
    for c in range(2, 1000):  # ImageNet's 1000 classes (images in two): an ImageNet model's labels mean its classes
        (home / "imagenet" / "val" / f"class{c}").mkdir()
    (home / "files").mkdir()
    return home


def _folder(tmp_path: Path, home: Path, text: str) -> Path:
    """The block's own folder: the stand-ins it reads (made once) and the repository's folders."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("recipes", "bench", "examples"):
        (work / name).symlink_to(ROOT / name)
    _link_stand_ins(work, home, text)
    return work


def _link_stand_ins(work: Path, home: Path, text: str) -> None:
    """Link into `work` the stand-ins `text` reads, unless it writes them or an earlier block did."""
    written = set(re.findall(r"(?:--out|--save|--json|out=|save=|\.save\([^,]+,)\s*[\"']?([\w./-]+)", text))
    for name, (how, model, kwargs) in STAND_INS.items():
        if (re.search(rf"(?:(?<=\s\./)|(?<![\w/])){re.escape(name)}", text) and name not in written
                and not (work / name).exists()):
            made = home / "files" / name
            if not made.exists():
                _make(made, how, model, kwargs)
            (work / name).symlink_to(made)


# ----------------------------------------------------------------------------------------------
# Runners


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
            "COLUMNS": "160"}


#: how a refusal to overwrite names its way out, on the command line and in Python
#: (run_bash calls the app, not the entry point `main` that turns ``overwrite=True`` into ``--force``:
#: tests/test_conventions.py tests that translation)
REFUSES_OVERWRITE = {"bash": re.compile(r"--force\b|--resume\b|overwrite=True|resume=True"),
                     "python": re.compile(r"overwrite=True|resume=True")}


def _refused_overwrite(output: str, again: bool, lang: str = "bash") -> bool:
    """On a second run, a block may stop at an output its first run wrote: a one-line refusal that
    names the way to overwrite or resume in the block's own language (a flag on the command line, an
    argument in Python) is the right answer there, not a failure."""
    return again and bool(REFUSES_OVERWRITE[lang].search(output[-2000:]))


def run_python(text: str, work: Path, home: Path, again: bool = False) -> None:
    lines = [f"pass  # not in CI: {why}" if (why := not_in_ci(line)) else line for line in text.splitlines()]
    (work / "block.py").write_text("\n".join(lines) + "\n")
    r = subprocess.run([sys.executable, "block.py"], cwd=work, env=_env(home), capture_output=True, text=True,
                       timeout=TIMEOUT, check=False)
    assert r.returncode == 0 or _refused_overwrite(r.stderr, again, "python"), (
        f"the block failed:\n{(work / 'block.py').read_text()}\n{r.stderr[-3000:]}")


def commands(text: str) -> list[str]:
    """The command lines of a bash block: continuations joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if shlex.split(line, comments=True)]


def run_bash(text: str, work: Path, home: Path, monkeypatch: pytest.MonkeyPatch, again: bool = False) -> list[str]:
    """Run the block's commands; returns the reasons of those that cannot run in CI."""
    from typer.testing import CliRunner

    from surgeon.cli.main import app

    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("COLUMNS", "160")
    skipped = []
    for line in commands(text):
        if why := not_in_ci(line):
            skipped.append(f"{line}: {why}")
            continue
        words = shlex.split(line, comments=True)
        target = None
        if ">" in words:
            words, target = words[: words.index(">")], words[words.index(">") + 1]
        if words[0] == "surgeon":
            r = CliRunner().invoke(app, words[1:], catch_exceptions=True)
            if _refused_overwrite(f"{r.output}{r.exception}", again):
                continue
            assert r.exit_code == 0 and r.exception is None or isinstance(r.exception, SystemExit) and not r.exit_code, (
                f"{line}\nexit {r.exit_code}: {r.output[-2000:]}\n{r.exception!r}")
            if target:
                (work / target).write_text(r.stdout)
        elif words[0] == "python":
            done = subprocess.run([sys.executable, *words[1:]], cwd=work, env=_env(home), capture_output=True,
                                  text=True, timeout=TIMEOUT, check=False)
            assert done.returncode == 0 or _refused_overwrite(done.stderr, again, "python"), f"{line}\n{done.stderr[-2000:]}"
        else:
            raise AssertionError(f"{line}: no way to run {words[0]!r} in CI; list it in NOT_IN_CI with the reason")
    return skipped


# ----------------------------------------------------------------------------------------------


BLOCKS = readme_blocks()


def test_readme_has_blocks_and_every_rule_still_applies():
    """The extraction finds the README's blocks, and no substitution or exclusion is stale."""
    assert len(BLOCKS) >= 15 and {lang for _, lang, _ in BLOCKS} == {"python", "bash"}
    text, stale = "\n".join(t for _, _, t in BLOCKS), []
    for pattern, replacement, _ in SUBSTITUTIONS:  # in order: a rule may rewrite what an earlier one wrote
        stale += [] if re.search(pattern, text) else [pattern]
        text = re.sub(pattern, replacement, text)
    stale += [p for p, _ in NOT_IN_CI if not any(re.search(p, line) for line in text.splitlines())]
    assert not stale, f"rules that match no README line any more (remove them): {stale}"


@pytest.mark.parametrize("lang, text", [(lang, text) for _, lang, text in BLOCKS], ids=[i for i, _, _ in BLOCKS])
def test_readme_block_runs(lang, text, tmp_path, stand_ins, monkeypatch):
    if mark := SKIP_MARK.search(text):
        pytest.skip(f"marked in the README: {mark.group(1)}")
    text = substituted(text)
    work = _folder(tmp_path, stand_ins, text)
    if lang == "python":
        run_python(text, work, stand_ins)
        return
    skipped = run_bash(text, work, stand_ins, monkeypatch)
    if skipped and len(skipped) == len(commands(text)):
        pytest.skip("not in CI: " + "; ".join(skipped))


BLOCK_SECONDS = 60  # no README block may keep a newcomer waiting longer on 2 cores (with SUBSTITUTIONS)


@pytest.mark.slow
def test_readme_in_order_in_one_folder_twice(tmp_path, stand_ins, monkeypatch):
    """The README as a newcomer runs it: every block in order, in one folder (a block reads what an
    earlier one wrote), then all of them again (a second run either succeeds or refuses to overwrite
    in one line that names --force / overwrite=True); no block over BLOCK_SECONDS."""
    import time

    work = tmp_path / "work"
    work.mkdir()
    for name in ("recipes", "bench", "examples"):
        (work / name).symlink_to(ROOT / name)
    slow, failed = [], []
    for again in (False, True):
        for block_id, lang, text in BLOCKS:
            if SKIP_MARK.search(text):
                continue
            text = substituted(text)
            _link_stand_ins(work, stand_ins, text)
            start = time.perf_counter()
            try:
                if lang == "python":
                    run_python(text, work, stand_ins, again=again)
                else:
                    run_bash(text, work, stand_ins, monkeypatch, again=again)
            except AssertionError as exc:  # every block runs: one report of all that fail
                failed.append(f"{'second' if again else 'first'} run of {block_id}: {str(exc)[:1500]}")
            if (seconds := time.perf_counter() - start) > BLOCK_SECONDS:
                slow.append(f"{block_id} ({seconds:.0f} s)")
    assert not failed, "\n\n".join(failed)
    assert not slow, f"README blocks over {BLOCK_SECONDS} s: {slow}"
