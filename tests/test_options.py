"""Options objects (issue 19 item 7): every library function over 8 parameters in 0.1 now takes its
settings through a frozen, range-checked dataclass. 0.1's keywords still work for one release: the
same numbers as the new form, computed in this process, with one SurgeonDeprecationWarning naming
the new form (pyproject's filterwarnings turns any other such warning into a failure)."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import surgeon
from surgeon.analysis import Lattice, Objective, Solver
from surgeon.core.errors import SurgeonDeprecationWarning, SurgeonError
from surgeon.data import Sampling
from surgeon.evaluation import Attack, CorruptionSource, PerturbationSource
from surgeon.evaluation.adversarial import fgsm, pgd
from surgeon.parallel import Run
from surgeon.training.recipe import recipe_with

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _data():
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(2)]
    return surgeon.data.normalised(batches, MEAN, STD)


def _pixels():
    g = torch.Generator().manual_seed(2)
    return torch.rand(4, 3, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)


def _search(tmp_path: Path, folder: str, **kwargs):
    from test_search import TINY, paper_stub, write

    spec = write(tmp_path, TINY + 'stages = ["c4"]\nmax_msa = 1\n')
    return [(r["name"], r["accepted"]) for r in surgeon.run_search(spec, tmp_path / folder, evaluator=paper_stub,
                                                                   **kwargs).records]


def _compare(tmp_path: Path, folder: str, models, **kwargs):
    tiny = surgeon.comparison.Settings(batch_size=8, probe_batches=1)
    settings = kwargs.pop("settings", tiny)
    return surgeon.compare(models, "digits", tmp_path / folder, measures=["variance"], num_classes=10,
                           settings=settings, **kwargs).results


def _train(**kwargs):
    run = surgeon.train("test_resnet", "digits", subset=0.05, val="none", **kwargs)
    return [p.detach().clone() for p in run.model.parameters()]


#: function -> (0.1's call, the new call, the warning's message): both calls give the same value.
CASES = {
    "pgd": (lambda t: pgd(_tiny(), *_pixels(), 0.05, alpha=0.02, steps=2, random_start=False,
                                  normalisation=(MEAN, STD)),
            lambda t: pgd(_tiny(), *_pixels(), 0.05, attack=Attack(alpha=0.02, steps=2, random_start=False),
                          normalisation=(MEAN, STD)),
            r"pgd\(alpha=, steps=, random_start=\) is deprecated; pass attack=Attack\(alpha=0.02, steps=2, "),
    "fgsm": (lambda t: fgsm(_tiny(), *_pixels(), 0.05, mean=MEAN, std=STD),
             lambda t: fgsm(_tiny(), *_pixels(), 0.05, normalisation=(MEAN, STD)),
             r"fgsm\(mean=, std=\) is deprecated; pass normalisation=\(mean, std\)"),
    "adversarial_robustness": (
        lambda t: surgeon.adversarial_robustness(_tiny(), _data(), "pgd", [0.01], steps=2, alpha=0.01).to_dict(),
        lambda t: surgeon.adversarial_robustness(_tiny(), _data(), Attack("pgd", steps=2, alpha=0.01), [0.01]).to_dict(),
        r"adversarial_robustness\(alpha=, steps=\) is deprecated; pass attack=Attack\('pgd', ...\)"),
    "corruption_robustness": (
        lambda t: surgeon.corruption_robustness(_tiny(), _data(), ["fog"], [1], preset="cifar").to_dict(),
        lambda t: surgeon.corruption_robustness(_tiny(), _data(), ["fog"], [1], source=CorruptionSource("cifar"),
                                                run=Run()).to_dict(),
        r"corruption_robustness\(preset=\) is deprecated; pass source=CorruptionSource\(preset='cifar'\)"),
    "frequency_noise_robustness": (
        lambda t: surgeon.frequency_noise_robustness(_tiny(), _data(), [0.5], progress=False).to_dict(),
        lambda t: surgeon.frequency_noise_robustness(_tiny(), _data(), [0.5], run=Run()).to_dict(),
        r"frequency_noise_robustness\(progress=\) is deprecated; pass run=Run\(progress=False\)"),
    "perturbation_stability": (
        lambda t: surgeon.perturbation_stability(_tiny(), _data(), ["translate"], input_size=(3, 8, 8)).to_dict(),
        lambda t: surgeon.perturbation_stability(_tiny(), _data(), ["translate"],
                                                 source=PerturbationSource(input_size=(3, 8, 8))).to_dict(),
        r"perturbation_stability\(input_size=\) is deprecated; pass source=PerturbationSource\(input_size=\(3, 8, 8\)\)"),
    "evaluate": (lambda t: surgeon.evaluate(_tiny(), _data(), label="mine").to_dict(),
                 lambda t: surgeon.evaluate(_tiny(), _data()).to_dict(),
                 r"evaluate\(label=\) is deprecated; pass progress=LABEL"),
    "hessian_eigs": (
        lambda t: surgeon.hessian_eigs(_tiny(), _pixels(), k=2, tol=1e-6, max_iter=50, mode="double-backward").eigenvalues,
        lambda t: surgeon.hessian_eigs(_tiny(), _pixels(), k=2, solver=Solver(tol=1e-6, max_iter=50)).eigenvalues,
        r"hessian_eigs\(tol=, max_iter=, mode=\) is deprecated; pass solver=Solver\(tol=1e-06, max_iter=50, "),
    "hessian_density": (
        lambda t: surgeon.hessian_density(_tiny(), _pixels(), vectors=1, steps=5).nodes,
        lambda t: surgeon.hessian_density(_tiny(), _pixels(), vectors=1, solver=Solver(max_iter=5)).nodes,
        r"hessian_density\(steps=\) is deprecated; pass solver=Solver\(max_iter=5\)"),
    "hessian_spectrum": (
        lambda t: surgeon.hessian_spectrum(_tiny(), [_pixels()], k=1, batches=1, tol=1e-6).eigenvalues,
        lambda t: surgeon.hessian_spectrum(_tiny(), [_pixels()], k=1, batches=1, solver=Solver(tol=1e-6),
                                           run=Run()).eigenvalues,
        r"hessian_spectrum\(tol=\) is deprecated; pass solver=Solver\(tol=1e-06\)"),
    "landscape": (lambda t: surgeon.landscape(_tiny(), [_pixels()], dims=1, grid=3, span=0.5).loss,
                  lambda t: surgeon.landscape(_tiny(), [_pixels()], lattice=Lattice(dims=1, grid=3, span=0.5)).loss,
                  r"landscape\(dims=, grid=, span=\) is deprecated; pass lattice=Lattice\(dims=1, grid=3, span=0.5\)"),
    "loader": (lambda t: next(iter(surgeon.data.loader("digits", batch_size=4, shuffle=True, seed=3)))[1],
               lambda t: next(iter(surgeon.data.loader("digits", batch_size=4, sampling=Sampling(shuffle=True, seed=3),
                                                       run=Run(workers=0))))[1],
               r"loader\(shuffle=, seed=\) is deprecated; pass sampling=Sampling\(shuffle=True, seed=3\)"),
    "train": (lambda t: _train(recipe="digits", epochs=1, input_size=(3, 16, 16)),
              lambda t: _train(recipe=recipe_with("digits", epochs=1, input_size=(3, 16, 16)), run=Run()),
              r"train\(epochs=, input_size=\) is deprecated; pass recipe=surgeon.training.recipe_with"),
    "run_search": (lambda t: _search(t, "old", workers=1),
                   lambda t: _search(t, "new", run=Run(executor=surgeon.parallel.executor("local"))),
                   r"run_search\(workers=\) is deprecated; pass run=Run\(executor=surgeon.parallel.executor"),
    "compare": (lambda t: _compare(t, "old", ["test_resnet", "test_vit"], labels=["a", "b"], input_size=(3, 32, 32)),
                lambda t: _compare(t, "new", {"a": "test_resnet", "b": "test_vit"},
                                   settings=surgeon.comparison.Settings(batch_size=8, probe_batches=1,
                                                                        input_size=(3, 32, 32))),
                r"compare\(labels=, input_size=\) is deprecated; pass settings=QUICK.replace"),
}


def _same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, list) and a and isinstance(a[0], torch.Tensor):
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    else:
        assert a == b


@pytest.mark.parametrize("name", CASES)
def test_old_keywords_give_the_new_objects_result_with_a_deprecation_warning(name, tmp_path):
    """0.1's keywords and the options object compute the same thing in this process; the old form
    warns once, naming the new one. A check that can fail: the new form changes the result when
    the options object changes (`test_an_options_object_reaches_the_computation`)."""
    old, new, message = CASES[name]
    with pytest.warns(SurgeonDeprecationWarning, match=message):
        got = old(tmp_path)
    _same(got, new(tmp_path))


@pytest.mark.parametrize("call", [
    lambda: surgeon.hessian_eigs(_tiny(), _pixels(), k=1, solver=Solver(), tol=1e-3),
    lambda: surgeon.landscape(_tiny(), [_pixels()], lattice=Lattice(), grid=3),
    lambda: pgd(_tiny(), *_pixels(), 0.1, attack=Attack(), steps=3),
    lambda: surgeon.data.loader("digits", sampling=Sampling(), shuffle=True),
])
def test_both_forms_at_once_are_refused(call):
    with pytest.raises(SurgeonError, match="not both"):
        call()


def test_an_options_object_reaches_the_computation():
    x, y = _pixels()
    a = pgd(_tiny(), x, y, 0.05, attack=Attack(steps=1, random_start=False), normalisation=(MEAN, STD))
    b = pgd(_tiny(), x, y, 0.05, attack=Attack(steps=3, random_start=False), normalisation=(MEAN, STD))
    assert not torch.equal(a, b)
    one = surgeon.landscape(_tiny(), [(x, y)], lattice=Lattice(dims=1, grid=3, span=0.5)).loss
    two = surgeon.landscape(_tiny(), [(x, y)], lattice=Lattice(dims=1, grid=3, span=0.25)).loss
    assert one[1] == pytest.approx(two[1]) and not np.allclose(one, two)  # the centre is the same weights


@pytest.mark.parametrize("build, message", [
    (lambda: Attack(steps=0), r"steps=0 is out of range; give an integer in \[1, 1000\]"),
    (lambda: Attack(alpha=2.0), r"alpha=2.0 is out of range"),
    (lambda: Attack("cw"), "unknown attack 'cw'"),
    (lambda: Solver(tol=0.0), r"tol=0.0 is out of range"),
    (lambda: Solver(max_iter=0), r"max_iter=0 is out of range"),
    (lambda: Solver(method="arnoldi"), "unknown method 'arnoldi'"),
    (lambda: Solver(mode="reverse"), "unknown HVP mode 'reverse'"),
    (lambda: Lattice(grid=1), r"grid=1 is out of range; give an integer in \[2, 1001\]"),
    (lambda: Lattice(dims=3), r"dims=3 is out of range"),
    (lambda: Lattice(span=0.0), r"span=0.0 is out of range"),
    (lambda: Lattice(norm="layer"), "unknown direction norm 'layer'"),
    (lambda: Sampling(subset=0.0), r"subset=0.0 is out of range"),
    (lambda: Sampling(seed=-1), r"seed=-1 is out of range"),
    (lambda: CorruptionSource(preset="tiny"), "preset 'tiny' is unknown"),
    (lambda: CorruptionSource(cifar_c="a", imagenet_c="b"), "not both"),
    (lambda: PerturbationSource(batch_size=0), r"batch_size=0 is out of range"),
    (lambda: Run(workers=-1), r"workers=-1 is out of range"),
    (lambda: Run(snapshots=-1), r"snapshots=-1 is out of range"),
    (lambda: Run(executor="ray"), "is not an Executor"),
    (lambda: Run(progress=1), "progress=1 must be True or False"),
    (lambda: surgeon.comparison.Settings(hessian_k=0), r"k=0 is out of range"),
    (lambda: Objective(wd=-1.0), r"wd=-1.0 is out of range"),
])
def test_options_objects_check_their_ranges_on_construction(build, message):
    """The ranges are `surgeon.core.checks.ARGS`', the table the CLI's options use."""
    with pytest.raises(SurgeonError, match=message):
        build()


@pytest.mark.parametrize("call, message", [
    (lambda: surgeon.landscape(_tiny(), [_pixels()], run=Run(resume=True)), r"landscape has no use for run.resume"),
    (lambda: surgeon.data.loader("digits", run=Run(progress=True)), r"loader has no use for run.progress"),
    (lambda: surgeon.corruption_robustness(_tiny(), _data(), run=Run(workers=2)), "has no use for run.workers"),
])
def test_a_run_setting_a_function_does_not_use_is_refused(call, message):
    with pytest.raises(SurgeonError, match=message):
        call()


def test_options_objects_are_frozen_and_exported_where_users_find_them():
    for cls in (Attack, CorruptionSource, PerturbationSource, Solver, Lattice, Sampling, Run, Objective,
                surgeon.comparison.Settings):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cls(), dataclasses.fields(cls)[0].name, None)
    assert surgeon.evaluation.Attack is Attack and surgeon.analysis.Solver is Solver and surgeon.data.Sampling is Sampling
    assert surgeon.parallel.Run is Run and surgeon.comparison.QUICK.replace(batch_size=8).batch_size == 8


def test_the_suite_does_not_hide_deprecation_warnings():
    """pyproject's filterwarnings turns a SurgeonDeprecationWarning into an error (an old form in a
    test or example fails) and ignores none."""
    rules = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert "error::surgeon.core.errors.SurgeonDeprecationWarning" in rules
    assert not any(r.startswith("ignore") and "Deprecation" in r for r in rules)
