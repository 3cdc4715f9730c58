"""A model is used at the input size it records (issue 12, item 1): every consumer of a trained
surgeon file (the data transforms, the block graph, training, searches and every command that takes
--input-size) defaults to the size the file records, says which size it used, and an explicit
--input-size still wins.

The size a consumer really fed is observed independently of its code: a global forward pre-hook
records the input of the top-level ResNet whenever anything calls it."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import invoke

import surgeon
from surgeon.model.sizes import default_input_size, input_size_of, resolve_input_size

RECORDED = (3, 24, 24)  # the training size; resnet10t's own default is 176 px


#: the digits recipe cut to one epoch (epochs=0 is refused: it would train the warmup epoch alone)
ONE_EPOCH = surgeon.training.recipe.training_recipe("digits", warmup_epochs=0, epochs=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny resnet10t trained on digits at 24 px, saved as a surgeon file."""
    out = tmp_path_factory.mktemp("trained") / "r10.safetensors"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        surgeon.train("resnet10t", "digits", recipe=surgeon.training.recipe_with(ONE_EPOCH, input_size=RECORDED), subset=0.1, val="none", out=out, channels=(8, 16, 32, 64), layers=(1, 1, 1, 2))
    finally:
        torch.set_num_threads(threads)
    return out


@contextlib.contextmanager
def fed_sizes():
    """The (C, H, W) of every input a ResNet's forward receives inside the block."""
    sizes: list[tuple[int, ...]] = []

    def hook(module, args):
        if type(module).__name__ == "ResNet" and args and torch.is_tensor(args[0]):
            sizes.append(tuple(args[0].shape[1:]))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield sizes
    finally:
        handle.remove()


def test_the_file_records_its_size_and_the_architecture_default_differs(trained):
    model = surgeon.load(trained)
    assert default_input_size(model) == (3, 176, 176)  # what eval fed before the fix
    assert resolve_input_size(model) == (RECORDED, "trained")
    assert input_size_of(model, (3, 32, 32)) == (3, 32, 32)  # given wins
    assert surgeon.read_cfg(trained).training["input_size"] == list(RECORDED)


def test_api_consumers_use_the_recorded_size(trained):
    model = surgeon.load(trained)
    x, _ = next(iter(surgeon.data.loader("digits", model, batch_size=4)))
    assert tuple(x.shape[1:]) == RECORDED
    x, _ = next(iter(surgeon.data.loader("digits", model, batch_size=4, input_size=(3, 32, 32))))
    assert tuple(x.shape[1:]) == (3, 32, 32)
    image = surgeon.data.dataset("digits")[0][0]
    assert tuple(surgeon.data.eval_transform(model)(image).shape) == RECORDED
    assert tuple(surgeon.data.train_transform(model, padding=4)(image).shape) == RECORDED
    assert tuple(surgeon.data.train_transform(model, padding=None)(image).shape) == RECORDED
    assert surgeon.graph(model).input_size == RECORDED


def test_an_edited_model_keeps_the_size_it_was_edited_at():
    model = surgeon.surgery.alternet.cifar_stem(surgeon.load_model("resnet10t", num_classes=10), input_size=(3, 32, 32))
    assert resolve_input_size(model) == ((3, 32, 32), "edited")
    x, _ = next(iter(surgeon.data.loader("digits", model, batch_size=2)))
    assert tuple(x.shape[1:]) == (3, 32, 32)


def test_retraining_and_searching_a_file_use_its_size(trained, tmp_path):
    with fed_sizes() as sizes:
        recipe = dataclasses.replace(ONE_EPOCH, input_size=None)  # no size of its own
        run = surgeon.train(str(trained), "digits", recipe=recipe, subset=0.1, val="none")
    assert set(sizes) == {RECORDED} and run.model.surgeon_cfg.training["input_size"] == list(RECORDED)
    recipe = tmp_path / "s.toml"
    recipe.write_text(f'[model]\nname = "{trained}"\n[data]\ntrain = "digits"\n'
                      '[train]\nrecipe = "weak"\nepochs = 1\n[search]\nmetric = "acc"\n')  # weak: no size of its own
    assert surgeon.search.Search(surgeon.search.search_spec(recipe)).input_size == RECORDED


def _commands(file: str, tmp: Path) -> dict[str, list[str]]:
    """A small run of every command that consumes a model file, by command name."""
    small = ["--batches", "1", "--batch-size", "8"]
    return {
        "eval": ["eval", file, "--data", "digits", *small],
        "lesion-study": ["lesion-study", file, "--data", "digits", "-b", "c4.b1", *small],
        "probe": ["probe", "fourier", file, "--data", "digits", "--batches", "1", "--batch-size", "4"],
        "hessian": ["hessian", file, "--data", "digits", "--top-k", "1", "--tol", "0.5", *small],
        "landscape": ["landscape", file, "--data", "digits", "--grid", "3", "--dims", "1", "--batch-size", "8",
                      "--save", str(tmp / "l.json")],
        "robustness": ["robustness", file, "--data", "digits", "-c", "gaussian_noise", "-s", "1", *small],
        "frequency-noise": ["frequency-noise", file, "--data", "digits", "-f", "0.5", *small],
        "attack": ["attack", file, "--data", "digits", *small],
        "inspect": ["inspect", file],
        "info": ["info", file],
        "lesion": ["lesion", file, "--blocks", "c4.b1", "--out", str(tmp / "lesioned.safetensors")],
        "replace": ["replace", file, "--blocks", "c4.b1", "--with", "identity", "--out", str(tmp / "r.safetensors")],
        "insert": ["insert", file, "--after", "c4.b1", "--block", "identity", "--out", str(tmp / "i.safetensors")],
        "alternate": ["alternate", file, "--stages", "c4", "--heads", "1", "--dim-head", "8",
                      "--out", str(tmp / "a.safetensors")],
    }


#: commands that say which size they used (the others show it in their block table's title)
SAYS_SIZE = {"eval", "lesion-study", "probe", "hessian", "landscape", "robustness", "frequency-noise", "attack"}


def _takes_input_size(command) -> bool:
    import click

    return any(isinstance(p, click.Option) and "--input-size" in p.opts for p in command.params)


def test_every_command_with_input_size_is_checked(tmp_path):
    """The class, not the instances: a command that takes --input-size must be in `_commands`."""
    import typer

    from surgeon.cli.main import app

    group = typer.main.get_command(app)
    taking = {name for name, cmd in group.commands.items() if _takes_input_size(cmd)} - {"train"}
    assert taking <= set(_commands("m.safetensors", tmp_path)), taking - set(_commands("m.safetensors", tmp_path))


@pytest.mark.parametrize("name", sorted(_commands("m.safetensors", Path("."))))
def test_every_command_uses_the_recorded_size(trained, tmp_path, name):
    args = _commands(str(trained), tmp_path)[name]
    with fed_sizes() as sizes:
        result = invoke(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert sizes and set(sizes) == {RECORDED}, (name, set(sizes))
    if name in SAYS_SIZE:
        assert f"input 3x24x24 (the size it was trained at, recorded in {trained})" in result.output


@pytest.mark.parametrize("name", ["eval", "probe", "frequency-noise"])
def test_an_explicit_input_size_wins(trained, tmp_path, name):
    args = _commands(str(trained), tmp_path)[name] + ["--input-size", "3,32,32"]
    with fed_sizes() as sizes:
        result = invoke(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert set(sizes) == {(3, 32, 32)} and "input 3x32x32 (--input-size)" in result.output
