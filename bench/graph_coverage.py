"""How many timm / torchvision classifiers become an exact block graph, and how fast.

For every timm model up to --max-params parameters and every torchvision classification model:
random init at the model's own input size, `surgeon.graph`, then one forward of the model and of
`g.module` on the same input. Reports

- exact: `torch.equal` between the two outputs (fx) or the eager fallback used;
- stages agreeing with timm's `feature_info` (models that have one);
- fallback share (models whose whole graph did not trace at block granularity);
- graph build time / model creation time.

Results go to a JSON-lines file, one model a line, so a run can be sharded, interrupted and
resumed; `--report` turns that file into the table and failure list of bench/RESULTS.md.

    python bench/graph_coverage.py --shard 0/2 --out bench/out/coverage.jsonl &
    python bench/graph_coverage.py --shard 1/2 --out bench/out/coverage.jsonl &
    python bench/graph_coverage.py --report bench/out/coverage.jsonl
    python bench/graph_coverage.py --models resnet50,vit_base_patch16_224 --repeat 5   # timing

`--invariants` checks what the labels mean instead (models built on the meta device, no weights,
no exactness check, a --time-limit per model); `--sample` walks one model per family (the
smallest of each name prefix and of each timm module) instead of every model:

    OMP_NUM_THREADS=1 python bench/graph_coverage.py --invariants --out bench/out/inv.jsonl
    python bench/graph_coverage.py --report bench/out/inv.jsonl

`--hf` walks every class transformers maps for ``AutoModelForImageClassification``, each built
from its config with the defaults shrunk (`hf_config`: widths, depths, layers and the image size made
small; less shrinking when a class refuses it), random init, offline; besides the invariants below
it checks exactness (`torch.equal` of the model and `g.module`) and ``halves``: as many ``msa`` and
as many MLP halves (``mlp`` or ``conv`` blocks right after an ``msa`` block: ``conv`` is an MLP
with a depthwise conv inside) as the config has transformer layers (``num_hidden_layers``, or the
sum of ``depths`` / ``n_attn_blocks``; not checked for a model without attention):

    OMP_NUM_THREADS=1 nice -n 10 python bench/graph_coverage.py --hf --out bench/out/hf.jsonl
    python bench/graph_coverage.py --report bench/out/hf.jsonl

Invariants (`invariant_failures`): ``head`` (a classifier has exactly one head block, the last;
an encoder with ``num_classes == 0`` and no pooling, e.g. ``qwen3_vit_*_enc``, may have none),
``merged`` (no block holds several transformer blocks: members under two indices of one container
that each hold attention, or a member that itself contains such a container: two or more
indexed children that each hold attention, e.g. a whole TinyViT stage), ``downsample`` (a block where the grid drops is the stem, a ``downsample`` block, or a
``conv``/``msa`` block not made of modules named for downsampling, i.e. a residual unit with the
stride inside),
``flat`` (no stage block outputs a pooled vector), ``empty`` (no 0-parameter ``other`` block).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
from contextlib import contextmanager
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

import surgeon
from surgeon.core.errors import first_line
from surgeon.blockgraph.kinds import _DOWNSAMPLE_NAMES, _is_attention

INVARIANTS = ("head", "merged", "downsample", "flat", "empty")


def _param_count(name: str) -> int:
    import timm

    with torch.device("meta"):
        m = timm.create_model(name)
    return sum(p.numel() for p in m.parameters())


def _names(args: argparse.Namespace) -> list[str]:
    if args.models:
        return args.models.split(",")
    if args.hf:
        return hf_names()
    import timm
    import torchvision.models as tvm

    names = [] if args.skip_timm else list(timm.list_models())
    if args.sample:
        names = _sample(names, args.max_params)
    names += [] if args.skip_tv else ["tv:" + n for n in tvm.list_models(module=tvm)]
    if args.shard:
        i, n = map(int, args.shard.split("/"))
        names = names[i::n]
    return names[: args.limit] if args.limit else names


def _sample(names: list[str], max_params: float) -> list[str]:
    """One model per family: for each name prefix (``vit``, ``repvit``), then for each timm module
    not yet covered, the model with the shortest name within `max_params` (small models have short
    names: ``resnet18``, ``repvit_m1``). Only a few models per family are built to count."""
    import timm

    module_of = {n: mod for mod in timm.list_modules() for n in timm.list_models(module=mod)}
    prefixes: dict[str, list[str]] = {}
    for n in names:
        prefixes.setdefault(re.match(r"[a-z]+", n).group(0), []).append(n)
    chosen: dict[str, None] = {}

    def pick(members: list[str]) -> None:
        for n in sorted(members, key=lambda n: (len(n), n))[:5]:
            c = _safe_count(n)
            if c is not None and c <= max_params:
                chosen[n] = None
                return

    for members in prefixes.values():
        pick(members)
    covered = {module_of.get(n) for n in chosen}
    for mod in timm.list_modules():
        if mod not in covered:
            pick([n for n in names if module_of.get(n) == mod])
    return list(chosen)


def _safe_count(name: str) -> int | None:
    try:
        return _param_count(name)
    except Exception:  # noqa: BLE001 - a model that cannot be built is reported by the walk
        return None


def invariant_failures(g: surgeon.blockgraph.BlockGraph) -> dict[str, str]:
    """What the labels of `g` get wrong, per invariant (empty when all hold); see the module doc."""
    bad: dict[str, str] = {}
    heads = [i for i, b in enumerate(g.blocks) if b.kind == "head" or b.address == "head"]
    encoder = getattr(g.model, "num_classes", None) == 0 and not heads  # timm's encoders (no classifier, no pooling)
    if heads != [len(g.blocks) - 1] and not encoder:
        bad["head"] = f"head blocks at {heads} of {len(g.blocks)}; last is {g.blocks[-1].address} ({g.blocks[-1].kind})"
    model = g.model
    for b in g.blocks:
        owners = _attention_owners(model, b.members)
        if len(owners) > 1:
            bad.setdefault("merged", f"{b.address} holds {len(owners)} transformer blocks ({', '.join(owners[:3])})")
    for b in g.blocks:
        inner = _nested_transformer_blocks(model, b.members)
        if len(inner) > 1:
            bad.setdefault("merged", f"{b.address} holds {len(inner)} transformer blocks ({', '.join(inner[:3])})")
    for b in g.blocks:
        named = all(_DOWNSAMPLE_NAMES.search(".".join(m.split(".")[-2:])) for m in b.members)
        if b.downsamples and b.kind not in ("stem", "downsample", "head") and (b.kind not in ("conv", "msa") or named):
            bad.setdefault("downsample", f"{b.address} ({b.path}) lowers the grid {b.in_shape} -> {b.out_shape} "
                                         f"but is labelled {b.kind}")
        if b.stage is not None and len(b.out_shape) <= 2:
            bad.setdefault("flat", f"{b.address} ({b.path}) outputs a vector {b.out_shape}")
        if b.kind == "other" and b.params == 0:
            bad.setdefault("empty", f"{b.address} ({b.path}) is a 0-parameter 'other' block")
    return bad


def _attention_owners(model: torch.nn.Module, members) -> list[str]:
    """The distinct indexed children (``blocks.3``) among `members` and their ancestors that hold
    an attention module, where two or more are siblings in one container. A member that holds no
    attention itself (a 0-parameter Identity glued to its neighbour, e.g. EdgeNeXt's
    ``stages.2.downsample``) is no transformer block, whatever its ancestor holds."""
    found: dict[str, set[str]] = {}
    for m in members:
        if not any(_is_attention(x) for x in model.get_submodule(m).modules()):
            continue
        parts = m.split(".")
        for i in range(1, len(parts)):
            if parts[i].isdigit():
                child = ".".join(parts[: i + 1])
                if any(_is_attention(x) for x in model.get_submodule(child).modules()):
                    found.setdefault(".".join(parts[:i]), set()).add(child)
                    break
    return max((sorted(v) for v in found.values()), key=len, default=[])


_MLP = re.compile(r"mlp|ffn|feed_?forward|intermediate", re.I)


def _is_transformer_block(mod: torch.nn.Module) -> bool:
    """Attention and an MLP inside one module: a transformer layer. Parallel attention branches
    of one layer (``vit_small_patch16_18x2_224``'s ``attns.0``, ``attns.1``) hold no MLP."""
    names = [(n, type(x).__name__) for n, x in mod.named_modules()]
    return any(_is_attention(x) for x in mod.modules()) and any(_MLP.search(n.split(".")[-1]) or _MLP.search(c)
                                                                for n, c in names)


def _nested_transformer_blocks(model: torch.nn.Module, members) -> list[str]:
    """The indexed children (``stages.1.blocks.3``) of the largest container *inside* one member
    whose children are each a transformer layer (attention and an MLP): two or more mean the
    member merges transformer layers.
    One transformer block with two attention modules that are not indexed siblings (NextViT's
    NTB: ``mhsa`` and ``mhca``) is one block."""
    best: list[str] = []
    for m in members:
        for name, sub in model.get_submodule(m).named_modules():
            kids = [(k, c) for k, c in sub.named_children() if k.isdigit()]
            held = [k for k, c in kids if _is_transformer_block(c)]
            if len(held) > len(best):
                prefix = ".".join(p for p in (m, name) if p)
                best = [f"{prefix}.{k}" for k in held]
    return best if len(best) > 1 else []


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ANN001 - signal handler protocol
    raise _Timeout


@contextmanager
def _recorded(row: dict, time_limit: int):
    """Run the block under a `time_limit` alarm; a timeout or any failure is recorded in `row`
    (status and error) instead of raised: a benchmark records every failure and goes on."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(time_limit)
    try:
        yield
    except _Timeout:
        row.update(status="timeout", error=f"over {time_limit} s")
    except Exception as exc:  # noqa: BLE001
        row.update(status="error", error=f"{type(exc).__name__}: {first_line(exc, 200)}")
    finally:
        signal.alarm(0)


def check_invariants(name: str, max_params: float, time_limit: int) -> dict:
    """Build `name` on the meta device (random init, no weights), its graph, and its invariants."""
    row: dict = {"model": name, "mode": "invariants"}
    with _recorded(row, time_limit):
        t0 = time.perf_counter()
        if not name.startswith("tv:"):
            row["params"] = _param_count(name)
            if row["params"] > max_params:
                row["status"] = "skipped-size"
                return row
        with torch.device("meta"):
            model = surgeon.load_model(name)
        g = surgeon.graph(model)
        row.update(blocks=len(g.blocks), method=g.method, graph_s=round(time.perf_counter() - t0, 2))
        row["invariants"] = invariant_failures(g)
        row["status"] = "ok"
    return row


def _same(a, b) -> bool:
    la, lb = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    # exact equality; a NaN (some random inits produce them) must sit at the same place in both
    return len(la) == len(lb) and all(
        (x.shape == y.shape and torch.allclose(x, y, rtol=0, atol=0, equal_nan=True)) if isinstance(x, torch.Tensor)
        else x == y for x, y in zip(la, lb))


def check(name: str, max_params: float, repeat: int = 1) -> dict:
    row: dict = {"model": name}
    try:
        if not name.startswith("tv:"):
            row["params"] = _param_count(name)
            if row["params"] > max_params:
                row["status"] = "skipped-size"
                return row
        creates, builds = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            model = surgeon.load_model(name)
            t1 = time.perf_counter()
            g = surgeon.graph(model)
            t2 = time.perf_counter()
            creates.append(t1 - t0)
            builds.append(t2 - t1)
        row.update(params=sum(p.numel() for p in model.parameters()), create_s=statistics.median(creates),
                   graph_s=statistics.median(builds), method=g.method, blocks=len(g.blocks), stages=len(g.stages),
                   input_size=list(g.input_size))
        if g.fallback_reason:
            row["fallback_reason"] = g.fallback_reason
        torch.manual_seed(0)
        x = torch.randn(1, *g.input_size)
        with torch.no_grad():
            ref = model(x)
            got = g.module(x)
        row["exact"] = _same(ref, got)
        row["state_dict_same"] = set(model.state_dict()) == set(g.module.state_dict())
        if hasattr(model, "feature_info"):
            row["feature_info"] = surgeon.blockgraph.feature_info_mismatch(g) or "ok"
        row["params_covered"] = sum(b.params for b in g.blocks) / max(row["params"], 1)
        row["status"] = "ok" if row["exact"] and row["state_dict_same"] else "mismatch"
    except Exception as exc:  # noqa: BLE001 - a benchmark records every failure and goes on
        row["status"] = "error"
        row["error"] = f"{type(exc).__name__}: {first_line(exc, 200)}"
        row["where"] = traceback.extract_tb(exc.__traceback__)[-1].name
    return row


_SHRINK = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
           "embed_dim": 32, "image_size": 64, "projection_dim": 32, "mlp_dim": 64, "num_heads": 2,
           "hidden_dim": 32, "dim": 32, "neck_hidden_sizes": None, "num_latents": 16, "d_latents": 32}


def hf_config(model_type: str, level: int):
    """The default config of `model_type`, shrunk by `level` (2: widths, depths, layers, image
    size; 1: depths and layers only; 0: as it is), sub-configs (``vision_config``) alike."""
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(model_type)
    _shrink(cfg, level)
    cfg.num_labels = 10
    return cfg


def _shrink(cfg, level: int) -> None:
    for key, value in list(vars(cfg).items()):
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            _shrink(value, level)
        elif level == 0 or isinstance(value, bool):
            continue
        elif key in ("depths", "depth") and isinstance(value, (list, tuple)):
            setattr(cfg, key, [min(int(d), 2) for d in value])
        elif key == "num_hidden_layers" and isinstance(value, int):
            setattr(cfg, key, min(value, 2))
        elif level < 2:
            continue
        elif key in ("hidden_sizes", "embed_dim", "embed_dims", "hidden_dims") and isinstance(value, (list, tuple)):
            setattr(cfg, key, [16 * 2 ** i for i in range(len(value))])
        elif key in ("num_heads", "num_attention_heads") and isinstance(value, (list, tuple)):
            setattr(cfg, key, [min(int(h), 2) for h in value])
        elif key in _SHRINK and _SHRINK[key] is not None and isinstance(value, int):
            setattr(cfg, key, min(value, _SHRINK[key]))


def _layers(cfg) -> int | None:
    """Transformer layers the config asks for: ``num_hidden_layers`` or the sum of ``depths``."""
    cfg = getattr(cfg, "vision_config", None) or cfg
    depths = getattr(cfg, "depths", None) or getattr(cfg, "depth", None) or getattr(cfg, "n_attn_blocks", None)
    if isinstance(depths, (list, tuple)):
        return sum(int(d) for d in depths)
    n = getattr(cfg, "num_hidden_layers", None)
    return int(n) if isinstance(n, int) else None


def _second_halves(g: surgeon.blockgraph.BlockGraph) -> int:
    """The MLP halves: ``mlp`` blocks right after an ``msa`` block of the same stage, or ``conv``
    ones (an MLP with a depthwise conv inside, SegFormer's / PVTv2's Mix-FFN)."""
    return sum(b.kind in ("mlp", "conv") and i > 0 and g.blocks[i - 1].kind == "msa" and g.blocks[i - 1].stage == b.stage
               for i, b in enumerate(g.blocks))


def hf_names() -> list[str]:
    """``model_type:ClassName`` of every class mapped for AutoModelForImageClassification."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as M

    return [f"{t}:{c}" for t, cs in M.items() for c in ((cs,) if isinstance(cs, str) else cs)]


def _build_hf(name: str):
    import transformers

    from surgeon.model.hf import returning_logits

    model_type, cls_name = name.split(":")
    cls = getattr(transformers, cls_name)
    errors = []
    for level in (2, 1, 0):
        try:
            cfg = hf_config(model_type, level)
            size = getattr(getattr(cfg, "vision_config", None) or cfg, "image_size", 224)
            size = int(size[0] if isinstance(size, (list, tuple)) else size)
            torch.manual_seed(0)
            model = cls(cfg).eval()
            x = torch.randn(1, 3, size, size)
            with torch.no_grad():
                model(x)
            return returning_logits(model, {"input_size": [3, size, size]}), cfg, level, x
        except Exception as exc:  # noqa: BLE001 - try less shrinking, report the last reason
            errors.append(f"{type(exc).__name__}: {first_line(exc, 120)}")
    raise RuntimeError(f"cannot build: {errors[-1]}")


def check_hf(name: str, time_limit: int) -> dict:
    """Build `name` (``model_type:Class``) from a shrunk config, its graph, exactness and invariants."""
    row: dict = {"model": name, "mode": "hf"}
    with _recorded(row, time_limit):
        t0 = time.perf_counter()
        model, cfg, level, x = _build_hf(name)
        row.update(params=sum(p.numel() for p in model.parameters()), shrink=level, input_size=list(x.shape[1:]))
        try:
            g = surgeon.graph(model, input_size=tuple(x.shape[1:]))
        except surgeon.SurgeonError as exc:  # the graph's one-line refusal: no rule understands it
            row.update(status="refused", error=first_line(exc, 200))
            return row
        row.update(blocks=len(g.blocks), stages=len(g.stages), method=g.method, graph_s=round(time.perf_counter() - t0, 2))
        with torch.no_grad():
            row["exact"] = _same(model(x), g.module(x))
        bad = invariant_failures(g)
        if not row["exact"]:
            bad["exact"] = "g.module's output differs from the model's"
        attention = any(_is_attention(m) for m in model.modules())
        want = (_layers(cfg) or 0) if attention else 0
        got = (len(g.select("kind:msa")), _second_halves(g))
        row["halves"] = [want, *got]
        if attention and got != (want, want):
            bad["halves"] = f"{got[0]} msa + {got[1]} mlp blocks for {want} transformer layers"
        row["invariants"] = bad
        row["status"] = "ok"
    return row


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        done = {json.loads(line)["model"] for line in out.read_text().splitlines() if line.strip()}
    names = [n for n in _names(args) if n not in done or args.models]
    from rich.progress import Progress

    with Progress(transient=False) as progress, open(out, "a") as f:
        task = progress.add_task("graph coverage", total=len(names))
        for name in names:
            progress.update(task, description=name[:40])
            row = (check_hf(name, args.time_limit) if args.hf
                   else check_invariants(name, args.max_params, args.time_limit) if args.invariants
                   else check(name, args.max_params, args.repeat))
            f.write(json.dumps(row) + "\n")
            f.flush()
            if args.models:
                progress.console.print(row)
            progress.advance(task)


def report(path: str) -> str:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    last = {r["model"]: r for r in rows}  # later lines (reruns) win
    rows = [r for r in last.values() if r.get("status") != "skipped-size"]
    if any(r.get("mode") == "hf" for r in rows):
        return report_hf(rows)
    if any(r.get("mode") == "invariants" for r in rows):
        return report_invariants(rows)
    lines = []
    for family, pick in (("timm", lambda r: not r["model"].startswith("tv:")),
                         ("torchvision", lambda r: r["model"].startswith("tv:"))):
        fam = [r for r in rows if pick(r)]
        if not fam:
            continue
        exact = [r for r in fam if r.get("status") == "ok"]
        eager = [r for r in fam if r.get("method") == "eager"]
        with_fi = [r for r in fam if "feature_info" in r and not r["feature_info"].startswith("n/a")]
        fi_ok = [r for r in with_fi if r["feature_info"] == "ok"]
        ratios = [r["graph_s"] / r["create_s"] for r in fam if r.get("create_s")]
        lines.append(
            f"| {family} | {len(fam)} | {len(exact)} ({100 * len(exact) / len(fam):.1f}%) | "
            f"{len(fi_ok)}/{len(with_fi)} ({100 * len(fi_ok) / max(len(with_fi), 1):.1f}%) | "
            f"{len(eager)} ({100 * len(eager) / len(fam):.1f}%) | "
            f"{statistics.median(ratios) if ratios else float('nan'):.2f} |")
    table = ["| family | models | exact | stages = feature_info | eager fallback | median graph/create time |",
             "|---|---|---|---|---|---|", *lines]
    fails = [f"- `{r['model']}`: {r.get('error') or ('output differs' if not r.get('exact') else 'state_dict keys differ')}"
             for r in rows if r.get("status") != "ok"]
    fi_fails = [f"- `{r['model']}`: {r['feature_info']}" for r in rows
                if r.get("feature_info", "ok") != "ok" and not r["feature_info"].startswith("n/a")]
    fi_na = [f"- `{r['model']}`: {r['feature_info'][5:]}" for r in rows if r.get("feature_info", "").startswith("n/a")]
    fallbacks = [f"- `{r['model']}`: {r.get('fallback_reason', '')}" for r in rows if r.get("method") == "eager"]
    skipped = sum(1 for r in last.values() if r.get("status") == "skipped-size")
    return "\n".join([
        *table, "", f"Skipped for size (> limit): {skipped} timm models.", "",
        f"Not exact ({len(fails)}):", *(fails or ["- none"]), "",
        f"Stages differing from feature_info ({len(fi_fails)}):", *(fi_fails or ["- none"]), "",
        f"feature_info unusable, not counted ({len(fi_na)}):", *(fi_na or ["- none"]), "",
        f"Eager fallback ({len(fallbacks)}):", *(fallbacks or ["- none"]),
    ])


def report_invariants(rows: list[dict]) -> str:
    """Counts per invariant and the failing models."""
    done = [r for r in rows if r.get("status") == "ok"]
    lines = [f"Models checked: {len(done)} ({len(rows) - len(done)} could not be built or timed out).", "",
             "| invariant | models failing |", "|---|---|"]
    lines += [f"| {k} | {sum(k in r['invariants'] for r in done)} |" for k in INVARIANTS]
    for k in INVARIANTS:
        fails = [f"- `{r['model']}`: {r['invariants'][k]}" for r in done if k in r["invariants"]]
        lines += ["", f"{k} ({len(fails)}):", *(fails or ["- none"])]
    errors = [f"- `{r['model']}`: {r.get('error')}" for r in rows if r.get("status") != "ok"]
    lines += ["", f"Not built ({len(errors)}):", *(errors or ["- none"])]
    return "\n".join(lines)


def report_hf(rows: list[dict]) -> str:
    """One line per transformers class: passing, or the invariants it fails and why."""
    ok = [r for r in rows if r.get("status") == "ok" and not r["invariants"]]
    lines = [f"Classes: {len(rows)}; passing every check: {len(ok)}.", "",
             "| class | shrink | blocks / stages | msa, mlp / layers | result |", "|---|---|---|---|---|"]
    for r in rows:
        if r.get("status") != "ok":
            what = "refused" if r.get("status") == "refused" else "not built"
            lines.append(f"| `{r['model']}` | | | | {what}: {r.get('error')} |")
            continue
        want, msa, mlp = r["halves"]
        result = "; ".join(f"{k}: {v}" for k, v in r["invariants"].items()) or "pass"
        lines.append(f"| `{r['model']}` | {r['shrink']} | {r['blocks']} / {r['stages']} | {msa}, {mlp} / {want} | "
                     f"{result} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help="comma-separated names instead of the full walk")
    p.add_argument("--limit", type=int, help="only the first N models (after sharding)")
    p.add_argument("--shard", help="i/n: every n-th model starting at i")
    p.add_argument("--max-params", type=float, default=150e6)
    p.add_argument("--skip-timm", action="store_true")
    p.add_argument("--skip-tv", action="store_true")
    p.add_argument("--repeat", type=int, default=1, help="median of N creations / graph builds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--invariants", action="store_true", help="check the labels' invariants (meta device) instead")
    p.add_argument("--hf", action="store_true", help="every transformers image classifier, from shrunk configs")
    p.add_argument("--sample", action="store_true", help="one timm model per family (name prefix, module)")
    p.add_argument("--time-limit", type=int, default=120, help="seconds per model in --invariants mode")
    p.add_argument("--out", default="bench/out/coverage.jsonl")
    p.add_argument("--report", metavar="JSONL", help="print the summary of a results file and exit")
    args = p.parse_args()
    if args.report:
        print(report(args.report))
        return
    run(args)


if __name__ == "__main__":
    sys.exit(main())
