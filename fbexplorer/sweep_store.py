"""A sweep's store: a directory of `.keras` files and one Parquet table.

    store/
        results.parquet       one row per network finished (or failed)
        networks/<key>.keras  each finished network

Each network has a key, a hash of what it is made from (its parameters, seed,
epochs and analyses), so that the same sweep run again finds what it already
did. Every write is whole or nothing (`_atomic.replacing`): a kernel killed
mid-sweep leaves the table and the archives as they were after the last
network that finished. A store read back is checked like user input.
"""

from __future__ import annotations

import hashlib
import json
import os

import pandas as pd

from fbexplorer._atomic import replacing

__all__ = ["STATUS_COLUMNS", "TABLE", "SweepStore", "network_key"]

TABLE = "results.parquet"
# The store's own columns (beside the grid's keys and the analyses' summaries).
STATUS_COLUMNS = ("key", "status", "seconds", "error", "details")


def network_key(params: dict, seed: int, epochs: int, analyses) -> str:
    """A short, stable name for one network of a sweep."""
    what = {"params": params, "seed": seed, "epochs": epochs, "analyses": analyses}
    text = json.dumps(what, sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _needs_parquet(what: str):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError(
            f"{what} needs pyarrow to write its Parquet table: install the extra with "
            f"`pip install fbexplorer[sweep]`. Received: no module named 'pyarrow'."
        ) from None


class SweepStore:
    """The store at `path`: its table (rows by key) and its archives."""

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        self.table_path = os.path.join(self.path, TABLE)
        self.networks = os.path.join(self.path, "networks")
        _needs_parquet("fbx.sweep's store")
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(
                f"fbx.sweep: store= must be a directory (created if missing). "
                f"Received: store='{self.path}', a file."
            )
        os.makedirs(self.networks, exist_ok=True)
        self.rows = self._read()

    def _read(self) -> dict:
        if not os.path.exists(self.table_path):
            return {}
        try:
            table = pd.read_parquet(self.table_path)
        except Exception as e:
            raise ValueError(
                f"fbx.sweep: the store's table {TABLE} could not be read "
                f"({type(e).__name__}): it is damaged, or the folder is no sweep's store. "
                f"Move the table away to start afresh, or pass another store=. "
                f"Received: store='{self.path}'."
            ) from None
        missing = [c for c in STATUS_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(
                f"fbx.sweep: the store's table {TABLE} has no column '{missing[0]}': the "
                f"folder is no sweep's store. Move the table away to start afresh, or pass "
                f"another store=. Received: store='{self.path}'."
            )
        return {str(r["key"]): r for r in table.to_dict("records")}

    def done(self, key: str) -> bool:
        """Whether network `key` finished (and its archive is there)."""
        row = self.rows.get(key)
        return row is not None and row["status"] == "done" and os.path.exists(self.archive(key))

    def archive(self, key: str) -> str:
        return os.path.join(self.networks, f"{key}.keras")

    def add(self, row: dict, model: bytes | None = None) -> None:
        """Record one network: its archive first, then the table with its row."""
        if model is not None:
            with replacing(self.archive(row["key"]), suffix=".keras") as tmp:
                with open(tmp, "wb") as f:
                    f.write(model)
        self.rows[row["key"]] = row
        self._write()

    def _write(self) -> None:
        frame = pd.DataFrame(list(self.rows.values()))
        with replacing(self.table_path, suffix=".parquet") as tmp:
            frame.to_parquet(tmp, index=False)

    def frame(self, keys=None) -> pd.DataFrame:
        """The rows (of `keys`, in that order; default all), as a DataFrame."""
        keys = list(self.rows) if keys is None else [k for k in keys if k in self.rows]
        return pd.DataFrame([self.rows[k] for k in keys])
