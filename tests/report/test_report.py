"""The HTML report in a real headless Chromium (Debian's package, driven by Playwright), and its figures.

The page is checked at 900 and 1400 px and in print: how to read it, the glossary, tables that
are never clipped, names that never break, the window search. Every panel is also a file under
``DIR/figures/``: each one valid SVG that Chromium renders, and not blank.
"""

import base64
import json
import re
import struct
import zlib
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

import physgsa

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ROOT = Path(__file__).resolve().parents[2]
EVIL = "<script>alert('x')</script>"
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def result():
    base = physgsa.example_chain(n_factors=4, width=32)
    pairs = [(f.name if i else EVIL, f.matrix) for i, f in enumerate(base.factors)]
    pairs[1] = ("<b>bold</b>&amp;", pairs[1][1])
    return physgsa.certify(physgsa.Chain.from_arrays(pairs, source="<i>source</i>"), window_search=True)


@pytest.fixture(scope="module")
def report_dir(result, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    physgsa.save(result, out)
    return out


def _open(browser, url, width, media="screen"):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.emulate_media(media=media)
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.wait_for_load_state("load")
    return page, errors, requests


def test_report_loads_offline_renders_and_sorts(report_dir, browser):
    page, errors, requests = _open(browser, (report_dir / "report.html").as_uri(), 1400)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    url = (report_dir / "report.html").as_uri()
    assert errors == []
    assert [r for r in requests if r != url and not r.startswith("data:")] == []
    sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert all(c and w > 0 and h > 0 for c, w, h in sizes)
    # The six Part I profiles, each its own figure.
    assert page.eval_on_selector_all("#profiles img", "els => els.length") == 6
    # One figure per panel of each interface: |A0|, |A1|, |E|, ICM labels, masks, block energies, graph,
    # and the graded certificate's robustness profile, last.
    per_interface = page.eval_on_selector_all(".interface > .ifig",
                                              "figs => figs.map(f => f.querySelectorAll('img').length)")
    assert per_interface == [8, 8, 8]
    last = page.eval_on_selector_all(".interface > .ifig", "figs => figs.map(f => f.lastElementChild.querySelector"
                                                          "('a').getAttribute('href'))")
    assert last == [f"figures/interface-0{i}-profile.svg" for i in range(3)]
    # Each panel links to its own file under figures/.
    links = page.eval_on_selector_all(".interface .panel a", "as => as.map(a => a.getAttribute('href'))")
    assert all(re.fullmatch(r"figures/interface-\d\d-[A-Za-z0-9-]+\.svg", h) for h in links) and len(links) == 24
    # The graded certificate: the model's share in the headline, the per-interface shares figure, not
    # among the Part I profiles.
    assert "certified a priori" in page.inner_text("#graded-share")
    assert page.eval_on_selector_all("#graded-figures img", "els => els.length") == 1
    assert page.eval_on_selector_all("#graded-figures a", "as => as.map(a => a.getAttribute('href'))") == [
        "figures/profiles-graded-shares.svg"]
    # Names from the chain are text, never markup or script.
    assert dialogs == []
    body = page.inner_text("body")
    assert EVIL in body and "<b>bold</b>&amp;" in body and "<i>source</i>" in body
    assert page.eval_on_selector_all("#factors b, #factors script, .name b", "els => els.length") == 0
    # Sorting the factor table by rho, ascending then descending (the "?" link is not part of the name).
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


_LAYOUT = """() => {
  const W = document.documentElement.clientWidth;
  const cells = Array.from(document.querySelectorAll('th, td')).filter(c => c.getClientRects().length);
  const clipped = cells.filter(c => c.getBoundingClientRect().right > W + 0.5).map(c => c.textContent.slice(0, 40));
  // No table sits in a box that scrolls or hides part of it.
  const boxed = Array.from(document.querySelectorAll('table')).filter(t => {
    for (let e = t.parentElement; e && e !== document.body; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (['auto', 'scroll', 'hidden'].includes(s.overflowX) || ['auto', 'scroll', 'hidden'].includes(s.overflowY))
        return true;
    }
    return false;
  }).map(t => t.id);
  // Names never break inside their arrows: the '-' and the '>' of every '->' share a line.
  const broken = [];
  document.querySelectorAll('td.name, details.interface > summary').forEach(cell => {
    if (!cell.getClientRects().length) return;
    const chars = [];
    const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode())
      for (let i = 0; i < n.data.length; i++) chars.push([n, i, n.data[i]]);
    for (let i = 0; i + 1 < chars.length; i++) {
      if (chars[i][2] !== '-' || chars[i + 1][2] !== '>') continue;
      const r = document.createRange(); r.setStart(chars[i][0], chars[i][1]);
      r.setEnd(chars[i + 1][0], chars[i + 1][1] + 1);
      const tops = new Set(Array.from(r.getClientRects()).filter(x => x.width > 0).map(x => Math.round(x.top)));
      if (tops.size > 1) broken.push(cell.textContent);
    }
  });
  const headers = Array.from(document.querySelectorAll('table.sortable th'));
  const undefined_ = headers.filter(h => !h.title || !h.querySelector('a.def')).map(h => h.textContent);
  const anchors = headers.map(h => h.querySelector('a.def').getAttribute('href').slice(1));
  const missing = anchors.filter(a => !document.getElementById(a));
  return {pageWidth: document.documentElement.scrollWidth, W, clipped, boxed, broken, undefined_, missing,
          tables: document.querySelectorAll('table.sortable').length};
}"""


@pytest.mark.parametrize("width, media", [(1400, "screen"), (900, "screen"), (760, "print")])
def test_report_at_any_width_and_in_print(report_dir, browser, width, media):
    """Glossary, unclipped tables, unbroken names and the window search, at 1400 and 900 px and in print."""
    page, errors, _ = _open(browser, (report_dir / "report.html").as_uri(), width, media)
    assert errors == []
    lay = page.evaluate(_LAYOUT)
    assert lay["pageWidth"] <= lay["W"], lay  # the page itself does not scroll sideways
    assert lay["clipped"] == [] and lay["boxed"] == [] and lay["broken"] == [], lay
    # Squeezed as narrow as they go, names wrap only after a whole '->'.
    page.add_style_tag(content="td.name { width: 1px !important; }")
    assert page.evaluate(_LAYOUT)["broken"] == []
    # Every column of every table shows its definition (tooltip) and links to it in the glossary.
    assert lay["tables"] >= 5 and lay["undefined_"] == [] and lay["missing"] == [], lay
    # How to read it: at the top, every term in one plain sentence, ICM spelled out, what to try next.
    howto = page.inner_text("#how-to-read")
    for term in ("member", "rho_static", "a priori verdict", "measured verdict", "direct verdict",
                 "core / overlap / noise", "hubs", "SRS sets", "chain break", "Invariant Channel Mapping",
                 "SC (single-core)", "SA (shared, aligned)", "ST (shared, transit)", "What a failing certificate",
                 "--window-search", "--q 0.99",
                 "certified share, a priori", "certified share, measured", "robustness profile"):
        assert term in howto, term
    # A chain of plain matrices: no model options to try (test_collapsed_headings_and_next_steps_fit_the_run).
    assert "--factor branch" not in howto and "--mode jacobian" not in howto
    # The graded shares: one plain sentence each beside the model-level figure, and a table of them.
    graded = page.inner_text(".graded-terms")
    assert all(t in graded for t in ("certified share, a priori", "certified share, measured", "robustness profile"))
    heads = page.eval_on_selector_all("#interfaces-graded th", "ths => ths.map(t => t.textContent)")
    assert heads[:3] == ["interface", "certified_share_apriori", "certified_share_measured"]
    top = page.evaluate("document.getElementById('how-to-read').getBoundingClientRect().top + window.scrollY")
    first_table = page.evaluate("document.getElementById('factors').getBoundingClientRect().top + window.scrollY")
    assert top < first_table
    glossary = page.inner_text("#glossary")
    assert "rho_static" in glossary and "energy_core" in glossary and "certified_share_apriori" in glossary
    assert len(page.query_selector_all("#protocol-items li")) == 12
    # The verdict: coloured by its fraction, the count said once.
    verdict = page.inner_text("#verdict")
    # (Its first line: the line under it may count the interfaces without channel structure, "2 of 3 ...".)
    assert verdict.split("\n")[0].count(" of 3") <= 1
    # The window search (--window-search) is in the report: its table and one plot per interface.
    assert page.query_selector("#window-search") is not None
    rows = page.eval_on_selector_all("#window-search-table tr", "trs => trs.map(t => t.innerText)")
    assert len(rows) == 1 + 3 and all(("q = " in r or "none up to" in r) for r in rows[1:])
    assert page.eval_on_selector_all("#window-search-figures img", "els => els.length") == 3
    # Protocol values are words, not JSON.
    values = page.eval_on_selector_all("table.protocol td:nth-child(4)", "tds => tds.map(t => t.textContent)")
    assert values and not [v for v in values if re.search(r'[{}"\[\]]', v)]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"report-{width}-{media}.png"), full_page=True)
    page.close()


def test_verdict_colour_follows_the_fraction():
    from physgsa.report.pages import verdict_view

    none = verdict_view({"n_interfaces": 11, "n_members": 0, "summary": "no interface is a member",
                         "n_chain_breaks": 0})
    some = verdict_view({"n_interfaces": 5, "n_members": 2, "summary": "2 of 5 interfaces are members",
                         "n_chain_breaks": 1})
    all_ = verdict_view({"n_interfaces": 5, "n_members": 5, "summary": "all interfaces are members",
                         "n_chain_breaks": 2})
    assert (none["kind"], some["kind"], all_["kind"]) == ("none", "some", "all")
    assert some["sentence"] == "2 of 5 interfaces are members of the certificate domain"  # "(2 of 5)" said once
    assert none["sentence"].endswith("(0 of 11)") and all_["sentence"].endswith("(5 of 5)")
    assert (some["breaks"], all_["breaks"]) == ("1 chain break", "2 chain breaks")


def test_report_rerenders_identically_without_recomputing(report_dir):
    before = (report_dir / "report.html").read_bytes()
    figures = {p.name: p.read_bytes() for p in (report_dir / "figures").iterdir()}
    (report_dir / "report.html").unlink()
    (report_dir / "figures" / "profiles-rho.svg").unlink()
    from physgsa.report import rerender

    rerender(report_dir)
    assert (report_dir / "report.html").read_bytes() == before
    assert {p.name: p.read_bytes() for p in (report_dir / "figures").iterdir()} == figures
    assert np.load(report_dir / "heatmaps.npz")["0/a0"].shape[0] <= 96
    assert not [p for p in report_dir.iterdir() if p.name.startswith(".physgsa")]


def test_figures_are_rewritten_and_stale_ones_removed_but_a_users_files_kept(result, tmp_path):
    out = tmp_path / "o"
    physgsa.save(result, out)
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert len(names) == 6 + 3 * 8 + 3 + 1
    (out / "figures" / "interface-07-masks.svg").write_text("<svg/>")  # a stale panel of a longer chain
    physgsa.save(result, out)  # a second save replaces the folder (it cannot rename onto a full one)
    assert sorted(p.name for p in (out / "figures").iterdir()) == names
    (out / "figures" / "interface-07-masks.svg").write_text("<svg/>")
    (out / "figures" / "my-edit.svg").write_text("mine")  # a user's file: never touched
    physgsa.save(result, out)
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(names + ["my-edit.svg"])
    assert (out / "figures" / "my-edit.svg").read_text() == "mine"
    import subprocess
    import sys

    (out / "figures" / "interface-00-masks.svg").unlink()
    r = subprocess.run([sys.executable, "-m", "physgsa", "report", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(names + ["my-edit.svg"])
    assert not [p for p in out.iterdir() if p.name.startswith(".physgsa")]


def _svg_info(svg: str):
    root = ElementTree.fromstring(svg)
    texts = " ".join("".join(e.itertext()) for e in root.iter(f"{SVG_NS}text"))
    return root, texts


_PIXELS = """async ([uri, rect]) => {
  const img = new Image(); img.src = uri; await img.decode();
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const stats = (x, y, w, h) => {
    const d = g.getImageData(x, y, w, h).data; let n = 0, s = 0, s2 = 0, ink = 0;
    for (let i = 0; i < d.length; i += 4) {
      const v = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]; n++; s += v; s2 += v * v; if (v < 245) ink++;
    }
    return [s2 / n - (s / n) ** 2, ink / n];
  };
  const whole = stats(0, 0, c.width, c.height);
  const inner = rect ? stats(Math.ceil(rect[0]) + 1, Math.ceil(rect[1]) + 1, Math.floor(rect[2]) - 2,
                             Math.floor(rect[3]) - 2) : null;
  return {w: c.width, h: c.height, whole, inner};
}"""


def test_every_figure_file_is_valid_svg_that_chromium_renders_non_blank(report_dir, browser):
    files = sorted((report_dir / "figures").glob("*.svg"))
    assert len(files) == 6 + 3 * 8 + 3 + 1
    page = browser.new_page()
    page.set_content("<html><body></body></html>")
    ARTIFACTS.mkdir(exist_ok=True)
    for path in files:
        svg = path.read_text(encoding="utf-8")
        root, texts = _svg_info(svg)  # valid XML, an SVG document
        assert root.tag == f"{SVG_NS}svg" and float(root.get("width")) > 0 and float(root.get("height")) > 0
        assert not [e for e in root.iter() if e.tag.endswith("script") or e.tag.endswith("foreignObject")]
        assert "<script" not in svg
        image = root.find(f"{SVG_NS}image")
        rect = None if image is None or "icm-labels" in path.name else \
            [float(image.get(k)) for k in ("x", "y", "width", "height")]
        uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
        px = page.evaluate(_PIXELS, [uri, rect])
        assert px["w"] > 100 and px["h"] > 100, path.name
        assert px["whole"][0] > 50 and px["whole"][1] > 0.01, (path.name, px)  # not blank
        if rect is not None:  # the embedded heatmap itself was drawn
            assert px["inner"][1] > 0.9, (path.name, px)
    # A few panels as pictures, for a look.
    for name in ("interface-00-pam-truncated-A0", "interface-00-incidence-graph", "interface-00-window-search",
                 "profiles-exponents", "interface-00-profile", "interface-00-masks", "profiles-graded-shares"):
        svg = (report_dir / "figures" / f"{name}.svg").read_bytes()
        page.set_content(f'<img id="f" src="data:image/svg+xml;base64,{base64.b64encode(svg).decode()}">')
        page.wait_for_function("document.getElementById('f').complete")
        page.locator("#f").screenshot(path=str(ARTIFACTS / f"figure-{name}.png"))
    page.close()


def test_figures_use_real_typography_and_label_everything(result):
    figs = physgsa.report.panels(result)
    assert len(figs) == 6 + 3 * 8 + 3 + 1
    _, diff = _svg_info(figs["interface-00-pam-difference-E"].svg)
    assert "|A1 − A0|" in diff and "mean |entry| per cell" in diff  # subscripts as tspans, a real minus
    root, bars = _svg_info(figs["interface-00-block-energies"].svg)
    assert "share of ‖A0‖F2" in bars and root.find(f".//{SVG_NS}linearGradient") is not None  # vector colour bar
    assert "ASCII" not in bars and "||" not in bars
    _, ws = _svg_info(figs["interface-00-window-search"].svg)
    assert "‖E‖F" in ws and "ρstatic" in ws and "0.999" in ws
    assert EVIL in ws  # the interface's name, escaped, as the subtitle
    _, graph = _svg_info(figs["interface-01-incidence-graph"].svg)
    assert "disc area" in graph and "line width" in graph and "not nodes" in graph
    _, prof = _svg_info(figs["interface-00-profile"].svg)
    for word in ("ρstatic = ", "εtrunc = ", "‖E‖F = ", "columns", "memberships", "pairs of groups", "hubs",
                 "r → 0", "log scale"):
        assert word in prof, word
    _, shares = _svg_info(figs["profiles-graded-shares"].svg)
    assert "a priori" in shares and "measured" in shares and "model, a priori" in shares


def test_interface_figures_label_every_group_and_say_which_units():
    from physgsa.report.figures import interface_figures

    zeros = np.zeros((5, 4), dtype=np.float32)
    heat = {"a0": zeros, "a1": zeros, "diff": np.full((5, 4), np.nan, dtype=np.float32),
            "mask": np.zeros((5, 4), np.int8), "labels": np.array([0, 1, 2, 3, 3], np.int8),
            "certified": np.ones(5, np.float32), "row_groups": np.array([[0.0, 0], [2.9, 1], [3.1, 2], [3.2, 3]]),
            "col_blocks": np.array([[0.0, 0], [2.0, 9]])}
    structure = {"block_energy": {"labels": ["excl:0", EVIL], "matrix": [[0.5, 0.5]] * 4},
                 "edges": [{"g": 0, "h": 1, "w": 0.0}, {"g": 1, "h": 7, "w": 1.0}], "group_sizes": [1, 0, 4, 2],
                 "hubs": [3, 5], "hub_degree": 3, "unit_strategy": "heads"}
    figs = {f.name: f for f in interface_figures(heat, {"structure": structure, "interface": "a->b"}, 0)}
    _, a0 = _svg_info(figs["interface-00-pam-truncated-A0"].svg)
    # Every group keeps its label, the one-row (and 0.1-row) groups included.
    for g in ("g0", "g1", "g2", "g3"):
        assert re.search(rf"\b{g}\b", a0), g
    assert "excl:0" in a0 and "9" in a0 and "input heads" in a0 and "input channels" not in a0
    _, labels = _svg_info(figs["interface-00-icm-labels"].svg)
    assert all(re.search(rf"\b{g}\b", labels) for g in ("g0", "g1", "g2", "g3"))
    root, graph = _svg_info(figs["interface-00-incidence-graph"].svg)
    title = "".join(root.find(f"{SVG_NS}text").itertext())
    assert title.startswith("incidence graph: 4 groups") and "hub" not in title  # the title counts the drawn nodes
    assert "hubs: 2 input heads" in graph and "the nodes are the 4 groups" in graph
    circles = [c for c in root.iter(f"{SVG_NS}circle") if c.get("stroke") == "#fff"]
    assert len(circles) == 4  # one disc per group, as the title says
    _, bar = _svg_info(figs["interface-00-block-energies"].svg)
    assert "0.5" in bar  # a constant map: one colour, one value
    again = {f.name: f for f in interface_figures(heat, {"structure": structure, "interface": "a->b"}, 0)}
    assert again == figs  # the same bytes every time


def test_result_shows_itself_in_a_notebook_and_draws_without_files(result, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    html = physgsa.report.summary(result)
    v = result.verdict
    assert v["summary"] in html and "binding margin" in html
    from html import escape

    assert all(escape(str(m["interface"])) in html for m in v["smallest_margins"])
    assert "<script>" not in html
    figs = physgsa.report.panels(result)
    fig = figs["interface-00-masks"]
    assert fig._repr_svg_().startswith("<svg") and fig.uri.startswith("data:image/svg+xml;base64,")
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert fig.save(tmp_path).name == "interface-00-masks.svg"


def test_spectra_page_loads_offline_in_depth_order_with_compact_notes(tmp_path, browser):
    rng = np.random.default_rng(0)
    arrays = {k: rng.standard_normal((12, 12)) for k in ("h.10", "h.2", "h.0", "h.1")}
    arrays[EVIL] = rng.standard_normal((20, 12))
    np.savez(tmp_path / "m.npz", **arrays)
    res = physgsa.spectra(tmp_path / "m.npz")
    physgsa.save(res, tmp_path / "s")
    page, errors, requests = _open(browser, (tmp_path / "s" / "spectra.html").as_uri(), 1400)
    url = (tmp_path / "s" / "spectra.html").as_uri()
    assert errors == [] and [r for r in requests if r != url and not r.startswith("data:")] == []
    assert page.eval_on_selector_all("img", "imgs => imgs.every(i => i.naturalWidth > 0)")
    assert EVIL in page.inner_text("#spectra")
    names = page.eval_on_selector_all("#spectra tbody td:first-child", "tds => tds.map(t => t.textContent)")
    assert names == [EVIL, "h.0", "h.1", "h.2", "h.10"]  # depth order: h.2 before h.10
    src = page.get_attribute("img[alt='per-matrix metrics']", "src")
    svg = base64.b64decode(src.split(",", 1)[1]).decode()
    assert "h.10" in svg and "matrix index" not in svg  # the plots name the matrices
    page.close()


def test_spectra_notes_are_footnotes(tmp_path):
    import pandas as pd

    from physgsa.outputs.spectra import SpectraResult
    from physgsa.report.pages import render_spectra_page

    note = "fused QKV split: Q (Conv1D, transposed)"
    table = pd.DataFrame({"name": ["h.1", "h.0", "h.2"], "rows": [4, 4, 4], "cols": [4, 4, 4],
                          "note": [note, note, ""], "r": [4, 4, 4]})
    html = render_spectra_page(SpectraResult(table, [], {"source": "x", "n_matrices": 3, "format": "f",
                                                         "parameters": {}, "versions": {}}))
    assert html.count(f">{note}<") == 1  # written once, as the footnote under the table
    assert html.count(">[1]<") == 2 and html.count(f'title="{note}"') == 2  # each row: its number, a tooltip


def test_glossary_doc_matches_the_code_and_covers_every_column():
    from physgsa.report import glossary
    from physgsa.report.pages import _FACTOR_TABLES, _INTERFACE_TABLES, _SPECTRA_COLS

    assert (ROOT / "docs" / "glossary.md").read_text(encoding="utf-8") == glossary.markdown()
    for _, _, cols in _FACTOR_TABLES + _INTERFACE_TABLES:
        assert all(glossary.column(c) for c in cols), cols
    assert all(glossary.column(c) for c in _SPECTRA_COLS)
    assert len(glossary.PROTOCOL) == 12


def test_readme_says_how_to_read_the_result_and_where_it_comes_from():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    intro = readme.split("## ", 1)[0]
    assert "abstracts" in intro and "full texts were not" in intro and "docs/definitions.md" in intro  # up front
    assert "docs/validation.md" in intro  # what it predicts, measured, on the first screen (issue 23)
    section = readme.split("## How to read the result", 1)[1].split("\n## ", 1)[0]
    for term in ("member", "rho_static", "a priori", "measured", "direct", "core", "overlap", "noise", "hubs",
                 "SRS", "Invariant Channel Mapping", "SC", "SA", "ST", "chain break", "--window-search",
                 "--factor branch", "--interfaces heads", "--mode jacobian", "docs/glossary.md"):
        assert term in section, term
    # Every picture in docs/images is shown in the README and made by docs/make_images.py.
    maker = (ROOT / "docs" / "make_images.py").read_text(encoding="utf-8")
    for png in (ROOT / "docs" / "images").glob("*.png"):
        assert f"docs/images/{png.name}" in readme and png.name in maker, png.name
    for name in re.findall(r"docs/images/([\w.-]+\.png)", readme):
        assert (ROOT / "docs" / "images" / name).is_file(), name


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
    from physgsa.report.png import encode_png

    rgb = np.random.default_rng(shape[0]).integers(0, 256, shape + (3,), dtype=np.uint8)
    png = encode_png(rgb)
    assert np.array_equal(_read_png(png), rgb)
    assert encode_png(rgb.copy()) == png  # the bytes depend on the pixels alone


def test_colourise_maps_ends_and_gaps():
    from physgsa.report.png import VIRIDIS, colourise

    rgb = colourise(np.array([0.0, 1.0, np.nan, 5.0]), VIRIDIS, 0.0, 1.0)
    assert rgb[0].tolist() == VIRIDIS[0].tolist() and rgb[1].tolist() == VIRIDIS[255].tolist()
    assert rgb[3].tolist() == VIRIDIS[255].tolist() and rgb[2].tolist() == [200, 200, 200]
    assert colourise(np.ones((2, 2)), VIRIDIS, 1.0, 1.0).shape == (2, 2, 3)  # a constant map: no division by 0


def test_svg_text_is_escaped_and_gaps_are_drawn():
    import pandas as pd

    from physgsa.report.figures import profiles_figure
    from physgsa.report.svgplot import Axes, figure

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


def test_markup_is_only_ours():
    from physgsa.report.svgplot import rich, text

    assert rich("‖A_{0}‖_{F}^{2}").count("<tspan") == 4
    assert "<tspan" not in text("h_{0}")  # a name from a file is never read as markup
    assert json.dumps(rich(EVIL)).count("<script") == 0


def _cells_changed(svg: str, base_rgb: np.ndarray) -> np.ndarray:
    """Which cells of a heatmap panel's embedded image differ anywhere from their plain colour."""
    root = ElementTree.fromstring(svg)
    image = root.find(f"{SVG_NS}image")
    href = image.get("{http://www.w3.org/1999/xlink}href")
    px = _read_png(base64.b64decode(href.split(",", 1)[1]))
    h, w = base_rgb.shape[:2]
    sy, sx = px.shape[0] // h, px.shape[1] // w
    assert (sy * h, sx * w) == px.shape[:2]
    plain = np.repeat(np.repeat(base_rgb, sy, axis=0), sx, axis=1)
    diff = np.any(px != plain, axis=2)
    return diff.reshape(h, sy, w, sx).any(axis=(1, 3))


def test_heatmaps_hatch_exactly_the_cells_with_under_half_their_memberships_certified():
    from physgsa.report.figures import MASK_COLOURS, interface_figures
    from physgsa.report.png import VIRIDIS, colourise, hex_rgb

    rng = np.random.default_rng(0)
    a0 = rng.random((5, 4)).astype(np.float32)
    mask = np.array([[0, 1, 2, 0]] * 5, np.int8)
    graded = np.array([[1.0, 0.5, 0.49, 0.0]] * 2 + [[0.0, 0.2, 0.5, 0.75]] * 3, dtype=np.float32)
    heat = {"a0": a0, "a1": a0, "diff": a0, "mask": mask, "labels": np.zeros(5, np.int8),
            "certified": np.ones(5, np.float32), "row_groups": np.array([[0.0, 0], [2.0, 1]]),
            "col_blocks": np.array([[0.0, 0], [3.0, 5]]), "col_counts": np.array([1, 1, 1, 7]),
            "col_band": np.array([3]), "graded_apriori": graded}
    structure = {"block_energy": {"labels": ["excl:0", "excl:1", "hubs", "shared", "x", "inactive"],
                                  "matrix": [[0.5] * 6] * 2},
                 "edges": [], "group_sizes": [2, 3], "hubs": [], "hub_degree": 3}
    figs = {f.name: f for f in interface_figures(heat, {"structure": structure, "interface": "a->b"}, 0)}
    want = graded < 0.5  # by hand: under half certified, hatched
    palette = np.array([hex_rgb(c) for c in MASK_COLOURS], dtype=np.uint8)
    assert np.array_equal(_cells_changed(figs["interface-00-masks"].svg, palette[mask]), want)
    top = float(a0.max())
    plain = colourise(a0.astype(np.float64), VIRIDIS, 0.0, top)
    assert np.array_equal(_cells_changed(figs["interface-00-pam-truncated-A0"].svg, plain), want)
    assert not _cells_changed(figs["interface-00-pam-full-A1"].svg, plain).any()  # only A0 and the masks
    _, text = _svg_info(figs["interface-00-masks"].svg)
    assert "hatched" in text and "inactive (7)" in text  # the band says how many columns it holds
    no_graded = {k: v for k, v in heat.items() if k != "graded_apriori"}  # an older heatmaps.npz
    old = {f.name: f for f in interface_figures(no_graded, {"structure": structure, "interface": "a->b"}, 0)}
    assert not _cells_changed(old["interface-00-masks"].svg, palette[mask]).any()
    assert "hatched" not in _svg_info(old["interface-00-masks"].svg)[1]


def test_profile_figure_draws_the_exact_step_functions_and_the_markers():
    import pandas as pd

    from physgsa.report.figures import graded_profile_figure

    r = np.array([0.0, 0.01, 0.02, 0.5])
    rows = pd.DataFrame({"interface": ["a->b"] * 4, "r": r, "column_share": [1.0, 0.75, 0.5, 0.0],
                         "membership_share": [1.0, 0.9, 0.9, 0.2], "pair_share": [1.0, 1.0, 0.0, 0.0],
                         "edge_share": [np.nan] * 4, "hub_share": pd.array([None] * 4, "Float64")})
    detail = {"interface": "a->b", "margins": {"rho_static": 0.01}, "truncation": {"eps_trunc": 0.3, "exact": 0.05}}
    fig = graded_profile_figure(rows, detail, 2, 2, drift=2.0)
    assert fig.name == "interface-02-profile"
    root, texts = _svg_info(fig.svg)
    box = next(e for e in root.iter(f"{SVG_NS}rect") if e.get("fill") == "none" and e.get("stroke") == "#444")
    x0, y0, w, h = (float(box.get(k)) for k in ("x", "y", "width", "height"))
    left, right = 0.01 / 3, 2.0 * 3  # a third of the smallest positive radius or marker; three times the largest
    to_r = lambda X: 10 ** (np.log10(left) + (X - x0) / w * (np.log10(right) / 1 - np.log10(left)))  # noqa: E731
    to_share = lambda Y: -0.03 + (y0 + h - Y) / h * 1.06  # noqa: E731
    colours = {"column_share": "#1f77b4", "membership_share": "#ff7f0e", "pair_share": "#2ca02c"}
    for col, colour in colours.items():
        (line,) = [e for e in root.iter(f"{SVG_NS}polyline") if e.get("stroke") == colour]
        pts = np.array([[float(v) for v in p.split(",")] for p in line.get("points").split()])
        assert abs(pts[0, 0] - x0) < 0.01 and abs(pts[-1, 0] - (x0 + w)) < 0.01  # r -> 0 to the right edge
        values = rows[col].to_numpy()
        for (xa, ya), (xb, yb) in zip(pts[:-1], pts[1:]):
            if abs(ya - yb) < 1e-9 and xb > xa:  # a flat piece: the step's value on it, brute force
                mid = np.sqrt(to_r(xa) * to_r(xb))
                assert abs(to_share(ya) - values[np.searchsorted(r, mid, side="right") - 1]) < 0.01, (col, mid)
        assert len(pts) >= 2 * (len(set(values)) - 1)  # every change drawn
    assert not [e for e in root.iter(f"{SVG_NS}polyline") if e.get("stroke") == "#9467bd"]  # no hub: no line
    assert "hubs: none to count" in texts
    for value, colour, name in ((0.01, "#d62728", "ρstatic"), (0.3, "#bcbd22", "εtrunc"), (0.05, "#17becf", "‖E‖F"),
                                (2.0, "#7f7f7f", "drift")):
        xs = [float(e.get("x1")) for e in root.iter(f"{SVG_NS}line") if e.get("stroke") == colour
              and float(e.get("y2")) - float(e.get("y1")) > h / 2]
        assert len(xs) == 1 and abs(to_r(xs[0]) / value - 1) < 1e-3, (name, xs)
        assert f"{name} = {value:.3g}" in texts
    assert graded_profile_figure(rows, detail, 2, 2) != fig and graded_profile_figure(rows, detail, 2, 2, 2.0) == fig


def test_a_static_structure_is_called_a_weight_space_property_and_a_jacobian_one_is_not(result):
    # docs/empirical.md ("Support rules compared"): MiniLM's static supports agree with its
    # Jacobian-mode supports at chance, so the report says what a static structure is.
    import dataclasses

    from physgsa.report import glossary
    from physgsa.report.pages import render_report

    static = dataclasses.replace(result, factors=result.factors.assign(source="static"))
    html = render_report(static, figures={})
    assert 'id="weight-space"' in html and "--mode jacobian" in html
    assert glossary.WEIGHT_SPACE.split(".")[0] in html
    # Jacobians at real inputs, or plain matrices (no network's weights): nothing to say.
    for source in ("jacobian", "matrix"):
        other = dataclasses.replace(result, factors=result.factors.assign(source=source))
        assert 'id="weight-space"' not in render_report(other, figures={})


def test_icm_strip_shows_certification_in_its_own_colour_not_a_labels():
    # Issue 24, item 5: certified rows were painted in SC's green, so a certified SA row read as SC.
    from physgsa.report.figures import CERTIFIED_COLOUR, LABEL_COLOURS, interface_figures
    from physgsa.report.png import hex_rgb

    labels = np.array([0, 1, 2, 1], np.int8)  # SC, SA, ST, SA
    certified = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
    a0 = np.ones((4, 3), np.float32)
    heat = {"a0": a0, "a1": a0, "diff": a0, "mask": np.zeros((4, 3), np.int8), "labels": labels,
            "certified": certified, "row_groups": np.array([[0.0, 0]]), "col_blocks": np.array([[0.0, 0]])}
    structure = {"block_energy": {"labels": ["excl:0", "hubs", "shared", "inactive"], "matrix": [[0.5] * 4]},
                 "edges": [], "group_sizes": [4], "hubs": [], "hub_degree": 3}
    figs = {f.name: f for f in interface_figures(heat, {"structure": structure, "interface": "a->b"}, 0)}
    # Independently: left column the label's colour, right column dark where certified, white where not.
    want = np.array([[hex_rgb(LABEL_COLOURS[lab]), hex_rgb(CERTIFIED_COLOUR if c else LABEL_COLOURS[3])]
                     for lab, c in zip(labels, certified)], dtype=np.uint8)
    assert not _cells_changed(figs["interface-00-icm-labels"].svg, want).any()
    assert hex_rgb(CERTIFIED_COLOUR) not in [hex_rgb(c) for c in LABEL_COLOURS]


@pytest.mark.parametrize("pattern", ["encoder.layer.{}.attention.self.key.weight",
                                     "transformer.h.{}.mlp.c_fc.weight", "model.layers.{}.self_attn.q_proj.weight",
                                     "down_blocks.{}.resnets.0.conv1.weight"])
def test_shortened_labels_keep_the_layer_that_tells_them_apart(pattern):
    # Issue 24, item 5: "encoder.l…self.key.weight" made all six layers look alike.
    from physgsa.report.svgplot import _MAX_LABEL, shorten

    names = [pattern.format(i) for i in range(12)]
    short = [shorten(n) for n in names]
    assert len(set(short)) == len(names), short
    for i, s in enumerate(short):
        assert len(s) <= _MAX_LABEL and f".{i}." in f".{s}.", (i, s)
    assert shorten("blocks.3.mlp") == "blocks.3.mlp"


def test_table_numbers_use_one_notation_between_1e_minus_3_and_1e6():
    # Issue 24, item 12: the margins column mixed 2.852e+04 with 7825.
    from physgsa.report.pages import fmt

    rng = np.random.default_rng(0)
    for x in np.concatenate([10.0 ** rng.uniform(-3, 6, 300), [28520.3, 7825.0, 1e-3, 999999.0]]):
        for v in (x, -x):
            text = fmt(float(v))
            assert "e" not in text, text
            assert float(text) == pytest.approx(v, rel=5e-4), (v, text)
    assert fmt(1.234567e7) == "1.235e+07" and fmt(1.5e-5) == "1.5e-05"


def test_protocol_values_never_end_in_an_empty_field():
    # Issue 24, item 12: protocol item 11 read "reason:" with nothing after it.
    from physgsa.report.pages import _readable

    assert _readable({"ran": True, "reason": ""}) == "ran: yes"
    assert _readable({"ran": False, "reason": "n_perturbations = 0"}) == "ran: no; reason: n_perturbations = 0"
    assert _readable({"reason": " "}) == "none"


def test_window_gap_profile_draws_the_runs_gap_floor(result):
    # Issue 24, item 12: the window-gap plot had no line at its floor.
    from physgsa.report.figures import result_figures

    figs = result_figures(result)
    _, text = _svg_info(figs["profiles-window-gap"].svg)
    floor = result.certificate["parameters"]["gap_floor"]
    assert f"gap floor ({floor:g})" in text


def test_collapsed_headings_and_next_steps_fit_the_run(result):
    # Issue 24, item 12: collapsed interface headings omitted the failing ratio and the
    # no-structure flag; "What to try next" listed model options for a plain matrix chain.
    import dataclasses
    import re as _re

    from physgsa.report import glossary
    from physgsa.report.pages import render_report

    html = render_report(result, figures={})
    summaries = _re.findall(r'<details[^>]*class="interface"[^>]*><summary>(.*?)</summary>', html, flags=_re.S)
    assert len(summaries) == len(result.certificate["interfaces"])
    for det, summ in zip(result.certificate["interfaces"], summaries):
        ratio = det["verdicts"]["measured_ratio"]
        assert (("‖E‖<sub>F</sub> / ρ<sub>static</sub>" in summ) == (not det["member"] and ratio is not None)), summ
        assert ("no channel structure" in summ) == bool(det["no_channel_structure"]), summ
    assert (result.factors["source"] == "matrix").all()
    for opt in glossary.MODEL_ONLY_STEPS:
        assert f"<code>{opt}</code>" not in html
    assert "<code>--q 0.99</code>" in html
    model = dataclasses.replace(result, factors=result.factors.assign(source="static"))
    assert all(f"<code>{opt}</code>" in render_report(model, figures={}) for opt in glossary.MODEL_ONLY_STEPS)
