"""Chains from files: ``.npz`` and ``.safetensors`` of 2-D arrays.

The order of the factors is the file's key order (for ``.npz`` the order the arrays were
saved; for ``.safetensors`` the order of its header, which writers usually sort by name), or
the ``order`` given. Every failure raises :class:`~physgsa.ChainFileError` (or
:class:`~physgsa.InvalidFactorError` for a bad matrix) naming the file and the array.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zipfile
import zlib
from pathlib import Path
from tokenize import TokenError
from typing import Sequence

import numpy as np

from ..core.chain import Chain, Deferred, Factor, check_matrix
from ..core.resources import default_limit, format_bytes
from ..core.validation import ChainFileError, ResourceLimitError

__all__ = ["read_chain", "read_groups", "FileMatrix", "SafetensorsFile", "SUFFIXES", "not_an_archive", "check_archive",
           "check_npy_members"]

SUFFIXES = (".npz", ".safetensors")

# safetensors dtypes we read; BF16 has no numpy type and is widened by hand.
_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": None,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "U16": np.uint16, "U32": np.uint32, "U64": np.uint64,
}
_ST_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def dtype_name(code: str) -> str:
    """A safetensors dtype code as numpy/torch spell it ("BF16" -> "bfloat16"); other names as given."""
    return _ST_NAMES.get(code, code)

_MAX_HEADER = 100 * 1024 * 1024
# Everything zipfile, zlib and numpy's .npy reader raise on a damaged or hostile archive (found by
# fuzzing: unsupported compression methods, "encrypted" flags, bad deflate streams).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError, NotImplementedError,
               RuntimeError, zlib.error, struct.error, OverflowError)


# What numpy's .npy header parser raises on a damaged header (besides the archive's own errors).
_HEADER_ERRORS = _ZIP_ERRORS + (ValueError, SyntaxError, TokenError, TypeError, RecursionError, MemoryError)


def check_npy_members(path, *, stored_only: bool = False) -> str | None:
    """Why an archive's ``.npy`` members cannot be read safely, or None when each can.

    Every member's header is read (a few hundred bytes) and must parse, and the bytes its shape
    and dtype declare must be exactly the bytes the member holds, so a header declaring
    terabytes in a small file is refused before numpy allocates anything. An object array
    (pickled data) is left to the reader, which refuses it. ``stored_only``: every member must
    be stored uncompressed and all of them must fit in the file (physgsa's own records).
    """
    path = Path(path)
    try:
        disk = path.stat().st_size
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if stored_only and (any(i.compress_type != zipfile.ZIP_STORED for i in infos)
                                or sum(i.file_size for i in infos) > disk):
                return "it holds compressed members or declares more bytes than the file holds"
            for info in infos:
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[:-4]
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(fh))
                    header = fh.tell()
                if dtype.hasobject:
                    continue
                declared = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
                if header + declared != info.file_size:
                    return (f"array {key!r} declares shape {list(shape)} ({dtype}, {format_bytes(declared)}) "
                            f"but holds {format_bytes(max(info.file_size - header, 0))}")
    except _HEADER_ERRORS as exc:
        return f"an array header is unreadable ({type(exc).__name__})"
    return None


def check_archive(path, where: str, error=None, limit: int | None = None, *, one_at_a_time: bool = False) -> None:
    """Refuse a zip archive (``.npz``, a torch ``.pt``) whose members would expand beyond ``limit``.

    The uncompressed sizes the archive declares are summed before anything is extracted, so a
    small file that inflates to many gigabytes (a zip bomb) is refused before any allocation.
    A member that expands more than the declared size is stopped by ``zipfile`` itself (it
    checks the CRC and length as it reads). ``error`` is the error class to raise.
    ``one_at_a_time``: the members are read one at a time and never held together (a chain
    file's factors), so the largest member, not their sum, must fit.
    """
    error = error or ResourceLimitError
    limit = default_limit() if limit is None else limit
    try:
        with zipfile.ZipFile(path) as zf:
            sizes = [info.file_size for info in zf.infolist()]
            total = max(sizes, default=0) if one_at_a_time else sum(sizes)
            count = len(sizes)
    except _ZIP_ERRORS + (ValueError,):
        return  # not a zip archive: the reader itself reports it
    if total > limit:
        raise error(
            f"{where} declares {'a member' if one_at_a_time else f'{count} members'} expanding to "
            f"{format_bytes(total)}, above the memory limit of "
            f"{format_bytes(limit)}; refusing to extract it (it may be a zip bomb). If the file is genuine, "
            "raise --max-memory."
        )


def _select(keys: list[str], order: Sequence[str] | None, path: Path) -> list[str]:
    if not keys:
        raise ChainFileError(f"Chain file '{path}' holds no arrays. Save at least one 2-D matrix in it.")
    if order is None:
        return keys
    order = [o.strip() for o in order]
    missing = [o for o in order if o not in keys]
    if missing:
        raise ChainFileError(
            f"--order names {missing[0]!r}, which chain file '{path}' does not hold. Its arrays: {', '.join(keys)}."
        )
    if len(set(order)) != len(order):
        raise ChainFileError(f"--order names an array twice ({', '.join(order)}). Name each at most once.")
    return order


def not_an_archive(path) -> str | None:
    """Why ``path`` is not an .npz archive (a zip of .npy arrays), or None when it is a zip file.

    numpy.load takes any file that is neither a zip nor an .npy for a pickle and advises
    ``allow_pickle=``, an option physgsa never uses: the file is simply not an archive.
    """
    if zipfile.is_zipfile(path):
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    if head.startswith(b"\x93NUMPY"):
        return "it is a single .npy array, not an archive of named arrays (save them with numpy.savez)"
    if not head:
        return "it is empty"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "it is a text file"
        except UnicodeDecodeError:
            pass
    if head.startswith(b"PK"):
        return "it is an incomplete zip file (truncated?)"
    return "it is not a zip file"


def _open_npz(path: Path):
    """The archive, opened for reading, after the checks that refuse a file that is not one."""
    why = not_an_archive(path)
    if why is not None:
        raise ChainFileError(
            f"Chain file '{path}' is not a readable .npz archive: {why}. An .npz is a zip of .npy arrays, as "
            "numpy.savez writes; save the matrices with numpy.savez (or give a .safetensors file)."
        )
    # Factors are read one at a time and released (deferred): only the largest must fit.
    check_archive(path, f"Chain file '{path}'", error=ChainFileError, one_at_a_time=True)
    why = check_npy_members(path)  # before numpy allocates what a header declares
    if why is not None:
        raise ChainFileError(f"Chain file '{path}' is corrupted: {why}. Save it again with numpy.savez.")
    try:
        npz = np.load(path, allow_pickle=False)
    except _ZIP_ERRORS + (ValueError,) as exc:
        raise ChainFileError(
            f"Chain file '{path}' is not a readable .npz archive ({type(exc).__name__}: {exc}). "
            "It may be truncated or corrupted; save it again with numpy.savez."
        ) from None
    if not hasattr(npz, "files"):
        raise ChainFileError(f"Chain file '{path}' holds a single array, not an .npz archive of named matrices.")
    return npz


def _npz_array(npz, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:
        raise ChainFileError(
            f"Array {key!r} in '{path}' cannot be read without unpickling ({exc}); it is not numeric. "
            "Save plain numeric arrays."
        ) from None
    except _ZIP_ERRORS as exc:
        raise ChainFileError(
            f"Array {key!r} in '{path}' is truncated or corrupted ({type(exc).__name__}). Save the file again."
        ) from None


def _stored_member(path: Path, zf: zipfile.ZipFile, key: str):
    """``(offset, dtype, fortran_order, shape)`` of an array stored uncompressed in the archive, for
    a memory map of its bytes; None where it is compressed or not a plain numeric .npy.
    """
    try:
        info = zf.getinfo(key + ".npy")
    except KeyError:
        return None
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        fh.seek(start)
        try:
            version = np.lib.format.read_magic(fh)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(fh))
        except (ValueError, OSError, EOFError, SyntaxError):
            return None
        offset = fh.tell()
    if dtype.kind not in "fiu" or dtype.hasobject or len(shape) != 2 or \
            offset - start + math.prod(shape) * dtype.itemsize != info.file_size:
        return None
    return offset, dtype.str, bool(fortran), tuple(shape)


def _digest(arr: np.ndarray) -> str:
    """SHA-256 of an array as stored (dtype, shape and C-order bytes): what a later read must match."""
    h = hashlib.sha256(json.dumps([arr.dtype.str, list(arr.shape)]).encode())
    h.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return h.hexdigest()


def _read_npz(path: Path, order) -> list[tuple[str, tuple, str, tuple | None, str]]:
    """(name, shape, stored dtype, memory-map location) of each selected array, every one read
    through ``zipfile`` (which checks its CRC) and checked once.
    """
    with _open_npz(path) as npz:
        out = []
        for key in _select(list(npz.files), order, path):
            arr = _npz_array(npz, key, path)
            shape = check_matrix(arr, key, f"'{path}'", copy=False).shape
            where = _stored_member(path, npz.zip, key)
            out.append((key, shape, arr.dtype.name, where if where is not None and where[3] == shape else None,
                        _digest(arr)))
            del arr
    return out


def _safetensors_header(path: Path) -> tuple[dict, int]:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ChainFileError(f"Chain file '{path}' is too short to be a .safetensors file ({size} bytes).")
        (n,) = struct.unpack("<Q", head)
        if n > min(_MAX_HEADER, size - 8):
            raise ChainFileError(
                f"Chain file '{path}' declares a {n}-byte header in a {size}-byte file; it is truncated or corrupted."
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ChainFileError(f"Chain file '{path}' has an unreadable .safetensors header; it is corrupted.") from None
    if not isinstance(header, dict):
        raise ChainFileError(f"Chain file '{path}' has a .safetensors header that is not a JSON object.")
    data = size - 8 - n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        ok = (isinstance(info, dict) and isinstance(info.get("shape"), list)
              and isinstance(info.get("data_offsets"), list))
        if ok:
            shape, (a, b) = info["shape"], (info["data_offsets"] + [None, None])[:2]
            ok = all(isinstance(d, int) and d >= 0 for d in shape) and isinstance(a, int) and isinstance(b, int)
            ok = ok and 0 <= a <= b <= data
        if not ok:
            raise ChainFileError(
                f"Tensor {key!r} in '{path}' has a malformed or out-of-range header entry; the file is "
                "truncated or corrupted."
            )
    return header, 8 + n


class SafetensorsFile:
    """A ``.safetensors`` file read lazily, one tensor at a time (memory-mapped).

    The header is validated before any tensor is read (sizes and offsets inside the file);
    ``read`` returns a read-only view of the file's bytes (BF16 widened to float32). A file
    that changed since its header was read is refused, so tensors of two versions never mix.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._stamp = _stamp(self.path)
        self.header, self._start = _safetensors_header(self.path)
        self.metadata = self.header.get("__metadata__") or {}

    def keys(self) -> list[str]:
        """Tensor names in the header's order."""
        return [k for k in self.header if k != "__metadata__"]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.header[key]["shape"])

    def dtype(self, key: str) -> str:
        return str(self.header[key].get("dtype"))

    def read(self, key: str) -> np.ndarray:
        if key not in self.header or key == "__metadata__":
            raise ChainFileError(f"'{self.path}' holds no tensor named {key!r}.")
        info = self.header[key]
        code = info.get("dtype")
        if code not in _ST_DTYPES:
            raise ChainFileError(
                f"Tensor {key!r} in '{self.path}' has dtype {code!r}, which is not a real number type physgsa "
                f"reads ({', '.join(_ST_DTYPES)})."
            )
        shape = tuple(info["shape"])
        a, b = info["data_offsets"]
        itemsize = 2 if code == "BF16" else np.dtype(_ST_DTYPES[code]).itemsize
        # Python integers: an absurd shape must not wrap around int64 to match the byte count.
        if b - a != math.prod(shape) * itemsize:
            raise ChainFileError(
                f"Tensor {key!r} in '{self.path}' declares shape {list(shape)} ({code}) but holds {b - a} bytes; "
                "the file is corrupted."
            )
        if b == a:  # an empty tensor (a zero in its shape): nothing to allocate
            return np.zeros(shape, dtype=np.float32)
        try:
            changed = _stamp(self.path) != self._stamp
        except OSError:
            changed = True
        if changed:
            raise ChainFileError(
                f"'{self.path}' changed or disappeared since physgsa read its header, so its tensors could mix two "
                "versions. Rerun once the file is complete."
            )
        raw = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._start + a, shape=(b - a,))
        if code == "BF16":
            # bfloat16 is the top half of a float32: widen exactly.
            return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
        return raw.view(np.dtype(_ST_DTYPES[code]).newbyteorder("<")).reshape(shape)


def _read_safetensors(path: Path, order) -> list[tuple[str, tuple, str, None, str]]:
    """(name, shape, stored dtype, None, digest) of each selected tensor, every one read and checked once."""
    f = SafetensorsFile(path)
    out = []
    for key in _select(f.keys(), order, path):
        arr = np.array(f.read(key), order="C")  # one consistent copy: a memory map follows the file
        out.append((key, check_matrix(arr, key, f"'{path}'", copy=False).shape, dtype_name(f.dtype(key)), None,
                    _digest(arr)))
        del arr
    return out


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class FileMatrix(Deferred):
    """One array of a chain file, read from the file each time it is needed.

    The file's size, modification time and inode are recorded when the chain is read, and the
    SHA-256 of each array's bytes (``digest``); a file that changed since is refused
    (:class:`~physgsa.ChainFileError`), even one rewritten in place with the same size and
    modification time, so a run never mixes two versions of its input. Each read takes one
    private copy of the array and checks it against the digest before it is used. An array
    stored uncompressed in an .npz (``where``: its offset, dtype and order, found when the
    chain was read, after ``zipfile`` checked its CRC) is read through a memory map of its
    bytes instead of through ``zipfile``.
    """

    __slots__ = ("path", "key", "shape", "stamp", "where", "digest")

    def __init__(self, path: Path, key: str, shape: tuple, stamp: tuple, where: tuple | None = None,
                 digest: str | None = None):
        self.path, self.key, self.shape, self.stamp = Path(path), key, tuple(shape), tuple(stamp)
        self.where, self.digest = where, digest

    def __reduce__(self):
        return (FileMatrix, (self.path, self.key, self.shape, self.stamp, self.where, self.digest))

    def read(self) -> np.ndarray:
        try:
            now = _stamp(self.path)
        except OSError as exc:
            raise ChainFileError(f"Chain file '{self.path}' can no longer be read ({exc.strerror}); it was moved or "
                                 "deleted during the run. Restore it and rerun the same command.") from None
        if now != self.stamp:
            raise ChainFileError(
                f"Chain file '{self.path}' changed during the run (its size or modification time is not what it was "
                "when the run began), so its factors could mix two versions. Rerun once the file is complete."
            )
        if self.where is not None:
            offset, dtype, fortran, shape = self.where
            arr = np.memmap(self.path, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape,
                            order="F" if fortran else "C")
        elif self.path.suffix == ".npz":
            with _open_npz(self.path) as npz:
                arr = _npz_array(npz, self.key, self.path)
        else:
            arr = SafetensorsFile(self.path).read(self.key)
        if self.digest is not None:
            # One private C-ordered copy (a memory map would follow later writes), checked against
            # the bytes read when the run began: a file rewritten with the same size and time is
            # caught here, before any of its numbers is used.
            arr = np.array(arr, order="C")
            if _digest(arr) != self.digest:
                raise ChainFileError(
                    f"Chain file '{self.path}' changed during the run (array {self.key!r} no longer holds the "
                    "bytes it held when the run began), so its factors could mix two versions. Rerun once the "
                    "file is complete."
                )
        # No copy of a C-ordered array (normalizing the factor copies it anyway); another order is
        # copied into C order, as for a chain in memory, so LAPACK sees the same layout.
        return check_matrix(arr, self.key, f"'{self.path}'", copy=not arr.flags.c_contiguous)


def read_chain(path, *, order: Sequence[str] | None = None) -> Chain:
    """Read a chain from an ``.npz`` or ``.safetensors`` file of 2-D arrays.

    Every array is read and checked here, one at a time (a bad one is refused now, naming it),
    but none is kept: each factor is a :class:`FileMatrix`, read again from the file when a
    computation needs it and released after, so memory does not grow with the chain's length.

    Parameters
    ----------
    path : str or Path
        The file.
    order : sequence of str, optional
        The arrays to use, in this order (default: every array, in the file's key order).
    """
    p = Path(path)
    if p.suffix not in SUFFIXES:
        raise ChainFileError(
            f"Chain file '{p}' has suffix {p.suffix!r}; physgsa reads {' and '.join(SUFFIXES)} chain files."
        )
    if not p.is_file():
        raise ChainFileError(f"Chain file '{p}' does not exist. Check the path." if not p.exists() else
                             f"Chain file '{p}' is not a regular file (a folder, a pipe or a device). Give the path "
                             "of an .npz or .safetensors file.")
    stamp = _stamp(p)
    entries = _read_npz(p, order) if p.suffix == ".npz" else _read_safetensors(p, order)
    if _stamp(p) != stamp:
        raise ChainFileError(f"Chain file '{p}' changed while it was being read. Rerun once the file is complete.")
    return Chain.from_factors([Factor(name=k, matrix=FileMatrix(p.resolve(), k, shape, stamp, where, digest),
                                      provenance={"source": "matrix", "kind": "given", "dtype": d})
                               for k, shape, d, where, digest in entries], source=str(p))


def read_groups(groups: str):
    """``--groups FILE.npz``: user-given row groups, one integer array per interface name
    (``left->right``) or right-hand factor name; any other value is returned as it is (a rule name).
    """
    if not groups.endswith(".npz"):
        return groups
    path = Path(groups)
    if not path.is_file():
        raise ChainFileError(f"Groups file '{path}' does not exist. Check the path.")
    why = not_an_archive(path)
    if why is not None:
        raise ChainFileError(f"Groups file '{path}' is not a readable .npz archive: {why}. Save the integer arrays "
                             "with numpy.savez.")
    check_archive(path, f"Groups file '{path}'", error=ChainFileError)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except _ZIP_ERRORS + (ValueError,) as exc:
        raise ChainFileError(f"Groups file '{path}' is not a readable .npz of integer arrays ({exc}).") from None
