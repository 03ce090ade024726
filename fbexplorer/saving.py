"""Saving that never loses a model, and loading with errors that name the file.

Keras writes a `.keras` archive in place: a save that fails halfway (a full
disk, an exception while serializing) leaves a truncated file where the good
one was. `save_atomically` writes to a temporary file in the same directory
and moves it over the target only once it is complete. `load_model` checks
the archive first, so that a truncated or corrupted file gets an error that
names it (Keras reports such a file as "File not found"), and while it
loads, `loading_file` tells the model's `from_config` which file it reads, so
that an invalid config gets an error that names the file too.
"""

from __future__ import annotations

import contextvars
import os
import zipfile
import zlib

import keras

from fbexplorer import _keras
from fbexplorer._atomic import replacing

__all__ = ["load_model", "loading_file", "save_atomically"]

_loading = contextvars.ContextVar("fbexplorer_loading_file", default=None)


def loading_file() -> str | None:
    """The `.keras` file that `load_model` is reading now, else None."""
    return _loading.get()


def _local_archive(filepath, zipped=None) -> bool:
    if isinstance(filepath, (str, os.PathLike)):
        path = os.fspath(filepath)
        return path.endswith(".keras") and "://" not in path and zipped is not False
    return False


def save_atomically(save, filepath, *, overwrite: bool = True, zipped=None, **kwargs):
    """Run `save` on a temporary file beside `filepath`, then move it there.

    Args:
        save: the save function, `save(path, overwrite=..., zipped=..., **kwargs)`.
        filepath: the target; only a local `.keras` archive is written
            atomically, anything else goes straight to `save`.
        overwrite: replace an existing file without asking.
        zipped: as for `keras.Model.save`.
        **kwargs: passed to `save`.

    Example:
        >>> save_atomically(keras.Model.save.__get__(net), "net.keras")
    """
    if not _local_archive(filepath, zipped):
        return save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)
    path = os.fspath(filepath)
    if os.path.exists(path) and not overwrite:
        if not _keras.ask_to_overwrite(path):
            return None
    with replacing(path, suffix=".keras") as tmp:
        save(tmp, overwrite=True, zipped=zipped, **kwargs)
    return None


def load_model(filepath, custom_objects=None, compile: bool = True, safe_mode: bool = True):
    """`keras.saving.load_model`, with a clear error for a damaged archive.

    Args:
        filepath: the `.keras` file (or anything `keras.saving.load_model` takes).
        custom_objects: as for `keras.saving.load_model` (not needed for
            fbexplorer's own classes).
        compile: restore the compiled state.
        safe_mode: as for `keras.saving.load_model`.

    Returns:
        The model.

    Raises:
        FileNotFoundError: no file at `filepath`.
        ValueError: the file is not a valid `.keras` archive (truncated or
            corrupted), or its model's config is invalid (edited or
            damaged: a delay that is no whole number >= 1, an unknown kind,
            names that do not match the step model), naming the file.

    Example:
        >>> net = fbx.load_model("net.keras")
    """
    kwargs = dict(custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)
    if not _local_archive(filepath):
        return keras.saving.load_model(filepath, **kwargs)
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: '{path}'.")
    if not zipfile.is_zipfile(path):
        raise ValueError(_damaged(path, "it is not a zip archive"))
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    missing = [n for n in ("config.json", "metadata.json") if n not in names]
    if not names & {"model.weights.h5", "model.weights.npz"}:
        missing.append("model.weights.h5")
    if missing:
        raise ValueError(_damaged(path, f"it has no {missing[0]}"))
    token = _loading.set(path)
    try:
        return keras.saving.load_model(path, **kwargs)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise ValueError(_damaged(path, str(err))) from err
    finally:
        _loading.reset(token)


def _damaged(path: str, why: str) -> str:
    return (
        f"'{path}' is not a valid .keras archive ({why}): the file is truncated or "
        f"corrupted. Load an intact copy, or save the model again."
    )
