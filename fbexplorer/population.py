"""A population of trained networks: what `fbx.sweep` returns.

A `Population` reads everything from its store (`fbexplorer.sweep_store`):
the frame of summaries, the per-network details, and each network's `.keras`
archive, loaded on demand. `Population.load(store)` opens a store written
earlier, by a sweep that finished or one that was interrupted.
"""

from __future__ import annotations

import io
import json

import pandas as pd

from fbexplorer.sweep_store import STATUS_COLUMNS, SweepStore

__all__ = ["Population"]


class Population:
    """The networks of a sweep, their summaries, details and failures.

    Attributes:
        frame: a DataFrame, one row per network that finished (index 0..n-1):
            a column per key of the grid, `seed`, the loss and metrics
            (`loss`, ...), the analyses' summaries (`fixed_points`,
            `stable_points`, `attractors`, `attractor_kinds`, `grad_first`,
            `grad_last`), `seconds` (the network's time in its worker) and
            `key` (its name in the store).
        failures: a DataFrame of the networks that failed: the grid's
            columns, `seed`, `key` and `error` (the traceback).
        store: the store's directory.
        grid: the grid's keys.
    """

    def __init__(self, store: SweepStore, keys=None, grid=()):
        self._store = store
        self.store = store.path
        self.grid = list(grid)
        rows = store.frame(keys)
        if rows.empty:
            rows = pd.DataFrame(columns=list(STATUS_COLUMNS))
        done = rows[rows["status"] == "done"].reset_index(drop=True)
        failed = rows[rows["status"] == "failed"].reset_index(drop=True)
        self._details = list(done["details"])
        self.frame = _summary(done, self.grid)
        keep = [c for c in [*self.grid, "seed", "key", "error"] if c in failed.columns]
        self.failures = failed[keep].reset_index(drop=True)

    @classmethod
    def load(cls, store) -> Population:
        """The population in the store directory `store` (every network it holds)."""
        opened = SweepStore(store)
        grid = []
        for row in opened.rows.values():
            grid = list(json.loads(row.get("grid") or "[]"))
            break
        return cls(opened, grid=grid)

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        failed = f", {len(self.failures)} failed" if len(self.failures) else ""
        return f"Population({len(self)} networks{failed}; store='{self.store}')"

    def _index(self, i, what: str) -> int:
        n = len(self.frame)
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise IndexError(
                f"Population.{what}: i must be the row of a network in .frame, an int in "
                f"[0, {n}). Received: i={i!r}."
            )
        return i % n

    def model(self, i: int):
        """Network `i` (a row of `.frame`), loaded from its `.keras` archive."""
        from fbexplorer.saving import load_model

        key = self.frame["key"].iloc[self._index(i, "model")]
        return load_model(self._store.archive(key))

    def results(self, i: int) -> dict:
        """Network `i`'s details: `history` (`{metric: per-epoch values}`) and each
        analysis's frame (`fixed_points`, `attractors`, `gradient_flow`: the
        gradient norms per node and step), as run in the sweep."""
        details = json.loads(self._details[self._index(i, "results")] or "{}")
        out = {}
        for name, value in details.items():
            out[name] = (
                value if name == "history" else pd.read_json(io.StringIO(value), orient="split")
            )
        return out

    def compare(self, inputs=None, *, method: str = "spectral", **options) -> pd.DataFrame:
        """Pairwise dissimilarities between the networks' dynamics (rows of
        `.frame`), by `fbx.compare_dynamics` (see it for `method` and the
        options): the models traced on the probe `inputs`; for
        `method="topology"` without `inputs`, the fixed points the sweep found.
        Kept as `.distances` for `mds_figure`. For example
        `pop.compare(pulses, skip=1, n_delays=3, rank=6)`, with `pulses` a
        batch of inputs: a pulse at t=0, then silence (notebook 08).
        """
        from fbexplorer.dynamics_similarity import compare_dynamics, stored_fixed_points

        if method == "topology" and inputs is None:
            networks = {i: stored_fixed_points(self.results(i), i) for i in range(len(self))}
        else:
            networks = {i: self.model(i) for i in range(len(self))}
        self.distances = compare_dynamics(networks, inputs, method=method, **options)
        return self.distances

    def mds_figure(self, colour: str | None = None, *, distances=None, title=None):
        """The networks placed by classical MDS of `distances` (default: the
        last `compare`), coloured by the column `colour` of `.frame` (a grid
        key such as `"units"`, `"seed"`, or `"loss"`); hovering a point names
        the network's row and grid values. For example
        `pop.mds_figure(colour="units")` after `pop.compare(pulses)`.
        """
        from fbexplorer.dynamics_similarity import mds_figure

        d = distances if distances is not None else getattr(self, "distances", None)
        if d is None:
            raise ValueError(
                "Population.mds_figure draws the dissimilarities of Population.compare; "
                "call pop.compare(inputs) first, or pass distances=. Received: distances=None"
            )
        if colour is not None and colour not in self.frame.columns:
            raise ValueError(
                f"Population.mds_figure: colour is a column of .frame, such as "
                f"{[*self.grid, 'seed']}. Received: colour={colour!r}"
            )
        shown = [c for c in [*self.grid, "seed"] if c in self.frame.columns]
        hover = {i: ", ".join(f"{c}={self.frame[c].iloc[i]}" for c in shown) for i in d.index}
        values = None if colour is None else self.frame[colour]
        return mds_figure(d, colour=values, hover=hover, title=title)


def _summary(done: pd.DataFrame, grid) -> pd.DataFrame:
    """The frame users read: grid keys and seed first, then the summaries."""
    hidden = {"status", "error", "details", "grid", "key", "seconds"}
    first = [c for c in [*grid, "seed"] if c in done.columns]
    rest = [c for c in done.columns if c not in hidden and c not in first]
    last = [c for c in ("seconds", "key") if c in done.columns]
    return done[first + rest + last].reset_index(drop=True)
