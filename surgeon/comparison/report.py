"""The report of `surgeon compare`: one self-contained index.html (figures inlined as base64 PNG,
no script, no network), the same figures as PNG and SVG beside it, the tables as CSV. The figures
themselves are `surgeon.comparison.figures`.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

import numpy as np

from surgeon.comparison.figures import CAPTIONS, FIGURES, png_bytes, aligned_positions, figures, render
from surgeon.core.files import atomic_path
from surgeon.core.tables import write_csv

__all__ = ["aligned_positions", "figures", "comparison_html", "write_report", "FIGURES", "render"]


# ----------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:70em;padding:0 1em;
color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0;width:100%}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.holds{background:#e3f4e0}.does-not-hold{background:#fbe3e0}.not-measurable{background:#f0f0f0;color:#555}
figure{margin:1em 0;break-inside:avoid}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}
.wrap{overflow-x:auto}
@media print{body{max-width:none;margin:0}a{color:inherit;text-decoration:none}.wrap{overflow:visible}}
"""


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "\u2013"
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def claims_table(cmp: Any) -> str:
    """The claims as an HTML table: one row per claim (id, claim, figure, quantity per model,
    verdict, rule)."""
    labels = cmp.labels
    head = "".join(f"<th>{html.escape(lab)}</th>" for lab in labels)
    rows = []
    for c in cmp.claims():
        cells = "".join(f'<td class="num">{_fmt(c.values.get(lab))}</td>' for lab in labels)
        verdict = html.escape(c.verdict) + (f"<br><small>{html.escape(c.reason)}</small>" if c.reason else "")
        rows.append(f'<tr class="claim" data-claim="{c.id}"><td>{html.escape(c.claim)}</td><td>{c.figure}</td>'
                    f"<td>{html.escape(c.quantity)}</td>{cells}"
                    f'<td class="{c.verdict.replace(" ", "-")}">{verdict}</td>'
                    f"<td><small>{html.escape(c.rule)}</small></td></tr>")
    return (f'<div class="wrap"><table class="claims"><thead><tr><th>claim</th><th>figure</th><th>quantity</th>{head}'
            f'<th>verdict</th><th>rule</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def models_table(cmp: Any) -> str:
    rows = []
    for m in cmp.models:
        kinds: dict[str, int] = {}
        for b in m["blocks"]:
            kinds[b["kind"]] = kinds.get(b["kind"], 0) + 1
        done = ", ".join(k for k in cmp.measures if k in cmp.results.get(m["label"], {})) or "none"
        rows.append(f"<tr><td>{html.escape(m['label'])}</td><td>{html.escape(str(m['spec']))}</td>"
                    f"<td class=num>{'x'.join(map(str, m['input_size']))}</td>"
                    f"<td class=num>{m['params'] / 1e6:.2f}M</td>"
                    f"<td>{html.escape(', '.join(f'{n} {k}' for k, n in kinds.items()))}</td>"
                    f"<td>{html.escape(done)}</td></tr>")
    return ('<div class="wrap"><table><thead><tr><th>model</th><th>source</th><th>input</th><th>params</th>'
            f'<th>blocks</th><th>measures done</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def comparison_html(cmp: Any, figures: dict[str, bytes] | bool = True) -> str:
    """The comparison as an HTML fragment: models, claims and (PNG bytes by name, or drawn here
    when True) the figures inlined as base64."""
    if figures is True:
        figures = render(cmp)
    parts = ["<h2>Models</h2>", models_table(cmp), "<h2>Claims</h2>", claims_table(cmp)]
    if figures:
        parts.append("<h2>Figures</h2>")
        for name, png in figures.items():
            data = base64.b64encode(png).decode()
            parts.append(f'<figure id="fig-{name}"><img alt="{name}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(CAPTIONS.get(name, name))}</figcaption></figure>")
    return "\n".join(parts)


def _page(cmp: Any, pngs: dict[str, bytes]) -> str:
    c = cmp.config
    title = "surgeon compare: " + ", ".join(cmp.labels)
    files = " &middot; ".join(f'<a href="{f}">{f}</a>' for f in ("results.json", "claims.csv", "measures.csv"))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Data <code>{html.escape(c['data'])}</code>, seed {c['seed']}, measures "
            f"{html.escape(', '.join(c['measures']))}; the same batches and seeds for every model. "
            f"{'Interrupted: some measures are missing. ' if cmp.interrupted else ''}Files: {files}.</p>"
            f"{comparison_html(cmp, pngs)}</body></html>\n")


def write_report(cmp: Any, out: str | os.PathLike) -> Path:
    """Write ``index.html`` (self-contained), every figure as ``NAME.png`` and ``NAME.svg``,
    ``claims.csv`` and ``measures.csv`` (tidy rows of every measure) into the folder `out`;
    results.json is the comparison's own file. Returns the index path."""
    import matplotlib.pyplot as plt

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    pngs = {}
    for name, fig in figures(cmp).items():
        try:
            pngs[name] = png_bytes(fig)
            with atomic_path(folder / f"{name}.svg") as tmp:
                fig.savefig(tmp, format="svg")
        finally:
            plt.close(fig)
        with atomic_path(folder / f"{name}.png") as tmp:
            tmp.write_bytes(pngs[name])
    write_csv(folder / "claims.csv", [{**{k: v for k, v in c.to_dict().items() if k != "values"},
                                       **{f"value[{lab}]": c.values.get(lab) for lab in cmp.labels}}
                                      for c in cmp.claims()])
    write_csv(folder / "measures.csv", measure_rows(cmp) or [{"model": None, "measure": None}])
    if cmp.path is None or cmp.path.parent.resolve() != folder.resolve():
        from surgeon.core.jsonio import dumps

        with atomic_path(folder / "results.json") as tmp:
            tmp.write_text(dumps(cmp.to_dict(), indent=1) + "\n")
    index = folder / "index.html"
    with atomic_path(index) as tmp:
        tmp.write_text(_page(cmp, pngs))
    return index


def measure_rows(cmp: Any) -> list[dict[str, Any]]:
    """Tidy rows of the per-block and per-model quantities: model, measure, block, quantity, value."""
    rows: list[dict[str, Any]] = []
    for m in cmp.models:
        lab = m["label"]
        res = cmp.results.get(lab, {})
        for key in ("fourier", "variance"):
            for b in res.get(key, {}).get("blocks", []):
                v = b.get(key)
                v = v["dlogamp"][-1] if key == "fourier" and v else v
                rows.append({"model": lab, "measure": key, "block": b["address"], "kind": b["kind"],
                             "quantity": "dlogamp_pi" if key == "fourier" else "variance", "value": v})
        for row in res.get("lesions", {}).get("rows", []):
            for q in ("acc", "nll"):
                rows.append({"model": lab, "measure": "lesions", "block": row["address"], "kind": row["kind"],
                             "quantity": f"delta_{q}", "value": row["delta"].get(q)})
        if "hessian" in res:
            for which in ("lm", "sa"):
                for i, vals in enumerate(res["hessian"][which]["eigenvalues"]):
                    rows += [{"model": lab, "measure": "hessian", "block": None, "kind": None,
                              "quantity": f"eigenvalue_{which}_batch{i}_{j}", "value": v} for j, v in enumerate(vals)]
        if "frequency_noise" in res:
            r = res["frequency_noise"]
            rows += [{"model": lab, "measure": "frequency_noise", "block": None, "kind": None,
                      "quantity": f"acc_change_{f:g}pi", "value": c} for f, c in zip(r["frequencies"], r["change"])]
        if "landscape" in res:
            loss = np.array([[np.nan if v is None else v for v in row] for row in res["landscape"]["loss"]], float)
            rows.append({"model": lab, "measure": "landscape", "block": None, "kind": None,
                         "quantity": "loss_centre", "value": float(loss[(loss.shape[0] // 2,) * loss.ndim])})
    return rows
