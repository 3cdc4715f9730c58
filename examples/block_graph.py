"""Block graphs of four architectures, as `surgeon inspect` sees them: FLOPs per block by kind.

    python examples/block_graph.py            # writes docs/block_graph.png and docs/inspect_resnet50.txt
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import matplotlib.pyplot as plt

import surgeon
from surgeon.viz import plot_blocks

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    names = ["resnet50", "vit_tiny_patch16_224", "coatnet_0_rw_224", "swin_tiny_patch4_window7_224"]
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 2.6 * len(names)))
    for ax, name in zip(axes, names):
        g = surgeon.graph(surgeon.load_model(name))
        total = sum(b.flops for b in g.blocks) / 1e9
        plot_blocks(g, "flops", ax=ax, title=f"{name}: {len(g.blocks)} blocks, {total:.1f} GFLOPs at 224 px")
    fig.tight_layout()
    fig.savefig(DOCS / "block_graph.png", dpi=110)
    print(f"wrote {DOCS / 'block_graph.png'}")

    from surgeon.cli.main import app

    buf = io.StringIO()
    with redirect_stdout(buf):
        try:
            app(["inspect", "resnet50"], standalone_mode=False)
        except SystemExit:
            pass
    (DOCS / "inspect_resnet50.txt").write_text(buf.getvalue())
    print(f"wrote {DOCS / 'inspect_resnet50.txt'}")


if __name__ == "__main__":
    main()
