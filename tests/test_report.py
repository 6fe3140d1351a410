"""The HTML report in a real headless Chromium (Debian's package, driven by Playwright)."""

import os
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

import physgsa

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
EVIL = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    base = physgsa.example_chain(n_factors=4, width=32)
    pairs = [(f.name if i else EVIL, f.matrix) for i, f in enumerate(base.factors)]
    pairs[1] = ("<b>bold</b>&amp;", pairs[1][1])
    out = tmp_path_factory.mktemp("report") / "out"
    physgsa.certify(physgsa.Chain.from_arrays(pairs, source="<i>source</i>")).save(out)
    return out


@pytest.fixture(scope="module")
def browser():
    assert os.path.exists(CHROMIUM), "Debian's chromium must be installed (.ci/run installs it)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def test_report_loads_offline_renders_and_sorts(report_dir, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, requests, dialogs = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    url = (report_dir / "report.html").as_uri()
    page.goto(url)
    page.wait_for_load_state("load")
    assert errors == []
    assert [r for r in requests if r != url and not r.startswith("data:")] == []
    sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == 1 + 3  # the profiles and one figure per interface
    assert all(c and w > 0 and h > 0 for c, w, h in sizes)
    # Names from the chain are text, never markup or script.
    assert dialogs == []
    body = page.inner_text("body")
    assert EVIL in body and "<b>bold</b>&amp;" in body and "<i>source</i>" in body
    assert page.eval_on_selector_all("#factors b, #factors script", "els => els.length") == 0
    # Sorting the factor table by rho, ascending then descending.
    col = page.eval_on_selector_all("#factors th", "ths => ths.map(t => t.textContent)").index("rho")
    page.click(f"#factors th:nth-child({col + 1})")
    vals = [float(v) for v in page.eval_on_selector_all(f"#factors tbody td:nth-child({col + 1})",
                                                        "tds => tds.map(t => t.textContent)")]
    assert vals == sorted(vals)
    page.click(f"#factors th:nth-child({col + 1})")
    vals = [float(v) for v in page.eval_on_selector_all(f"#factors tbody td:nth-child({col + 1})",
                                                        "tds => tds.map(t => t.textContent)")]
    assert vals == sorted(vals, reverse=True)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    page.close()


def test_report_rerenders_identically_without_recomputing(report_dir):
    before = (report_dir / "report.html").read_bytes()
    (report_dir / "report.html").unlink()
    from physgsa.report import rerender

    rerender(report_dir)
    assert (report_dir / "report.html").read_bytes() == before
    assert np.load(report_dir / "heatmaps.npz")["0/a0"].shape[0] <= 96


def test_spectra_page_loads_offline(tmp_path, browser):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", **{EVIL: rng.standard_normal((20, 12)), "b": rng.standard_normal((12, 12))})
    res = physgsa.spectra(tmp_path / "m.npz")
    res.save(tmp_path / "s")
    page = browser.new_page()
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url))
    url = (tmp_path / "s" / "spectra.html").as_uri()
    page.goto(url)
    assert errors == [] and [r for r in requests if r != url and not r.startswith("data:")] == []
    assert page.eval_on_selector_all("img", "imgs => imgs.every(i => i.naturalWidth > 0)")
    assert EVIL in page.inner_text("#spectra")
    page.close()
