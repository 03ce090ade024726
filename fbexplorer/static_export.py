"""Static figures (PNG, SVG, PDF) through kaleido, that do not flake.

kaleido 1.x draws a plotly figure in a headless Chrome or Chromium. Started
afresh for every figure it takes 3 to 7 s, and about one call in 25 failed
(`kaleido_scopes is not defined`, a page that had not loaded its script).
`write_image` keeps one browser for the process (`kaleido.start_sync_server`,
stopped at exit), retries a failed figure with a fresh browser, and turns a
missing browser into one line that names it and says how to install one.
`ExportFigure` is a plotly `Figure` whose `write_image` does this;
`Explorer.figure` returns one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import warnings

import plotly.graph_objects as go

__all__ = ["ExportFigure", "write_image"]

ATTEMPTS = 3  # a figure is tried this many times, each after the browser is restarted
_started = False


def _browser_missing() -> str | None:
    """Why kaleido would find no browser, or None: `BROWSER_PATH`, else Chrome or
    Chromium on PATH (what kaleido's choreographer looks for), else its own download."""
    path = os.environ.get("BROWSER_PATH")
    if path is not None:
        return None if os.path.isfile(path) else f"BROWSER_PATH={path!r} is no file"
    try:
        from choreographer.browsers.chromium import Chromium

        if Chromium.find_browser(skip_local=False):
            return None
    except Exception:  # an older choreographer: look on PATH as it does
        names = ("chromium", "chromium-browser", "google-chrome", "chrome")
        if any(shutil.which(n) for n in names):
            return None
    return "no Chrome or Chromium on PATH"


def _start():
    global _started
    import kaleido

    if not _started:
        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(_stop)
        _started = True


def _stop():
    global _started
    import kaleido

    if _started:
        _started = False
        try:
            kaleido.stop_sync_server(silence_warnings=True)
        except Exception:  # already gone with its browser
            pass


def write_image(fig, path, *args, **options) -> None:
    """`fig.write_image(path, **options)` with one browser kept for the process,
    a failed figure retried with a fresh one (`ATTEMPTS` in all), and a missing
    browser named in one line (a RuntimeError)."""
    missing = _browser_missing()
    if missing:
        raise RuntimeError(
            f"write_image: kaleido needs a Chrome or Chromium to draw static figures, and "
            f"found none ({missing}). Install one: apt-get install chromium (or "
            f"brew install --cask chromium), or run kaleido.get_chrome_sync(); or set "
            f"BROWSER_PATH to the browser."
        )
    error = None
    for _ in range(ATTEMPTS):
        try:
            _start()
            with warnings.catch_warnings():  # "kopts is ignored if using a server"
                warnings.filterwarnings("ignore", message="The kopts argument is ignored")
                go.Figure.write_image(fig, path, *args, **options)
            return
        except Exception as e:  # kaleido_scopes is not defined, a browser that died, ...
            error = e
            _stop()
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    raise RuntimeError(
        f"write_image: kaleido failed {ATTEMPTS} times to draw the figure to {str(path)!r}, "
        f"each with a fresh browser. Last: {type(error).__name__}: {first}"
    ) from error


class ExportFigure(go.Figure):
    """A plotly `Figure` whose `write_image` keeps one browser, retries and names
    a missing browser (`fbexplorer.static_export.write_image`)."""

    def write_image(self, file, *args, **kwargs):
        return write_image(self, file, *args, **kwargs)
