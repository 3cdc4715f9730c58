"""What a model or its file fixes is used, or the contradicting setting is refused (issue 18, items
2, 3 and 8): input size (channels included), classes, normalisation, a surgeon file given as weights,
encoders without a classifier, and grey (one-channel) models end to end."""

from __future__ import annotations

import pytest
import timm
import torch
from conftest import invoke

import surgeon
from surgeon.core.errors import SurgeonError

SIZE = (3, 24, 24)  # not the architecture's default: a wrong size shows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 10-class test_resnet trained (briefly) at 24 px: its file records that size."""
    path = tmp_path_factory.mktemp("m") / "r.safetensors"
    recipe = surgeon.training.recipe.training_recipe("digits")
    surgeon.train("test_resnet", "digits", recipe=surgeon.training.recipe_with(recipe, epochs=1, input_size=SIZE), subset=0.05, out=path)
    return path


def test_a_file_given_as_weights_is_used_at_its_trained_size(trained):
    model = surgeon.load_model("test_resnet", num_classes=10, weights=trained)
    assert surgeon.model.sizes.resolve_input_size(model) == (SIZE, "trained")
    x, _ = next(iter(surgeon.data.loader("digits", model, batch_size=2)))
    assert tuple(x.shape[1:]) == SIZE


@pytest.mark.parametrize("command", ["eval", "attack", "lesion-study", "hessian"])
@pytest.mark.parametrize("option", [("--num-classes", "5"), ("--num-classes", "100"), ("--img-size", "64")])
def test_options_contradicting_the_file_are_refused(trained, command, option):
    r = invoke(command, trained, *option, "--data", "digits")
    assert r.exit_code != 0 and isinstance(r.exception, SurgeonError), r.output
    assert "records" in str(r.exception) and "a saved model is used as saved" in str(r.exception)


@pytest.mark.parametrize("command", [("probe", "fourier"), ("eval",), ("hessian",)])
def test_channels_contradicting_the_model_are_refused(trained, command):
    r = invoke(*command, trained, "--input-size", "1,24,24", "--data", "digits")
    assert isinstance(r.exception, SurgeonError) and "has 1 channels but the model takes 3" in str(r.exception)


def test_a_model_of_other_classes_than_the_data_is_refused():
    r = invoke("eval", "test_resnet", "--data", "digits", "--input-size", "3,24,24")  # 1000 classes, digits 10
    assert isinstance(r.exception, SurgeonError) and "1000 classes but the data has 10" in str(r.exception)


@pytest.mark.parametrize("analysis", ["evaluate", "attack", "hessian", "landscape", "ensemble"])
def test_an_encoder_is_refused_by_class_based_analyses(analysis):
    enc = timm.create_model("test_resnet", num_classes=0)
    data = surgeon.data.loader("digits", enc, input_size=SIZE, batch_size=8)
    run = {"evaluate": lambda: surgeon.evaluate(enc, data, batches=1),
           "attack": lambda: surgeon.adversarial_robustness(enc, data, "fgsm", [0.01], batches=1),
           "hessian": lambda: surgeon.hessian_eigs(enc, next(iter(data)), k=1),
           "landscape": lambda: surgeon.landscape(enc, data, lattice=surgeon.analysis.Lattice(grid=3), batches=1),
           "ensemble": lambda: surgeon.ensemble([enc, enc])}[analysis]
    with pytest.raises(SurgeonError, match="no classifier"):
        run()


def test_an_attack_on_a_plain_iterable_needs_its_normalisation():
    """Pixels in [0, 1] declared as such: eps is in pixels, as with a loader (no assumed mean / std)."""
    torch.manual_seed(0)
    model = surgeon.load_model("test_resnet", num_classes=3)
    pix = [(torch.rand(4, *SIZE), torch.randint(0, 3, (4,)))]
    with pytest.raises(SurgeonError, match="surgeon.data.normalised"):
        surgeon.adversarial_robustness(model, pix, "fgsm", [0.01])
    res = surgeon.adversarial_robustness(model, surgeon.data.normalised(pix, (0, 0, 0), (1, 1, 1)), "fgsm", [0.0])
    with torch.no_grad():
        clean = (model(pix[0][0]).argmax(1) == pix[0][1]).float().mean().item()
    assert res.accuracy[0] == pytest.approx(clean)  # eps 0 in pixels: the clean accuracy


@pytest.fixture(scope="module")
def grey():
    torch.manual_seed(0)
    model = surgeon.load_model("test_resnet", num_classes=10, in_chans=1)
    return model, surgeon.data.loader("digits", model, input_size=(1, 24, 24), batch_size=16)


def test_a_grey_model_gets_grey_images(grey):
    model, data = grey
    assert surgeon.model.sizes.input_size_of(model)[0] == 1  # its stem's channels, not pretrained_cfg's 3
    x, _ = next(iter(data))
    rgb = surgeon.data.loader("digits", surgeon.load_model("test_resnet", num_classes=10), input_size=SIZE, batch_size=16)
    x3, _ = next(iter(rgb))
    assert x.shape[1] == 1 and x3.shape[1] == 3
    mean, std = surgeon.evaluation.pixels.pixel_normalisation(model, data)
    assert len(mean) == len(std) == 1
    m3, s3 = (torch.tensor(v).view(1, 3, 1, 1) for v in surgeon.evaluation.pixels.pixel_normalisation(None, rgb))
    pixels_grey, pixels_rgb = x[:, 0] * std[0] + mean[0], x3 * s3 + m3
    torch.testing.assert_close(pixels_grey, pixels_rgb.mean(1), atol=1e-5, rtol=0)  # the grey of the same pixels


@pytest.mark.parametrize("analysis", ["evaluate", "fgsm", "corruptions", "frequency_noise", "stability"])
def test_a_grey_model_runs_end_to_end(grey, analysis):
    model, data = grey
    run = {"evaluate": lambda: surgeon.evaluate(model, data, batches=1),
           "fgsm": lambda: surgeon.adversarial_robustness(model, data, "fgsm", [0.01], batches=1),
           "corruptions": lambda: surgeon.corruption_robustness(model, data, ["gaussian_noise"], [1], batches=1),
           "frequency_noise": lambda: surgeon.frequency_noise_robustness(model, data, [0.5], batches=1),
           "stability": lambda: surgeon.perturbation_stability(model, data, ["gaussian_noise"], batches=1)}[analysis]
    assert run() is not None


def test_four_channel_models_are_refused_in_one_line():
    model = surgeon.load_model("test_resnet", num_classes=10, in_chans=4)
    with pytest.raises(SurgeonError, match="4-channel images"):
        surgeon.data.loader("digits", model, input_size=(4, 24, 24))
