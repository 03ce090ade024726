"""`Explorer.figure(...).write_image`: one browser per process, a failed figure
retried with a fresh one, a missing browser named in one line (kaleido and its
browser faked here; tests/browser/test_export.py draws with the real ones)."""

import sys

import keras
import plotly.graph_objects as go
import pytest
from helpers import seq

import fbexplorer as fbx
import fbexplorer.static_export as export


@pytest.fixture
def kaleido(monkeypatch):
    """Fake kaleido: `calls` lists what happened; `fail` figures fail first."""
    import kaleido as real

    calls, fail = [], [0]
    monkeypatch.setattr(real, "start_sync_server", lambda **k: calls.append("start"))
    monkeypatch.setattr(real, "stop_sync_server", lambda **k: calls.append("stop"))
    monkeypatch.setattr(export, "_started", False)
    monkeypatch.setenv("BROWSER_PATH", sys.executable)  # a file: "a browser is there"

    def draw(fig, path, *args, **kwargs):
        if fail[0]:
            fail[0] -= 1
            calls.append("failed")
            raise ValueError("Error 525: ReferenceError: kaleido_scopes is not defined\n  at ...")
        calls.append(("drew", str(path), kwargs.get("width")))

    monkeypatch.setattr(go.Figure, "write_image", draw)
    return calls, fail


def figure():
    x = seq(2, 4, 5)
    inp = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop")
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([inp, loop]))
    model = fbx.FeedbackModel(inp, h, feedback={"loop": h})
    return fbx.explore(model, x).figure("trajectories")


def test_one_browser_for_every_figure_and_a_failed_one_retried(kaleido, tmp_path):
    calls, fail = kaleido
    fig = figure()
    assert isinstance(fig, go.Figure) and isinstance(fig, export.ExportFigure)
    fig.write_image(tmp_path / "a.svg", width=300)
    fig.write_image(tmp_path / "b.png")
    assert calls == [
        "start",
        ("drew", str(tmp_path / "a.svg"), 300),
        ("drew", str(tmp_path / "b.png"), None),
    ]
    calls.clear()
    fail[0] = 2  # twice "kaleido_scopes is not defined", then drawn
    fig.write_image(tmp_path / "c.pdf")
    assert calls == [
        "failed",
        "stop",
        "start",
        "failed",
        "stop",
        "start",
        ("drew", str(tmp_path / "c.pdf"), None),
    ]


def test_a_figure_that_keeps_failing_gets_one_line(kaleido, tmp_path):
    calls, fail = kaleido
    fail[0] = export.ATTEMPTS
    with pytest.raises(RuntimeError) as info:
        figure().write_image(tmp_path / "d.png")
    message = str(info.value)
    assert "\n" not in message and message.startswith("write_image: kaleido failed 3 times")
    assert message.endswith(
        "Last: ValueError: Error 525: ReferenceError: kaleido_scopes is not defined"
    )
    assert calls.count("failed") == 3


def test_a_missing_browser_is_named(kaleido, monkeypatch, tmp_path):
    calls, _ = kaleido
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "chromium"))
    with pytest.raises(RuntimeError, match=r"found none \(BROWSER_PATH='.*chromium' is no file\)"):
        figure().write_image(tmp_path / "e.png")
    assert calls == []  # nothing started
