"""How tests/data/surgeon01_alternet.safetensors was written (run once, with surgeon 0.1 at commit
c3d3c9c, before the provenance record replaced ``_surgeon_spec`` / ``_surgeon_recipe`` /
``_surgeon_training``). Kept to document the fixture; the test only reads the files.

    python tests/data/make_surgeon01_fixture.py
"""

from pathlib import Path

import torch

import surgeon

HERE = Path(__file__).parent
SIZE = (3, 32, 32)

torch.manual_seed(0)
model = surgeon.load_model("test_resnet", num_classes=10, channels=(8, 16, 24, 32), layers=(1, 2, 1, 1))
model = surgeon.alternate(model, "c2", heads=2, dim_head=8, input_size=SIZE)
model = surgeon.insert(model, after="c3.b-1", module="smoothing", input_size=SIZE)
with torch.no_grad():  # non-trivial BN statistics and weights
    for p in model.parameters():
        p.add_(0.01 * torch.randn_like(p))
    for name, b in model.named_buffers():
        if name.endswith("running_var"):
            b.uniform_(0.5, 1.5)
        elif name.endswith("running_mean"):
            b.normal_(0, 0.1)
model._surgeon_training = {"recipe": surgeon.training.recipe.RECIPES["digits"].to_dict(), "data": "digits", "subset": None, "seed": 0,
                           "epochs_done": 1, "final": {"epoch": 1, "train_loss": 2.0, "val_acc": 0.5}}
surgeon.save(model, HERE / "surgeon01_alternet.safetensors", overwrite=True)
x = torch.randn(2, *SIZE, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    y = model.eval()(x)
torch.save({"x": x, "y": y}, HERE / "surgeon01_alternet_io.pt")
