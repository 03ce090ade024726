"""The explorer's data without its widget (fbexplorer.explorer_data): arrays from a
tidy frame, the box fills, the edge widths, the NaN warning and the portrait,
each against a numpy reference on a hand-made frame (no model is traced)."""

import types

import numpy as np
import pandas as pd
import pytest

from fbexplorer.explorer_data import ExplorerData, blocks, nonfinite_warning
from fbexplorer.view import decode

RNG = np.random.default_rng(0)


def tidy(arrays: dict, epochs=None) -> pd.DataFrame:
    """A frame as fbx.trace makes it from `{node: (sample, t, unit)}`
    (or `{node: (epoch, sample, t, unit)}` with `epochs`)."""
    parts = []
    for name, a in arrays.items():
        a = a if epochs is not None else a[None]
        e, s, t, u = np.indices(a.shape).reshape(4, -1)
        part = {"sample": s, "t": t, "node": name, "unit": u, "value": a.reshape(-1)}
        if epochs is not None:
            part["epoch"] = np.asarray(epochs)[e]
        parts.append(pd.DataFrame(part))
    frame = pd.concat(parts, ignore_index=True)
    frame["node"] = pd.Categorical(frame["node"], categories=list(arrays))
    return frame


def stub(*states):
    """A model as the data reads it: its states' names and shapes."""
    specs = [types.SimpleNamespace(name=n, shape=s) for n, s in states]
    return types.SimpleNamespace(graph=types.SimpleNamespace(specs=specs), name="stub")


ARRAYS = {
    "d1": RNG.normal(size=(3, 5, 4)).astype("float32"),
    "loop": RNG.normal(size=(3, 5, 2)).astype("float32"),
}


def test_blocks_of_shuffled_rows_with_epochs_and_some_samples():
    values = {n: RNG.normal(size=(2, 3, 5, a.shape[-1])) for n, a in ARRAYS.items()}
    frame = tidy(values, epochs=[4, 9])
    frame = frame[frame["sample"] != 1].sample(frac=1.0, random_state=1)
    epochs, found = blocks(frame, ["value"], [0, 2])
    assert epochs == [4, 9]
    for name, a in values.items():
        np.testing.assert_array_equal(found["value"][name], a[:, [0, 2]])


def test_fills_and_page_against_numpy():
    data = ExplorerData(stub(), tidy(ARRAYS))
    assert data.portrait is None and data.samples == [0, 1, 2] and data.length == 5
    for by, reference in (
        ("mean", lambda a: a.mean(-1)),
        ("norm", lambda a: np.sqrt((a.astype("float64") ** 2).sum(-1))),
        ("unit", lambda a: a[..., 3] if a.shape[-1] > 3 else np.full(a.shape[:-1], np.nan)),
    ):
        fill = data.node_stats(1, by, unit=3)  # (epoch, node, t)
        want = np.stack([reference(ARRAYS["d1"][1]), reference(ARRAYS["loop"][1])])
        np.testing.assert_allclose(fill[0], want, rtol=1e-5)
    page = data.page("loop", 2, mode="stateless", by="norm", unit=0, edges=["loop", "gone"])
    (run,) = page["runs"]
    np.testing.assert_array_equal(decode(run["values"], (1, 5, 2))[0], ARRAYS["loop"][2])
    norms = np.sqrt((ARRAYS["loop"][2].astype("float64") ** 2).sum(-1))
    np.testing.assert_allclose(page["size"]["max"], norms.max(), rtol=1e-5)
    assert page["colour"]["range"][0] == 0.0 and page["title"] == "loop, sample 2"
    mean = data.page("d1", 0, mode="stateless", by="mean", unit=0, edges=[])
    top = max(abs(a[0].mean(-1)).max() for a in ARRAYS.values())
    np.testing.assert_allclose(mean["colour"]["range"], [-top, top], rtol=1e-5)
    assert mean["size"] is None and mean["panels"] == {}


def test_nonfinite_warning_names_nodes_and_first_step():
    arrays = {n: a[None].copy() for n, a in ARRAYS.items()}
    assert nonfinite_warning(arrays, 5) is None
    arrays["loop"][0, 1, 3, 0] = np.inf
    arrays["d1"][0, 0, 4, 2] = np.nan
    message = nonfinite_warning(arrays, 5)
    assert "['d1', 'loop'] hold NaN or inf from t=3 (at most 1 of 5 steps" in message
    frame = tidy({n: a[0] for n, a in arrays.items()})
    with pytest.warns(UserWarning, match="from t=3") as caught:
        ExplorerData(stub(), frame)
    assert caught[0].filename == __file__  # stacklevel=1 points at the caller


def test_portrait_is_the_pca_of_the_states_and_epochs_are_named():
    data = ExplorerData(stub(("loop", (2,))), tidy(ARRAYS))
    flat = ARRAYS["loop"].reshape(-1, 2).astype("float64")
    _, _, vt = np.linalg.svd(flat - flat.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(data.projection.components), np.abs(vt), rtol=1e-5, atol=1e-7)
    coords = (ARRAYS["loop"] - flat.mean(0)) @ data.projection.components.T
    np.testing.assert_allclose(data.portrait.coords[0], coords, rtol=1e-4, atol=1e-5)
    panel = data.panels(1)["portrait"]
    np.testing.assert_allclose(decode(panel["coords"], (1, 5, 2))[0], coords[1], atol=1e-5)
    assert data.values("loop").shape == (3, 5, 2)
    with pytest.raises(ValueError, match=r"no epoch 3 was traced\. Expected one of none"):
        data.epoch_index(3)


def test_panel_figures_draw_the_data_without_a_widget():
    from fbexplorer.explorer_figures import panel_figure

    data = ExplorerData(stub(("loop", (2,))), tidy(ARRAYS))
    lines = panel_figure(data, "trajectories", "d1", 2, 3)
    for u, scatter in enumerate(lines.data):
        np.testing.assert_array_equal(scatter.y, ARRAYS["d1"][2, :, u])
    assert lines.layout.shapes[0].x0 == 3 and lines.layout.title.text == "d1, sample 2"
    heat = panel_figure(data, "heatmap", "loop", 1, 0).data[0]
    np.testing.assert_array_equal(np.asarray(heat.z), ARRAYS["loop"][1].T)
    plane = panel_figure(data, "portrait", "d1", 1, 4)
    np.testing.assert_allclose(
        [plane.data[-1].x[0], plane.data[-1].y[0]], data.portrait.coords[0, 1, 4]
    )
    with pytest.raises(ValueError, match=r"panel is one of .* Received: panel='table'"):
        panel_figure(data, "table", "d1", 1, 0)
    with pytest.raises(ValueError, match="model 'stub' has no portrait here"):
        panel_figure(ExplorerData(stub(), tidy(ARRAYS)), "portrait", "d1", 1, 0)


def test_track_holds_inputs_targets_and_outputs_of_a_sample():
    model = stub(("loop", (2,)))
    model.graph.input_names, model.output_names = ["x"], ["d1"]
    arrays = {**ARRAYS, "x": RNG.normal(size=(3, 5, 1)).astype("float32")}
    epochs = np.stack([arrays["d1"], 2 * arrays["d1"]])
    frame = tidy(
        {"x": np.stack([arrays["x"]] * 2), "d1": epochs, "loop": np.stack([ARRAYS["loop"]] * 2)},
        [0, 5],
    )
    targets = RNG.normal(size=(3, 5, 4))
    data = ExplorerData(model, frame, targets=targets)
    track = {k["role"]: k for k in data.panels(1)["track"]}
    np.testing.assert_array_equal(decode(track["input"]["values"], (1, 5, 1))[0], arrays["x"][1])
    np.testing.assert_allclose(
        decode(track["target"]["values"], (1, 5, 4))[0], targets[1], rtol=1e-6
    )
    np.testing.assert_array_equal(decode(track["output"]["values"], (2, 5, 4))[:, :], epochs[:, 1])
    assert track["output"]["epochs"] and not track["input"]["epochs"]
    with pytest.raises(
        ValueError, match=r"targets for a model with outputs \['d1', 'e'\] is a dict"
    ):
        model.output_names = ["d1", "e"]
        ExplorerData(model, frame, targets=targets)
