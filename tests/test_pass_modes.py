"""Every pass keeps the model's train/eval flags: the modules it builds take the mode of what they
replace, so an edited eval model is in eval mode everywhere (a block built in train mode inside an
eval model would normalise with batch statistics and drop out at inference, silently)."""

from __future__ import annotations

import pytest

import surgeon
from surgeon.surgery.alternet import cifar_stem

SIZE = (3, 32, 32)
PASSES = {
    "alternate": lambda m: surgeon.alternate(m, {"c3": 1}, input_size=SIZE),
    "replace": lambda m: surgeon.replace(m, "c3.b-1", "msa", input_size=SIZE),
    "insert": lambda m: surgeon.insert(m, "c2.b-1", "smoothing", input_size=SIZE),
    "remove": lambda m: surgeon.remove(m, "c3.b-1", input_size=SIZE),
    "cifar_stem": lambda m: cifar_stem(m, input_size=SIZE),
    "localize": lambda m: surgeon.localize(m, input_size=SIZE),
}


@pytest.mark.parametrize("name", sorted(PASSES))
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_a_pass_keeps_every_module_in_the_model_s_mode(name, train):
    model = surgeon.load_model("test_vit" if name == "localize" else "resnet18", num_classes=10,
                               **({"img_size": 32} if name == "localize" else {}))
    model.train(train)
    new = PASSES[name](model)
    assert {m.training for m in new.modules()} == {train}
    assert {m.training for m in model.modules()} == {train}  # the input untouched


def test_the_table_covers_every_built_in_pass():
    """Every pass surgeon defines (tests may register their own in the same process)."""
    from surgeon.surgery.passes import PASSES as REGISTERED

    built_in = {n for n in surgeon.list_passes() if REGISTERED[n].__module__.startswith("surgeon.")}
    assert set(PASSES) == built_in
