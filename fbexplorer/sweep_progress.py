"""A sweep's progress: networks done, running and failed, and the time left.

One bar (tqdm.auto: an ipywidgets bar in a notebook, one updating line in a
terminal) whose postfix counts the running and failed networks; the time left
is tqdm's, from the networks done so far. Failures are listed when the
sweep ends.
"""

from __future__ import annotations

import sys

__all__ = ["SweepProgress"]


class SweepProgress:
    """The display of one sweep (`show=False`: counts only, nothing drawn)."""

    def __init__(self, total: int, resumed: int = 0, show: bool = True):
        self.total = total
        self.done = resumed
        self.failed = 0
        self.running = 0
        self._bar = None
        if show:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                initial=resumed,
                desc="fbx.sweep",
                unit="net",
                file=sys.stderr,
                dynamic_ncols=True,
            )
            self._bar.set_postfix_str(self._counts(), refresh=False)

    def _counts(self) -> str:
        return f"running {self.running}, failed {self.failed}"

    def update(self, *, finished: int = 0, failed: int = 0, running: int | None = None):
        """Count `finished` more networks (of which `failed` failed); set `running`."""
        before = (self.done, self.failed, self.running)
        self.done += finished
        self.failed += failed
        if running is not None:
            self.running = running
        if self._bar is not None and (self.done, self.failed, self.running) != before:
            self._bar.set_postfix_str(self._counts(), refresh=False)
            self._bar.update(finished)
            if not finished:
                self._bar.refresh()

    def close(self, failures=None):
        """End the display; list the failures (grid values and the error's last line)."""
        if self._bar is not None:
            self._bar.close()
        if failures is not None and len(failures) and self._bar is not None:
            lines = [f"fbx.sweep: {len(failures)} of {self.total} networks failed:"]
            for row in failures.to_dict("records"):
                error = (row.get("error") or "").strip().splitlines()
                shown = {k: v for k, v in row.items() if k not in ("error", "key")}
                lines.append(f"  {shown}: {error[-1] if error else 'failed'}")
            lines.append("  (their tracebacks: population.failures)")
            print("\n".join(lines), file=sys.stderr)
