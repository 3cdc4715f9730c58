"""ResNet-50 before and after `surgeon alternate resnet50 --stages c2,c3`, and the paper's
Alter-ResNet-50 preset: FLOPs per block by kind (MSA blocks in purple).

    python examples/alternate.py             # writes docs/alternet.png
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

import surgeon
from surgeon.viz import plot_blocks

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    base = surgeon.load_model("resnet50")
    alt = surgeon.alternate(base, "c2,c3")
    spec, kwargs, stages = surgeon.surgery.alternet.ALTERNETS["paper"]
    paper = surgeon.alternate(surgeon.load_model(spec, **kwargs), stages)
    rows = [("resnet50", base), ("resnet50 + alternate --stages c2,c3", alt),
            ("Alter-ResNet-50 (--preset paper: pre-act, blocks 3,4,6,4, MSAs 0,1,1,2)", paper)]
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 2.6 * len(rows)))
    for ax, (title, model) in zip(axes, rows):
        g = surgeon.graph(model)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        plot_blocks(g, "flops", ax=ax, title=f"{title}: {params:.1f}M params, "
                    f"{sum(b.flops for b in g.blocks) / 1e9:.2f} GFLOPs at 224 px")
    fig.tight_layout()
    fig.savefig(DOCS / "alternet.png", dpi=110)
    print(f"wrote {DOCS / 'alternet.png'}")


if __name__ == "__main__":
    main()
