"""``physgsa study``: one table and one page across result directories and models.

Two result directories are written by certify here (small example chains) and read back, never
recomputed; one model (digits-vit, trained with a short budget into a temporary cache) is
certified by the study, with its random-weights control. The table is checked against the saved
results, the page is parsed as HTML with one row per model, and the outputs follow the
package's rules (foreign files refused, a locked directory refused, a rerun recomputes nothing).
"""

import json
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest

import physgsa
from physgsa.core.validation import OutputDirectoryError
from physgsa.report.study import study_figures
from physgsa.runs import study as S

EVIL = "ex<b>&'1"  # a result directory's name: it must come out escaped


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    a = physgsa.certify(physgsa.example_chain(n_factors=4, width=32))
    b = physgsa.certify(physgsa.example_chain(n_factors=5, width=32, seed=1))
    a.save(root / EVIL)
    b.save(root / "b")
    return root / EVIL, root / "b"


@pytest.fixture(scope="module")
def vit_cache(tmp_path_factory):
    """digits-vit trained with a short budget, cached where the full network would be."""
    pytest.importorskip("transformers")
    from physgsa.models.bundled import trained as T

    xdg = tmp_path_factory.mktemp("xdg")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(xdg))
    model, record = T.train("digits-vit", steps=3)
    T._write(T.cache_path("digits-vit"), model, record)
    yield xdg
    mp.undo()


@pytest.fixture(scope="module")
def made(dirs, vit_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    said = []
    res = physgsa.study([str(dirs[0]), str(dirs[1]), "digits-vit"], out, random_control=True, say=said.append)
    return res, out, said


class _Strict(HTMLParser):
    """Tag balance: every element closed in order, void elements never closed."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                      "wbr"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.doctype, self.tables = [], [], False, {}
        self.in_table, self.rows = None, 0

    def handle_decl(self, decl):
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.in_table = dict(attrs).get("id")
            self.tables[self.in_table] = 0
        if tag == "tr" and self.in_table is not None:
            self.tables[self.in_table] += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            self.errors.append(f"closed void <{tag}>")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()
        if tag == "table":
            self.in_table = None


def test_table_matches_the_saved_results(made, dirs):
    _, out, _ = made
    table = pd.read_parquet(out / "study.parquet")
    assert list(table.columns) == list(S.COLUMNS)
    assert table["model"].drop_duplicates().tolist() == [EVIL, "b", "digits-vit", "digits-vit (random)"]
    for d in dirs:
        saved = physgsa.load_result(d)
        rows = table[table["model"] == d.name].reset_index(drop=True)
        ifs = saved.interfaces
        assert len(rows) == len(ifs)
        assert rows["interface"].tolist() == ifs["interface"].tolist()
        for col in ("rho_static", "trunc_error", "energy_core", "energy_overlap", "energy_noise", "eps_trunc"):
            np.testing.assert_array_equal(rows[col].to_numpy(dtype=float), ifs[col].to_numpy(dtype=float))
        np.testing.assert_allclose(rows["ratio"].to_numpy(dtype=float),
                                   ifs["trunc_error"].to_numpy(dtype=float) / ifs["rho_static"].to_numpy(dtype=float))
        measured = [det["verdicts"]["measured_ratio"] for det in saved.certificate["interfaces"]]
        np.testing.assert_allclose(rows["measured_ratio"].to_numpy(dtype=float), measured, rtol=1e-12)
        assert rows["member"].tolist() == ifs["member"].tolist()
        v = saved.verdict
        assert set(rows["n_members"]) == {v["n_members"]} and set(rows["n_interfaces"]) == {v["n_interfaces"]}
        assert set(rows["family"]) == {"synthetic"} and set(rows["weights"]) == {"as given"}
        assert set(rows["run"]) == {str(d)}  # read where it is: nothing was certified again
        # ICM label shares, counted here from rows.parquet.
        for _, r in rows.iterrows():
            labels = saved.rows.loc[saved.rows["interface"] == r["interface"], "label"].tolist()
            assert r["share_SC"] == pytest.approx(labels.count("SC") / len(labels))
            assert r["share_ST"] == pytest.approx(labels.count("ST") / len(labels))
        # Depth normalised to [0, 1]: interface l sits between factors l and l + 1.
        n = len(saved.factors)
        np.testing.assert_allclose(rows["depth"].to_numpy(dtype=float), (np.arange(len(ifs)) + 0.5) / (n - 1))
    assert not (out / "runs" / EVIL).exists()


def test_models_are_certified_with_defaults_and_kept(made):
    _, out, said = made
    table = pd.read_parquet(out / "study.parquet")
    vit = table[table["model"] == "digits-vit"]
    run = Path(vit["run"].iloc[0])
    assert run == out / "runs" / "digits-vit" and (run / "certificate.json").is_file()
    saved = physgsa.load_result(run)
    assert saved.certificate["source"] == "digits-vit" and len(vit) == len(saved.interfaces) == 7
    assert saved.certificate["parameters"]["q"] == 0.9  # the default parameters
    assert set(vit["family"]) == {"vision transformer"} and set(vit["architecture"]) == {"vit"}
    assert set(vit["weights"]) == {"trained"}
    rnd = table[table["model"] == "digits-vit (random)"]
    assert set(rnd["weights"]) == {"random"} and set(rnd["family"]) == {"vision transformer"} and len(rnd) == 7
    cert = json.loads((out / "runs" / "digits-vit-random-seed0" / "certificate.json").read_text())
    assert cert["source"] == "digits-vit (random, seed 0)"
    assert not np.allclose(vit["rho_static"].to_numpy(dtype=float), rnd["rho_static"].to_numpy(dtype=float))
    assert any("certifying digits-vit" in line for line in said)


def test_page_is_valid_html_with_one_row_per_model(made):
    res, out, _ = made
    page = (out / "study.html").read_text(encoding="utf-8")
    p = _Strict()
    p.feed(page)
    p.close()
    assert p.doctype and p.errors == [] and p.stack == []
    assert p.tables["models"] == 1 + 4  # the header, then one row per model
    assert p.tables["interfaces"] == 1 + len(res.table)
    assert "ex&lt;b&gt;&amp;" in page and EVIL not in page
    assert "http://" not in page.replace("http://www.w3.org/", "") and "https://" not in page
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == sorted(f"{name}.svg" for name in study_figures(res))
    assert len(figures) == 13 and page.count("<img ") == len(figures)
    for name in figures:
        root = ElementTree.fromstring((out / "figures" / name).read_text(encoding="utf-8"))
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    grid = (out / "figures" / "study-heatmaps.svg").read_text(encoding="utf-8")
    assert "ex&lt;b&gt;&amp;" in grid and grid.count("<image ") == 4 * 4  # 4 models x (most, least) x (|A0|, B)


def test_rerun_recomputes_nothing(made, dirs, monkeypatch):
    res, out, _ = made
    before = (out / "study.html").read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("certify ran again")

    monkeypatch.setattr("physgsa.runs.certify.certify", refuse)
    again = physgsa.study([str(dirs[0]), str(dirs[1]), "digits-vit"], out, random_control=True)
    assert (out / "study.html").read_bytes() == before  # and the same bytes
    pd.testing.assert_frame_equal(again.table, res.table)


def test_foreign_files_are_refused_and_kept(dirs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirectoryError, match="notes.txt"):
        physgsa.study([str(dirs[1])], out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written
    physgsa.study([str(dirs[1])], out, keep_others=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "study.html").is_file()
    (out / "figures" / "mine.svg").write_text("<svg/>")
    physgsa.study([str(dirs[0])], out, keep_others=True)
    assert (out / "figures" / "mine.svg").read_text() == "<svg/>"


def test_a_directory_in_use_is_refused(dirs, tmp_path):
    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from physgsa.outputs.directory import OutputLock
        with OutputLock({str(out)!r}, what="certify"):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirectoryError, match="in use"):
            physgsa.study([str(dirs[1])], out)
    finally:
        holder.kill()
        holder.wait()


def test_unfinished_result_directory_is_named(tmp_path):
    d = tmp_path / "half"
    (d / ".physgsa-run").mkdir(parents=True)
    with pytest.raises(OutputDirectoryError, match="unfinished"):
        physgsa.study([str(d)], tmp_path / "out")


def test_command(dirs, tmp_path):
    from typer.testing import CliRunner

    from physgsa.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["study", str(dirs[0]), str(dirs[1]), "--out", str(tmp_path / "o"), "--json"])
    assert ok.exit_code == 0, ok.output
    lines = [json.loads(x) for x in ok.stdout.splitlines()]
    assert [x["model"] for x in lines] == [EVIL, "b"] and lines[1]["n_interfaces"] == 4
    bad = runner.invoke(app, ["study", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "p")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_the_same_directory_twice_is_refused_before_anything_is_written(dirs, tmp_path):
    # Issue 24, item 12: `study out1 out1` counted one directory twice.
    from typer.testing import CliRunner

    from physgsa.cli import app

    out = tmp_path / "twice"
    same = [str(dirs[0]), str(Path(dirs[0]) / ".")]  # two spellings of one directory
    with pytest.raises(physgsa.InvalidParameterError, match="give each one once"):
        physgsa.study(same, out)
    assert not out.exists()
    r = CliRunner().invoke(app, ["study", str(dirs[0]), str(dirs[0]), "--out", str(out)])
    assert r.exit_code == 2 and "give each one once" in r.output and "Traceback" not in r.output
    assert not out.exists()
