"""The one atomic file write, at the bottom so that every layer shares it.

An output (``outputs.directory``), a run record, a trajectory table and the bundled models'
weight caches are all replaced in one step through :func:`atomic_write`: readers see the old
file or the new one, never a part.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "umask"]


def umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no other way)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes | str | Callable[[Path], None]) -> Path:
    """Replace the file ``path`` in one step: a temporary file beside it, renamed onto it.

    Parameters
    ----------
    path : Path
        The file to write (its folder must exist).
    data : bytes, str or callable
        The content (a ``str`` is written as UTF-8), or ``data(tmp)`` that writes the
        temporary file ``tmp`` itself (for writers that take a path, such as an archive).

    Returns
    -------
    Path
        ``path``. Readers see the old file or the new one, never a part; a failure removes the
        temporary file and leaves the old one. The file gets the ordinary mode (``0o666`` less
        the umask).
    """
    fd, name = tempfile.mkstemp(prefix=".physgsa-tmp-", suffix=path.suffix, dir=path.parent)
    tmp = Path(name)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it private; an output is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
