"""Static figures for papers: an explorer's panels through plotly and kaleido.

kaleido drives a Chrome or Chromium; `make test-browser` installs Debian's
`chromium`, which kaleido finds on PATH, so this lives beside the browser test.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import fbexplorer as fbx  # noqa: E402


def test_panels_export_to_svg_and_png(tmp_path):
    keras.utils.set_random_seed(0)
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((3,), name="loop")
    h = keras.layers.Dense(3, activation="tanh", name="d1")(keras.layers.Concatenate()([x, loop]))
    net = fbx.FeedbackModel(x, h, feedback={"loop": h})
    ex = fbx.explore(net, np.ones((1, 8, 1), "float32"))
    ex.node.value = "d1"
    ex.figure().write_image(tmp_path / "d1.svg")
    svg = (tmp_path / "d1.svg").read_text()
    assert svg.startswith("<svg") and svg.count('class="trace scatter') == 3  # 3 units
    ex.figure("heatmap").write_image(tmp_path / "d1.png", scale=2)
    assert (tmp_path / "d1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ex.figure("portrait").write_image(tmp_path / "portrait.svg")
    svg = (tmp_path / "portrait.svg").read_text()
    assert svg.count('class="trace scatter') == 2  # the state's path and the marker at t
