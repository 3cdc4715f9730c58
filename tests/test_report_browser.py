"""The comparison report in a real browser (headless Chromium through Playwright): every figure
loads with a non-zero size, the page logs no console error, and the claims table has one row per
claim. Skipped, with the reason, where Playwright or a Chromium is missing: install them with
`pip install playwright` and `apt-get install chromium` (or `playwright install chromium`)."""

from __future__ import annotations

import os
import shutil

import pytest

from surgeon.comparison import claims as C

from test_compare import _cnn, _comparison, _hessian, _landscape, _lesions, _noise, _probe, _series, _vit

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")


def _chromium() -> str | None:
    """A Chromium executable: $CHROMIUM, the system one, or None (Playwright's own download)."""
    for path in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                 shutil.which("google-chrome")):
        if path and os.path.exists(path):
            return path
    return None


def _report(tmp_path):
    cnn, vit = _cnn(), _vit()
    results = {
        "cnn": {"fourier": _probe(cnn, _series(cnn, -3.0, {"conv": 0.3}), "fourier"),
                "variance": _probe(cnn, _series(cnn, 1.0, {"conv": 0.5}), "variance"),
                **_hessian([[500.0, 300.0]], [[-1.0]]), **_landscape(10.0), **_noise(0.9, [0.0, -0.01, -0.1, -0.2]),
                **_lesions(cnn, {"c1.b0": 0.5, "c1.b1": 2.0, "c2.b1": 0.5, "c2.b2": 2.0})},
        "vit": {"fourier": _probe(vit, _series(vit, -3.0, {"msa": -0.5, "mlp": 0.1}), "fourier"),
                "variance": _probe(vit, _series(vit, 1.0, {"msa": -0.1, "mlp": 0.3}), "variance"),
                **_hessian([[20.0, -10.0]], [[-15.0]]), **_landscape(1.0), **_noise(0.9, [-0.2, -0.1, -0.01, 0.0]),
                **_lesions(vit, {"c1.b0": 0.5, "c1.b1": 0.5, "c1.b2": 2.0, "c1.b3": 0.5})},  # its last MSA matters most
    }
    return _comparison([cnn, vit], results).report(tmp_path / "report")


def test_report_opens_in_headless_chromium(tmp_path):
    index = _report(tmp_path)
    exe = _chromium()
    with playwright.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        except Exception as exc:  # no browser Playwright can start
            pytest.skip(f"no Chromium to run (install one: apt-get install chromium): {str(exc).splitlines()[0]}")
        try:
            page = browser.new_page(viewport={"width": 600, "height": 900})  # a narrow window
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(index.as_uri(), wait_until="load")
            sizes = page.eval_on_selector_all(
                "img, svg", "els => els.map(e => e.tagName === 'IMG' ? [e.complete, e.naturalWidth, e.naturalHeight,"
                            " e.getBoundingClientRect().width] : [true, 1, 1, e.getBoundingClientRect().width])")
            assert len(sizes) >= 7
            assert all(ok and w > 0 and h > 0 and shown > 0 for ok, w, h, shown in sizes), sizes
            shown = page.eval_on_selector_all("img", "els => els.map(e => e.getBoundingClientRect().width)")
            assert max(shown) <= 600  # fits the narrow window
            assert page.locator("table.claims tbody tr").count() == len(C.CLAIMS)
            assert page.locator("td.holds").count() == len(C.CLAIMS)  # every constructed claim holds
            assert not errors, errors
            assert all(u.startswith(("file:", "data:")) for u in requests), requests  # no network
            pdf = page.pdf() if exe is None or "chrom" in exe else b"%PDF"  # printable
            assert pdf.startswith(b"%PDF")
        finally:
            browser.close()
