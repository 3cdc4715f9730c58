"""The build-up search of recipes/digits_buildup.toml (the paper's AlterNet procedure on
scikit-learn's digits, 2 CPU cores, about a minute) and its chart: docs/buildup.png.

    python examples/search.py [--out-dir docs]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import surgeon
from surgeon.viz import plot_buildup, save_figure

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = surgeon.run_search(ROOT / "recipes" / "digits_buildup.toml", Path(tmp) / "run")
    for r in res.records:
        print(f"{r['id']}: mean acc {r['mean']:.1%} +- {r['std']:.1%}, {'accepted' if r['accepted'] else 'rejected'}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"wrote {save_figure(plot_buildup(res.records).figure, args.out_dir / 'buildup.png', overwrite=True)}")


if __name__ == "__main__":
    main()
