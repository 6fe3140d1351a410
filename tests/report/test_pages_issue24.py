"""Issue 24, items 5 and 6: compare.html, study.html and spectra.html at report.html's standard.

In the real browser (Debian's chromium, driven by Playwright, as tests/report/test_report.py
opens report.html): no page scrolls sideways at 900 px, every sortable table's header carries its
definition and links to it, compare.html opens with its verdict, draws its heatmaps with axes,
group labels and a colour bar, keeps "||ΔA||_F" on one line and ticks its trajectories with the
checkpoints' names; a long factor name never widens an interface figure.
"""

import base64
import re

import numpy as np
import pytest

import physgsa

LONG = "encoder.layer.{}.attention.self.output.dense.weight.with.a.very.long.name"


def _arrays(seed=0, long=True):
    chain = physgsa.example_chain(n_factors=3, width=16, seed=seed)
    return {(LONG.format(i) if long else f"b{i}"): f.matrix for i, f in enumerate(chain.factors)}


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages24")
    arrs = _arrays()
    np.savez(root / "base.npz", **arrs)
    rng = np.random.default_rng(0)
    ckpts = []
    for k in (1, 2):
        path = root / f"checkpoint-{k}000.npz"
        np.savez(path, **{n: a + 0.02 * k * rng.standard_normal(a.shape) for n, a in arrs.items()})
        ckpts.append(str(path))
    physgsa.save(physgsa.compare(str(root / "base.npz"), noise=0.01), root / "cmp")
    physgsa.save(physgsa.compare(str(root / "base.npz"), ckpts), root / "traj")
    physgsa.certify(physgsa.Chain.from_arrays(list(arrs.items()))).save(root / "ra")
    physgsa.certify(physgsa.example_chain(n_factors=3, width=16, seed=1)).save(root / "rb")
    physgsa.study([str(root / "ra"), str(root / "rb")], root / "study")
    physgsa.save(physgsa.spectra(str(root / "base.npz")), root / "spec")
    return {"compare": root / "cmp" / "compare.html", "trajectory": root / "traj" / "compare.html",
            "study": root / "study" / "study.html", "spectra": root / "spec" / "spectra.html"}


def _open(browser, path, width, media="screen"):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.emulate_media(media=media)
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, errors


_LAYOUT = """() => {
  const W = document.documentElement.clientWidth;
  const wide = Array.from(document.querySelectorAll('body *')).filter(e => e.getClientRects().length
      && e.getBoundingClientRect().right > W + 0.5).map(e => e.tagName + ' ' + e.textContent.slice(0, 40));
  const headers = Array.from(document.querySelectorAll('table.sortable th'));
  const undefined_ = headers.filter(h => !h.title || !h.querySelector('a.def')).map(h => h.textContent);
  const missing = headers.filter(h => h.querySelector('a.def'))
      .map(h => h.querySelector('a.def').getAttribute('href').slice(1)).filter(a => !document.getElementById(a));
  // "||ΔA||_F" never breaks across lines.
  const broken = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    for (let i = n.data.indexOf('||ΔA'); i >= 0; i = n.data.indexOf('||ΔA', i + 1)) {
      const r = document.createRange(); r.setStart(n, i); r.setEnd(n, Math.min(n.data.length, i + 8));
      const tops = new Set(Array.from(r.getClientRects()).filter(x => x.width > 0).map(x => Math.round(x.top)));
      if (tops.size > 1) broken.push(n.data.slice(Math.max(0, i - 10), i + 12));
    }
  }
  return {pageWidth: document.documentElement.scrollWidth, W, wide: wide.slice(0, 8), undefined_, missing, broken,
          tables: headers.length ? document.querySelectorAll('table.sortable').length : 0};
}"""


@pytest.mark.parametrize("name", ["compare", "trajectory", "study", "spectra"])
@pytest.mark.parametrize("width, media", [(1400, "screen"), (900, "screen"), (760, "print")])
def test_pages_fit_the_window_and_define_every_header(pages, browser, name, width, media):
    page, errors = _open(browser, pages[name], width, media)
    assert errors == []
    lay = page.evaluate(_LAYOUT)
    assert lay["pageWidth"] <= lay["W"], lay  # no sideways scroll
    assert lay["tables"] >= 1 and lay["undefined_"] == [] and lay["missing"] == [], lay
    assert lay["broken"] == [], lay
    page.close()


def _svg(src: str) -> str:
    assert src.startswith("data:image/svg+xml;base64,"), src[:40]
    return base64.b64decode(src.split(",", 1)[1]).decode()


def test_compare_page_opens_with_its_verdict_and_labels_its_heatmaps(pages, browser):
    page, errors = _open(browser, pages["compare"], 1400)
    assert errors == []
    verdict = page.inner_text("#verdict")
    assert re.search(r"\d+ of 2 interfaces", verdict), verdict
    top = page.evaluate("document.getElementById('verdict').getBoundingClientRect().top")
    first = page.evaluate("document.querySelector('table').getBoundingClientRect().top")
    assert top < first
    srcs = page.eval_on_selector_all("section img", "imgs => imgs.map(i => i.getAttribute('src'))")
    maps = [_svg(s) for s in srcs]
    assert len(maps) == 2 * 2  # BASE's and OTHER's map of each interface
    for svg in maps:
        assert "mean |entry| per cell" in svg  # the colour bar
        assert "input unit" in svg and "output row" in svg  # the axes
        assert ">g0<" in svg  # the group labels
    page.close()


def test_trajectory_is_ticked_with_the_checkpoints(pages, browser):
    page, _ = _open(browser, pages["trajectory"], 1400)
    svg = _svg(page.get_attribute("img[alt='trajectories']", "src"))
    assert "checkpoint-1000" in svg and "checkpoint-2000" in svg
    assert ">0.5<" not in svg and ">0.50<" not in svg
    page.close()


def test_a_long_factor_name_does_not_widen_the_interface_figures():
    from physgsa.report.figures import result_figures

    def widths(long):
        res = physgsa.certify(physgsa.Chain.from_arrays(list(_arrays(long=long).items())))
        return {re.sub(r"^interface-\d+-", "", k): f.width for k, f in result_figures(res).items()
                if k.startswith("interface-")}

    short, long = widths(False), widths(True)
    assert short.keys() == long.keys()
    assert {k: long[k] for k in long if long[k] > short[k] + 1} == {}
