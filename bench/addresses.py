"""Block addresses before and after a change: dump ``(address, path, kind, stage)`` of every block
of one timm model per family (`graph_coverage._sample`, meta device) and of every torchvision
classifier, then compare two dumps (issue #20's "nothing about timm / torchvision models changes
addresses").

    python bench/addresses.py --dump after.json                        # this tree
    git worktree add /tmp/old REV && (cd /tmp/old && PYTHONPATH=$PWD python $OLDPWD/bench/addresses.py --dump $OLDPWD/before.json)
    python bench/addresses.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import timm
import torch
import torchvision

import surgeon

sys.path.insert(0, str(Path(__file__).parent))
import graph_coverage  # noqa: E402


def rows(model: torch.nn.Module) -> list[list]:
    return [[b.address, b.path, b.kind, b.stage] for b in surgeon.graph(model).blocks]


def dump(path: Path) -> None:
    out: dict[str, object] = {}
    names = [("timm", n) for n in graph_coverage._sample(timm.list_models(), 150e6)]
    names += [("tv", n) for n in torchvision.models.list_models(module=torchvision.models)]
    for kind, name in names:
        try:
            with torch.device("meta"):
                m = timm.create_model(name) if kind == "timm" else torchvision.models.get_model(name)
            out[f"{kind}:{name}"] = rows(m)
        except Exception as exc:  # noqa: BLE001 - a model that cannot be built or graphed is listed
            out[f"{kind}:{name}"] = f"error: {type(exc).__name__}"
    path.write_text(json.dumps(out))
    print(f"{len(out)} models, {sum(isinstance(v, str) for v in out.values())} not graphed: {path}")


def compare(a: Path, b: Path) -> None:
    before, after = json.loads(a.read_text()), json.loads(b.read_text())
    shared = sorted(set(before) & set(after))
    differ = [n for n in shared if before[n] != after[n]]
    print(f"{len(shared)} models in both, {len(shared) - len(differ)} identical; differ: {differ}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dump", type=Path)
    p.add_argument("--compare", type=Path, nargs=2)
    args = p.parse_args()
    if args.dump:
        dump(args.dump)
    if args.compare:
        compare(*args.compare)


if __name__ == "__main__":
    main()
