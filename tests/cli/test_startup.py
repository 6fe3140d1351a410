"""Start-up and saving pay only for what they use (issue 15): which modules a command imports,
one drawing of every panel per save, and the encodings that must keep their bytes.

No timing here (benchmarks measure speed): the import sets are checked in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_DRIVER = r"""
import json, sys
out, argv = sys.argv[1], sys.argv[2:]
sys.argv = ["physgsa", *argv]
from physgsa.cli import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code or 0
with open(out, "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""


def imported_by(tmp_path, *argv, code: int = 0) -> set:
    """The modules a fresh ``physgsa ARGV...`` process has imported when it ends (with exit ``code``)."""
    record = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(record), *argv], capture_output=True, text=True,
                          timeout=300)
    assert record.is_file(), proc.stderr[-2000:]
    doc = json.loads(record.read_text())
    assert doc["code"] == code, proc.stderr[-2000:]
    return set(doc["modules"])


def test_help_imports_no_numerics(tmp_path):
    mods = imported_by(tmp_path, "--help")
    assert not {"numpy", "scipy", "pandas", "pyarrow", "jinja2", "torch"} & mods
    assert "physgsa.runs.certify" not in mods


def test_import_physgsa_is_light_and_keeps_its_names():
    code = r"""
import sys
import physgsa
light = not {"numpy", "pandas", "scipy", "physgsa.runs.certify"} & set(sys.modules)
from physgsa.core.spectra import compute_spectrum
from physgsa.api import spectra
import physgsa.outputs.result
print(light, physgsa.spectra is spectra, physgsa.certify.__module__, physgsa.Result is physgsa.outputs.result.Result,
      sorted(set(physgsa.__all__) - set(dir(physgsa))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "physgsa.api", "True", "[]"], out.stderr[-2000:]


def test_certify_of_a_small_npz_imports_no_torch_and_no_scipy_linalg(tmp_path):
    arrays = {f"blocks.{i}": np.eye(12) + 0.1 * np.random.default_rng(i).standard_normal((12, 12)) for i in range(3)}
    np.savez(tmp_path / "c.npz", **arrays)
    mods = imported_by(tmp_path, "certify", str(tmp_path / "c.npz"), "--out", str(tmp_path / "o"), "--quiet",
                       "--n-perturbations", "2")
    assert (tmp_path / "o" / "certificate.json").is_file()
    assert not {"torch", "transformers"} & mods
    # Factors this small take sigma_1(M) from LAPACK through numpy; ARPACK (and with it
    # scipy.linalg, 0.25 to 0.4 s of start-up) loads only for a large M (issue 25).
    assert not {"scipy.linalg", "scipy.sparse.linalg"} & mods


def test_a_bad_sample_file_is_refused_before_torch_loads(tmp_path):
    # torch's start-up (3 to 4 s) is paid only for a .pt sample; a wrong --sample is one line at once.
    (tmp_path / "net.py").write_text("def make():\n    raise SystemExit('never built')\n")
    (tmp_path / "s.txt").write_text("1 2 3")
    mods = imported_by(tmp_path, "certify", "--build", str(tmp_path / "net.py") + ":make", "--sample",
                       str(tmp_path / "s.txt"), "--out", str(tmp_path / "o"), code=2)
    assert "torch" not in mods and not (tmp_path / "o").exists()


# -- saving: every panel drawn once --------------------------------------------------------------

def test_save_draws_every_panel_once(tmp_path, monkeypatch):
    import physgsa
    import physgsa.report.figures as figures

    result = physgsa.certify(physgsa.example_chain(), n_perturbations=2)
    calls = []
    real = figures.result_figures

    def counted(res):
        calls.append(1)
        return real(res)

    monkeypatch.setattr(figures, "result_figures", counted)
    physgsa.save(result, tmp_path / "o")
    assert len(calls) == 1
    monkeypatch.undo()
    # The page embeds exactly the panels written to figures/.
    names = sorted(p.stem for p in (tmp_path / "o" / "figures").iterdir())
    assert names == sorted(real(result))


# -- the encodings keep their bytes ----------------------------------------------------------------

def _reference_png(rgb: np.ndarray) -> bytes:
    """The PNG as physgsa wrote it before: filter 0 on every row, one IDAT at zlib level 6."""
    import struct

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("shape, scale", [((1, 1), (1, 1)), ((5, 7), (3, 2)), ((40, 2), (7, 24)), ((96, 96), (3, 3))])
def test_png_of_enlarged_cells_is_the_png_of_the_enlarged_image(shape, scale):
    from physgsa.report import png

    rgb = np.random.default_rng(sum(shape)).integers(0, 256, shape + (3,), dtype=np.uint8)
    big = np.repeat(np.repeat(rgb, scale[0], axis=0), scale[1], axis=1)
    assert png.encode_png(rgb, scale=scale) == _reference_png(big) == png.encode_png(big)
    assert png.encode_png(rgb) == _reference_png(rgb)
    other = rgb.copy()
    other[0, 0, 0] ^= 1
    assert png.encode_png(other, scale=scale) == _reference_png(np.repeat(np.repeat(other, scale[0], 0), scale[1], 1))


def test_npz_writer_deflates_outputs_and_can_store_records(tmp_path):
    from physgsa.outputs.directory import write_npz as _write_npz

    arrays = {"b": np.arange(12.0).reshape(3, 4), "a": np.array([1, 2, 3], dtype=np.int32)}
    _write_npz(tmp_path / "out.npz", arrays)
    _write_npz(tmp_path / "rec.npz", arrays, compress=False)
    for name, method in (("out.npz", zipfile.ZIP_DEFLATED), ("rec.npz", zipfile.ZIP_STORED)):
        with zipfile.ZipFile(tmp_path / name) as zf:
            assert [i.filename for i in zf.infolist()] == ["a.npy", "b.npy"]
            assert {i.compress_type for i in zf.infolist()} == {method}
        with np.load(tmp_path / name) as npz:
            assert all(np.array_equal(npz[k], v) and npz[k].dtype == v.dtype for k, v in arrays.items())


def test_jsonable_arrays_match_element_by_element():
    from physgsa.outputs.jsonio import jsonable as _jsonable

    def slow(x):  # the element-by-element conversion: None for a non-finite float
        if isinstance(x, list):
            return [slow(v) for v in x]
        return x if not isinstance(x, float) or np.isfinite(x) else None

    for arr in (np.array([[1.5, np.nan], [np.inf, -2.0]]), np.array([1.0, 2.0]), np.arange(4, dtype=np.int16),
                np.array([True, False]), np.array(-np.inf), np.array(3.25), np.array(["a", "b"])):
        got = _jsonable(arr)
        assert got == slow(arr.tolist())
        assert json.dumps(got, allow_nan=False)  # plain JSON
        assert [type(v) for v in np.ravel(np.array(got, dtype=object))] == \
            [type(v) for v in np.ravel(np.array(slow(arr.tolist()), dtype=object))]


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.text(alphabet=st.sampled_from(list("ab&<>\"'\n\r\t \u00e9\x01\ud7ff")), max_size=24) | st.text(max_size=24))
def test_svg_escaping_is_xml_sax_saxutils_exactly(value):
    # svgplot escapes by hand (xml.sax.saxutils costs 40 ms of start-up): the same strings, byte for byte.
    from xml.sax.saxutils import escape, quoteattr

    from physgsa.report import svgplot

    clean = svgplot._NOT_XML.sub("\ufffd", value)
    assert svgplot.text(value) == escape(clean)
    assert svgplot.attr(value) == quoteattr(clean)
