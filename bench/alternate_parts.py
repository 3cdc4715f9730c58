"""Where the headline job's time goes beyond the baseline: each step of
``surgeon alternate resnet50 --stages c2,c3`` timed in one process (issue #22, item 1), next to the
baseline's own steps (timm.create_model + a plain safetensors save).

    python bench/alternate_parts.py --repeat 2

It also prints the CLI's group build (the command that runs, then all the others, which a run no
longer builds) and the result's graph with the one-level analyses kept and cleared.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    t = time.perf_counter()
    import safetensors.torch as st
    import timm  # noqa: F401 - timed: the baseline imports it too

    import surgeon
    import surgeon.surgery  # noqa: F401 - the pass registry, imported by the command
    from surgeon.cli import main as _cli  # noqa: F401 - the command's own imports (typer, rich)
    print(f"import torch + timm + surgeon + CLI        {time.perf_counter() - t:.3f} s (first round only)")
    from surgeon.blockgraph import discovery
    from surgeon.cli.main import command

    t = time.perf_counter(); command("alternate"); one = time.perf_counter() - t
    t = time.perf_counter(); command(); every = time.perf_counter() - t
    print(f"CLI group, first build (pydantic import included): the one command run {one:.3f} s, "
          f"then every command {every:.3f} s more")
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.repeat):
            steps = {}
            t = time.perf_counter(); m = surgeon.load_model("resnet50"); steps["load_model"] = time.perf_counter() - t
            t = time.perf_counter(); g = surgeon.graph(m); steps["graph"] = time.perf_counter() - t
            t = time.perf_counter(); e = surgeon.alternate(g, "c2,c3"); steps["alternate"] = time.perf_counter() - t
            t = time.perf_counter(); surgeon.graph(e, input_size=g.input_size); steps["graph of the result"] = time.perf_counter() - t
            discovery._ANALYSES.clear()
            t = time.perf_counter(); surgeon.graph(e, input_size=g.input_size)
            steps["... with no analyses kept"] = time.perf_counter() - t
            t = time.perf_counter(); surgeon.save(e, Path(d) / "a.safetensors", overwrite=True); steps["surgeon.save"] = time.perf_counter() - t
            t = time.perf_counter(); st.save_file(m.state_dict(), str(Path(d) / "b.safetensors")); steps["plain save_file"] = time.perf_counter() - t
            t = time.perf_counter(); copy.deepcopy(m); steps["deepcopy (inside alternate)"] = time.perf_counter() - t
            print(f"round {r}: " + ", ".join(f"{k} {v:.3f} s" for k, v in steps.items()))


if __name__ == "__main__":
    main()
