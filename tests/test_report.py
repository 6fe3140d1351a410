"""The HTML report in a real headless Chromium (Debian's package, driven by Playwright), and its figures."""

import os
import struct
import zlib
from pathlib import Path
from xml.etree import ElementTree

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
    assert all(c and w > 0 and h > 0 for c, w, h in sizes)
    assert page.eval_on_selector_all("img[alt='Part I profiles against depth']", "els => els.length") == 1
    # One figure per interface: 3 heatmaps and the mask map (PNG), label strip, block energies,
    # incidence graph (SVG), and the colour bars of the heatmaps and block energies.
    per_interface = page.eval_on_selector_all(".ifig", "figs => figs.map(f => f.querySelectorAll('img').length)")
    assert per_interface == [11, 11, 11]
    # Group ticks and legends are page text around the images.
    first = page.inner_text(".ifig")
    assert "g0" in first and "overlap" in first and "mean |entry|" in first
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


def _read_png(data: bytes) -> np.ndarray:
    """A minimal PNG reader (8-bit RGB, any of the five row filters), to check the encoder against the spec."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(tag + body) & 0xFFFFFFFF
        chunks.append((tag, body))
        pos += 12 + n
    assert [t for t, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, interlace) == (8, 2, 0)
    raw = np.frombuffer(zlib.decompress(chunks[1][1]), dtype=np.uint8).reshape(h, 1 + 3 * w)
    out = np.zeros((h, 3 * w), dtype=np.int64)
    for y in range(h):
        f, row = raw[y, 0], raw[y, 1:].astype(np.int64)
        up = out[y - 1] if y else np.zeros(3 * w, dtype=np.int64)
        for x in range(3 * w):
            left = out[y, x - 3] if x >= 3 else 0
            ul = up[x - 3] if x >= 3 else 0
            p = left + up[x] - ul
            paeth = min((abs(p - left), 0, left), (abs(p - up[x]), 1, up[x]), (abs(p - ul), 2, ul))[2]
            pred = (0, left, up[x], (left + up[x]) // 2, paeth)[f]
            out[y, x] = (row[x] + pred) % 256
    return out.reshape(h, w, 3).astype(np.uint8)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (17, 5)])
def test_png_encoder_round_trips(shape):
    from physgsa.png import encode_png

    rgb = np.random.default_rng(shape[0]).integers(0, 256, shape + (3,), dtype=np.uint8)
    png = encode_png(rgb)
    assert np.array_equal(_read_png(png), rgb)
    assert encode_png(rgb.copy()) == png  # the bytes depend on the pixels alone


def test_colourise_maps_ends_and_gaps():
    from physgsa.png import VIRIDIS, colourise

    rgb = colourise(np.array([0.0, 1.0, np.nan, 5.0]), VIRIDIS, 0.0, 1.0)
    assert rgb[0].tolist() == VIRIDIS[0].tolist() and rgb[1].tolist() == VIRIDIS[255].tolist()
    assert rgb[3].tolist() == VIRIDIS[255].tolist() and rgb[2].tolist() == [200, 200, 200]
    assert colourise(np.ones((2, 2)), VIRIDIS, 1.0, 1.0).shape == (2, 2, 3)  # a constant map: no division by 0


def test_svg_text_is_escaped_and_gaps_are_drawn():
    import pandas as pd

    from physgsa.figures import profiles_figure
    from physgsa.svgplot import Axes, figure

    ax = Axes(EVIL, xlabel="a & b", ylabel='"y"', log_y=True)
    ax.plot([0, 1, 2, 3], [1.0, np.nan, -1.0, 10.0], label=EVIL)
    svg = figure([ax], ncols=1)
    assert "<script" not in svg and "&lt;script&gt;" in svg
    root = ElementTree.fromstring(svg)  # well-formed XML
    assert EVIL in "".join(root.itertext())
    n = 5
    factors = pd.DataFrame({
        "name": [EVIL, "a\x00b"] + [f"f{i}" for i in range(n - 2)], "r": [4] * n, "rho": [1.0] * n,
        "s_top": [np.nan] * n, "s_mle": [0.5, np.nan, 0.7, 0.8, 0.9], "s_window": pd.array([None] * n, "Float64"),
        "k_q": [2] * n, "k": [3] * n, "hellinger": [0.1] * n, "kl": [0.2] * n, "tau": [1.0] * n,
        "tau_gc": [1.0] * n, "window_gap": [0.0, 1e-3, np.nan, -1.0, 2e-3]})
    svg = profiles_figure(factors)
    root = ElementTree.fromstring(svg)
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    assert "<script>a" in "".join(root.itertext()) and "<script" not in svg  # long names are shortened
    assert profiles_figure(factors) == svg


def test_interface_figure_of_constant_maps_and_odd_groups():
    from physgsa.figures import interface_figure

    zeros = np.zeros((5, 4), dtype=np.float32)
    heat = {"a0": zeros, "a1": zeros, "diff": np.full((5, 4), np.nan, dtype=np.float32),
            "mask": np.zeros((5, 4), np.int8), "labels": np.array([0, 1, 2, 3, 3], np.int8),
            "certified": np.ones(5, np.float32), "row_groups": np.array([[0.0, 0], [2.9, 1], [3.1, 2], [3.2, 3]]),
            "col_blocks": np.array([[0.0, 0], [2.0, 9]])}
    structure = {"block_energy": {"labels": ["excl:0", EVIL], "matrix": [[0.5, 0.5]] * 4},
                 "edges": [{"g": 0, "h": 1, "w": 0.0}, {"g": 1, "h": 7, "w": 1.0}], "group_sizes": [1, 0, 4, 2],
                 "hubs": []}
    fig = interface_figure(heat, {"structure": structure})
    panels = {p["title"]: p for p in fig["panels"]}
    assert [t for _, t in panels["|A0| (truncated)"]["yticks"]] == ["g0", "g1", "g3"]  # g2 too narrow to label
    assert [t for _, t in panels["|A0| (truncated)"]["xticks"]] == ["excl:0", "9"]
    assert panels["block energies"]["colorbar"]["ticks"] == [("100.000", "0.5")]
    assert all(p["src"].startswith("data:image/") and p["width"] > 0 and p["height"] > 0 for p in fig["panels"])
    assert interface_figure(heat, {"structure": structure}) == fig
