"""Files written whole or not at all.

Opening a file for writing empties it: a write that fails halfway (a full
disk, an exception, an interrupted kernel) leaves a truncated file where the
user's good one was. Here the new content goes to a temporary file in the
same directory, which is flushed to disk and then moved over the target in
one step (`os.replace`), keeping the target's permissions. On any error the
temporary file is removed and the target is as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["new_file_mode", "replacing", "write_text"]


def new_file_mode(path: str) -> int:
    """The permissions `path` keeps: its own if it exists, else those `open` would give."""
    if os.path.exists(path):
        return os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _sync(path: str) -> None:
    """Flush a closed file's content to disk (best effort where the platform refuses)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def replacing(path, suffix: str = ""):
    """A temporary path beside `path`, moved over `path` once the block succeeds.

    Write the new file to the yielded path; it replaces `path` only if the
    block ends without an exception, after being flushed to disk.

    Args:
        path: the file to write (a str or path-like).
        suffix: the temporary file's suffix (a writer may insist on one,
            as Keras on ".keras").

    Example:
        >>> with replacing("page.html") as tmp:
        ...     pathlib.Path(tmp).write_text(page)
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    mode = new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        _sync(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _sync(directory)  # the rename itself, on file systems that need it


def write_text(path, text: str, encoding: str = "utf-8") -> str:
    """Write `text` to `path` whole or not at all; returns the path written."""
    with replacing(path) as tmp:
        with open(tmp, "w", encoding=encoding) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return os.fspath(path)
