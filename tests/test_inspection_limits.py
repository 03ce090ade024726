"""Inspection without surprises: memory budgets, NaN and divergence, settings, de-duplication.

The memory tests set a budget explicitly (`fbx.set_memory_budget`), so they
are cheap and do not depend on this machine's free memory; the run functions
are replaced by ones that fail, so a refusal is shown to come before any
work. The sizes of the issue's reproductions are used as they were (the
arrays are made, the model never runs on them).
"""

import re
import warnings

import keras
import numpy as np
import pytest
from helpers import seq

import fbexplorer as fbx
from fbexplorer import explorer_data, fixed_point_search, memory, recording, widgets

GB = 10**9


@pytest.fixture
def budget(monkeypatch):
    """Set the budget for one test: `budget(bytes)`; the default comes back after."""
    monkeypatch.delenv("FBX_MEMORY_BUDGET", raising=False)
    previous = memory._setting
    yield fbx.set_memory_budget
    fbx.set_memory_budget(previous)


def test_the_environment_sets_the_budget_where_nothing_was_set(budget, monkeypatch):
    budget(None)
    monkeypatch.setenv("FBX_MEMORY_BUDGET", "512MB")
    assert fbx.memory_budget() == 512 * 10**6
    monkeypatch.setenv("FBX_MEMORY_BUDGET", "2e9")
    assert fbx.memory_budget() == 2 * 10**9
    budget(10**6)  # what the code set wins
    assert fbx.memory_budget() == 10**6
    budget(None)
    monkeypatch.setenv("FBX_MEMORY_BUDGET", "lots")
    with pytest.raises(ValueError, match="FBX_MEMORY_BUDGET is a number of bytes"):
        fbx.memory_budget()


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fail if a model is run or a fixed-point search built: refusals come first."""

    def fail(*args, **kwargs):
        raise AssertionError("the model ran before the memory check refused")

    monkeypatch.setattr(recording, "run_windows", fail)
    monkeypatch.setattr(fixed_point_search, "_search", fail)


def small(delay=1, units=5, name="net"):
    x = keras.Input((units,), name="x")
    loop = fbx.Feedback((units,), name="loop", delay=delay)
    h = keras.layers.Dense(units, name="h")(keras.layers.Concatenate()([x, loop]))
    return fbx.FeedbackModel(x, h, feedback={"loop": h}, name=name)


def deep(layers=20, units=64):
    """The issue's network: x -> Concatenate(x, loop) -> 20 Dense(64) fed back."""
    x = keras.Input((units,), name="x")
    loop = fbx.Feedback((units,), name="loop")
    h = keras.layers.Concatenate(name="cat")([x, loop])
    for i in range(layers):
        h = keras.layers.Dense(units, activation="tanh", name=f"d{i}")(h)
    return fbx.FeedbackModel(x, h, feedback={"loop": h}, name="deep")


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


# ------------------------------------------------------------------ the budget
def test_default_budget_is_half_the_available_memory(budget):
    budget(None)

    def meminfo():
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024

    # Other processes (another pytest worker, other jobs) move MemAvailable: compare
    # with readings taken just before and after, and allow a few tries, since a
    # process may take and give back memory between two readings.
    def bracketed(read, share):
        for _ in range(5):
            before, got, after = meminfo(), read(), meminfo()
            if 0.95 * min(before, after) * share <= got <= 1.05 * max(before, after) * share:
                return True
        return (before, got, after)

    assert bracketed(memory.available_memory, 1) is True
    assert bracketed(fbx.memory_budget, 0.5) is True


def test_budget_without_meminfo_falls_back_to_psutil_then_a_default(budget, monkeypatch):
    import builtins

    import psutil

    budget(None)
    real_open = builtins.open

    def no_meminfo(path, *args, **kwargs):
        if str(path) == "/proc/meminfo":
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_meminfo)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("M", (), {"available": 6 * GB}))
    assert fbx.memory_budget() == 3 * GB
    monkeypatch.setattr(psutil, "virtual_memory", lambda: 1 / 0)
    assert fbx.memory_budget() == memory.FALLBACK


def test_set_memory_budget_returns_the_previous_and_checks_its_argument(budget):
    budget(None)
    assert fbx.set_memory_budget(5 * GB) is None
    assert fbx.memory_budget() == 5 * GB
    assert fbx.set_memory_budget(None) == 5 * GB
    for bad in (0, -1, float("nan"), float("inf"), "8GB", True):
        with pytest.raises(ValueError, match="number of bytes >= 1, or None") as error:
            fbx.set_memory_budget(bad)
        one_line(error)


def test_refusal_says_need_budget_and_what_to_pass(budget):
    net = small()
    budget(1000)
    with pytest.raises(ValueError) as error:
        fbx.trace(net, seq(2, 6, 5))
    text = one_line(error)
    # 2 samples x 6 steps x (x 5 + loop 5 + concatenate 10 + h 5) values
    values = 2 * 6 * 25
    need = memory.PER_VALUE["trace"] * values
    assert f"would need about {memory.format_bytes(need)}" in text
    assert "2 samples x 6 steps x 25 units of 4 nodes" in text
    assert "the budget of 1.0 kB (set with fbx.set_memory_budget)" in text
    assert "Pass samples= or nodes=" in text
    budget(need)  # exactly the estimate: allowed
    assert len(fbx.trace(net, seq(2, 6, 5))) == values


# ------------------------------------------------- the reproductions
def test_explore_of_16_samples_at_T_20000_refuses_before_tracing(budget, nothing_runs):
    net = deep()
    budget(8 * GB)
    x = np.zeros((16, 20_000, 64), "float32")
    with pytest.raises(ValueError, match=r"^fbx.explore would need about \d") as error:
        fbx.explore(net, x)
    text = one_line(error)
    assert "16 samples x 20,000 steps x 1,536 units of 23 nodes" in text
    assert "Pass samples= or nodes= to explore less" in text


def test_stateful_view_of_4_samples_at_T_20000_is_off(budget):
    """The explorer of 4 samples fits in 8 GB; the stateful view beside it does not."""
    net = deep()
    budget(8 * GB)
    names = recording.resolve_nodes(net, None, what="explore")
    size = recording.planned_size(net, np.zeros((4, 20_000, 64), "float32"), names)
    assert size == (4, 20_000, 1536)
    note = widgets._check_explore_memory(net, names, size, stateful=True)
    assert note.startswith("the stateful view would need about 14.7 GB of memory")
    assert "\n" not in note
    assert widgets._check_explore_memory(net, names, size, stateful=False) is None


def test_trace_callback_of_200_epochs_refuses_when_the_fit_starts(budget, nothing_runs):
    net = deep()
    net.compile("sgd", "mse")
    budget(8 * GB)
    probe = np.zeros((16, 100, 64), "float32")
    watch = fbx.TraceCallback(probe)
    with pytest.raises(ValueError, match="^fbx.TraceCallback would need about") as error:
        net.fit(probe[:1], probe[:1], epochs=200, verbose=0, callbacks=[watch])
    text = one_line(error)
    assert "201 traces over 200 epochs, each of 16 samples x 100 steps" in text
    assert "Pass every= (now 1), samples= or nodes= to record less" in text
    assert watch.frames == {}
    net.fit(probe[:1], probe[:1], epochs=1, verbose=0)  # the model is unharmed


def test_trace_callback_counts_the_traces_still_to_come():
    watch = fbx.TraceCallback(seq(2, 6, 5), every=3)
    assert watch._traces_to_come(10) == 1 + 3 + 1  # start, epochs 3, 6, 9, end (10)
    assert watch._traces_to_come(9) == 1 + 3  # start, 3, 6, 9 (the end is 9)
    watch.frames[9] = None
    watch._epochs = 9
    assert watch._traces_to_come(3) == 1  # 9 is kept: then 12, which is the end


@pytest.mark.parametrize("n_starts", [4, 256])
def test_fixed_points_of_a_delay_1000_state_refuse_before_the_search(
    budget, nothing_runs, n_starts
):
    net = small(delay=1000, units=8)
    budget(8 * GB)
    with pytest.raises(ValueError, match="^fbx.fixed_points would need about") as error:
        fbx.fixed_points(net, {"x": np.zeros(8, "float32")}, n_starts=n_starts)
    text = one_line(error)
    assert f"{n_starts} starts, each with 12 matrices of 8,000 x 8,000 floats" in text
    assert 'method="adam"' in text
    # 12 x 8000^2 x 4 bytes = 3.1 GB a start: 2 starts fit in 8 GB
    assert "Pass n_starts=2 or fewer" in text


def test_explore_stateful_view_is_off_when_it_would_not_fit(budget):
    net = small()
    x = seq(2, 6, 5)
    values = 2 * 6 * 25
    alone = memory.PER_VALUE["explore"] * values + memory.PER_VALUE["explore_portrait"] * 2 * 6 * 5
    budget(alone + 1)  # the explorer fits, the stateful view beside it does not
    ex = fbx.explore(net, x)
    assert ex.mode.disabled and ex.comparison is None
    assert ex.mode.tooltips[1].startswith("Off: the stateful view would need about")
    assert "Pass samples= or nodes= to explore less (or chunks=1" in ex.mode.tooltips[1]
    budget(None)
    assert not fbx.explore(net, x).mode.disabled


def test_stateful_view_that_no_longer_fits_when_opened_turns_itself_off(budget):
    ex = fbx.explore(small(), seq(2, 6, 5))
    budget(100)  # memory ran short after the explorer opened
    ex.mode.value = "stateful"
    assert ex.mode.value == "stateless" and ex.mode.disabled
    assert "fbx.compare_stateful would need about" in ex.mode.tooltips[1]


def test_explore_of_a_recording_refuses_and_takes_nodes_and_samples(budget):
    net = small()
    net.compile("sgd", "mse")
    x = seq(3, 6, 5)
    watch = fbx.TraceCallback(x)
    net.fit(x, x, epochs=2, verbose=0, callbacks=[watch])
    rows = sum(len(df) for df in watch.frames.values())
    budget(memory.PER_VALUE["explore_recording"] * rows - 1)
    with pytest.raises(ValueError, match="^fbx.explore would need about") as error:
        fbx.explore(watch)
    assert "Pass nodes= or samples= to explore part of the recording" in one_line(error)
    ex = fbx.explore(watch, nodes=["loop", "h"], samples=2)
    full = watch.frame
    want = full[full.node.isin(["loop", "h"]) & (full["sample"] < 2)]
    assert len(ex.frame) == len(want)
    np.testing.assert_array_equal(ex.frame["value"].to_numpy(), want["value"].to_numpy())
    assert ex.node.options == ("loop", "h")
    now = fbx.trace(net, x[:2], "h", as_arrays=True)["h"]  # the weights of epoch 2
    np.testing.assert_allclose(ex.values("h", epoch=2), now, rtol=1e-6)
    with pytest.raises(ValueError, match="recorded no node 'nope'"):
        fbx.explore(watch, nodes=["nope"])
    with pytest.raises(ValueError, match="recorded the samples"):
        fbx.explore(watch, samples=[7])


@pytest.mark.parametrize(
    "call",
    [
        lambda net, x: fbx.gradient_flow(net, x),
        lambda net, x: fbx.portrait(net, x),
        lambda net, x: fbx.portrait(fbx.trace(net, x, "loop", as_arrays=True), nodes="loop"),
        lambda net, x: fbx.compare_stateful(net, x, 2),
        lambda net, x: fbx.trace(net, x, as_arrays=True),
        lambda net, x: fbx.fixed_points(net, {"x": np.zeros(5)}, method="adam"),
        lambda net, x: fbx.fixed_points(net, {"x": np.zeros(5)}, initial=x),
    ],
    ids=["gradient_flow", "portrait", "portrait-of-trace", "compare", "arrays", "adam", "initial"],
)
def test_every_inspection_tool_refuses_above_the_budget(budget, call):
    net, x = small(), seq(2, 6, 5)
    budget(100)
    with pytest.raises(ValueError, match=r"would need about .* more than the budget") as error:
        call(net, x)
    one_line(error)


def test_fixed_points_refuse_the_jacobians_of_too_many_points(budget, monkeypatch):
    net = small(units=40)
    jacobian = memory.JACOBIAN_MATRICES * 4 * 40 * 40
    search = memory.ADAM_VECTORS * 4 * 40 * 64
    budget(search + 3 * jacobian)  # the search fits, and the Jacobians of 3 points
    kept = {}

    def keep_all(flat, q, tol):
        kept["n"] = len(flat)
        return np.arange(len(flat))

    monkeypatch.setattr(fixed_point_search, "dedupe_points", keep_all)
    with pytest.raises(ValueError, match="the Jacobians of the 64 distinct points") as error:
        fbx.fixed_points(
            net, {"x": np.zeros(40)}, n_starts=64, method="adam", iterations=100, slow_tolerance=1e9
        )
    assert "Pass fewer n_starts=, a larger dedupe_tolerance=" in one_line(error)
    assert kept["n"] == 64


# ------------------------------------------------------------ NaN, divergence
def diverging(gain=1e6, units=3):
    """h_t = gain * (x_t + h_{t-1}): inf after a few steps, then NaN (inf - inf)."""
    x = keras.Input((units,), name="x")
    loop = fbx.Feedback((units,), name="loop")
    d = keras.layers.Dense(units, name="h")
    h = d(keras.layers.Concatenate()([x, loop]))
    net = fbx.FeedbackModel(x, h, feedback={"loop": h}, name="wild")
    rng = np.random.default_rng(3)
    d.kernel.assign(gain * rng.normal(size=(2 * units, units)).astype("float32"))
    return net


def test_explore_of_a_diverging_model_draws_the_finite_steps():
    net = diverging()
    x = seq(2, 12, 3)
    arrays = fbx.trace(net, x, as_arrays=True)
    states = arrays["loop"]
    bad = ~np.isfinite(states).all(axis=2)  # (sample, t)
    assert bad.any() and not bad.all()
    first = min(
        int(np.flatnonzero(~np.isfinite(a.reshape(2, 12, -1)).all(axis=(0, 2)))[0])
        for a in arrays.values()
        if not np.isfinite(a).all()
    )  # h and its inputs go first; loop, h of the step before, one step later
    with pytest.warns(UserWarning, match=rf"hold NaN or inf from t={first} ") as caught:
        ex = fbx.explore(net, x)
    assert [w.filename for w in caught if "NaN" in str(w.message)] == [__file__]  # the caller
    # The projection is the PCA of the finite states (numpy's SVD, as a reference).
    flat = states.reshape(-1, 3).astype("float64")
    fit = flat[np.isfinite(flat).all(axis=1)]
    _, s, vt = np.linalg.svd(fit - fit.mean(0), full_matrices=False)
    np.testing.assert_allclose(
        np.abs(ex.projection.components), np.abs(vt[:2]), rtol=1e-5, atol=1e-8
    )
    coords = ex.data.portrait.coords[0]  # (sample, t, 2)
    assert np.isnan(coords[bad]).all() and np.isfinite(coords[~bad]).all()
    row_bad = bad[ex.sample.value]
    note = f"NaN or inf at {int(row_bad.sum())} of 12 steps, from t={int(np.argmax(row_bad))}"
    assert note in ex.view.data["title"]
    assert np.isfinite(ex.view.data["colour"]["range"]).all()
    if ex.view.data["size"]:
        assert np.isfinite(ex.view.data["size"]["max"])


def test_portrait_of_a_diverging_model_draws_the_finite_steps():
    net = diverging()
    x = seq(2, 12, 3)
    states = fbx.trace(net, x, "loop", as_arrays=True)["loop"]
    bad_steps = np.flatnonzero(~np.isfinite(states).all(axis=2).all(axis=0))
    with pytest.warns(UserWarning, match="the portrait draws the finite steps"):
        fig = fbx.portrait(net, x)
    note = f"NaN or inf at {len(bad_steps)} of 12 steps, from t={bad_steps[0]}"
    assert note in fig.layout.title.text
    flat = states.reshape(-1, 3).astype("float64")
    finite = np.isfinite(flat).all(axis=1)
    coords, projection = fbx.pca_project({"loop": states})
    want = (flat[finite] - flat[finite].mean(0)) @ projection.components.T
    np.testing.assert_allclose(coords.reshape(-1, 2)[finite], want, rtol=1e-6, atol=1e-9)
    drawn = np.stack([fig.data[0].x, fig.data[0].y], axis=1).astype(float)
    np.testing.assert_array_equal(np.isnan(drawn).any(axis=1), ~finite.reshape(2, 12)[0])


def test_portrait_of_a_state_never_finite_says_so():
    states = np.full((2, 5, 3), np.nan)
    states[0, 0] = 1.0
    with pytest.raises(ValueError, match=r"NaN or inf at 5 of 5 steps \(from t=0\)"):
        fbx.pca_project({"loop": states})


def linear(a=0.5, units=3, delay=1):
    x = keras.Input((units,), name="x")
    loop = fbx.Feedback((units,), name="loop", delay=delay)
    d = keras.layers.Dense(units, use_bias=False, name="A")
    h = keras.layers.Add(name="h")([d(loop), x])
    net = fbx.FeedbackModel(x, h, feedback={"loop": h}, name="linear")
    d.kernel.assign(a * np.eye(units, dtype="float32"))
    return net


def test_fixed_points_refuse_nan_inputs_weights_and_initial():
    net = linear()
    held = {"x": np.array([0.0, np.nan, 1.0])}
    for method in ("newton", "adam"):
        with pytest.raises(ValueError, match=r"input 'x' holds NaN or inf \(1 of 3") as error:
            fbx.fixed_points(net, held, method=method)
        one_line(error)
    with pytest.raises(ValueError, match="holds NaN or inf"):
        fbx.fixed_points(net, {"x": np.array([0.0, 1e300, 1.0])})  # inf as float32
    with pytest.raises(ValueError, match="at every step of `initial`"):
        fbx.fixed_points(net, {"x": np.zeros(3)}, initial=np.full((2, 5, 3), np.nan, "float32"))
    kernel = net.step_model.get_layer("A").kernel
    kernel.assign(np.where(np.eye(3) > 0, np.inf, 0.0).astype("float32"))
    with pytest.raises(ValueError, match=r"weight 'A/kernel' of model 'linear' holds NaN or inf"):
        fbx.fixed_points(net, {"x": np.zeros(3)})


def test_fixed_points_start_from_the_finite_visited_states_only():
    net = linear(a=0.5)
    b = np.array([1.0, -2.0, 0.5], "float32")
    initial = np.tile(b, (4, 8, 1)).astype("float32")
    initial[:3, 2:] = np.nan  # three samples of four diverge from t=2
    fp = fbx.fixed_points(net, {"x": b}, initial=initial, n_starts=16)
    assert fp.n_converged == 16  # every start finite, every one converged
    np.testing.assert_allclose(fp.states["loop"][0], b / (1 - 0.5), rtol=1e-5)


@pytest.mark.parametrize(
    "setting, value",
    [
        ("tolerance", -1e-10),
        ("tolerance", float("nan")),
        ("tolerance", 0.0),
        ("slow_tolerance", float("inf")),
        ("iterations", 0),
        ("iterations", 2.5),
        ("n_starts", 0),
        ("n_starts", True),
        ("learning_rate", -0.1),
        ("noise", float("nan")),
        ("dedupe_tolerance", -1.0),
    ],
)
def test_fixed_point_settings_are_checked(setting, value):
    with pytest.raises(ValueError, match=rf"`{setting}` is .* Received: {setting}=") as error:
        fbx.fixed_points(linear(), {"x": np.zeros(3)}, **{setting: value})
    one_line(error)


# ------------------------------------------------------------ de-duplication
def quadratic_dedupe(flat, q, tol):
    """The de-duplication the grid replaced: each point against every kept one."""
    keep = []
    for i in np.argsort(q, kind="stable"):
        if all(np.linalg.norm(flat[i] - flat[j]) > tol for j in keep):
            keep.append(i)
    return np.asarray(sorted(keep), int)


def test_dedupe_keeps_what_the_quadratic_scan_keeps():
    for size in (1, 2, 3, 8, 64):
        rng = np.random.default_rng(size)
        centres = rng.uniform(-1, 1, (12, size))
        clustered = centres[rng.integers(0, 12, 300)] + rng.normal(0, 1e-4, (300, size))
        spread = rng.uniform(-1, 1, (150, size))
        exact = clustered[:20].copy()  # exact duplicates
        flat = np.concatenate([clustered, spread, exact]).astype("float32")
        q = rng.uniform(0, 1, len(flat))
        q[-20:] = q[:20]  # ties, broken by order as the scan breaks them
        for tol in (0.0, 1e-3, 0.3):
            kept = fixed_point_search.dedupe_points(flat, q, tol)
            np.testing.assert_array_equal(kept, quadratic_dedupe(flat, q, tol), f"{size} {tol}")


def test_dedupe_of_large_states_with_a_tiny_tolerance():
    rng = np.random.default_rng(1)
    flat = (rng.uniform(-1, 1, (200, 4)) * 1e8).astype("float32")
    flat = np.concatenate([flat, flat[:50]])  # exact duplicates, far from the origin
    q = rng.uniform(0, 1, len(flat))
    for tol in (0.0, 1e-12, 1e7):
        kept = fixed_point_search.dedupe_points(flat, q, tol)
        np.testing.assert_array_equal(kept, quadratic_dedupe(flat, q, tol), f"{tol}")


def test_dedupe_of_nothing():
    assert (
        fixed_point_search.dedupe_points(np.zeros((0, 4), "float32"), np.zeros(0), 1e-3).size == 0
    )


# ------------------------------------------------------------------ messages
def test_gradient_flow_targets_checked_as_fit_checks_them():
    net = small()
    net.compile("sgd", "mse")
    x = seq(2, 6, 5)
    with pytest.raises(ValueError) as fit_error:
        net.fit(x, np.zeros((2, 4, 5)), verbose=0)
    with pytest.raises(ValueError) as error:
        fbx.gradient_flow(net, x, np.zeros((2, 4, 5)))
    assert one_line(error) == str(fit_error.value)
    with pytest.raises(ValueError, match=r"one entry per input sample, 2\. .*\(3, 6, 5\)"):
        fbx.gradient_flow(net, x, np.zeros((3, 6, 5)))
    g = fbx.gradient_flow(net, x, np.zeros((2, 6, 5)), samples=[1])
    assert set(g["sample"]) == {1}


def test_portrait_of_a_model_without_feedback_says_what_is_true():
    x = keras.Input((3,), name="x")
    plain = fbx.FeedbackModel(x, keras.layers.Dense(2, name="d")(x), name="plain")
    with pytest.raises(ValueError) as error:
        fbx.portrait(plain, np.zeros((1, 4, 3), "float32"))
    text = one_line(error)
    assert "has no feedback, so it has no state to draw" in text
    assert "Pass nodes=[...]" in text and "['x', 'd']" in text
    assert "pass None" not in text
    with pytest.raises(ValueError, match="fewer than dims=3"):  # nodes= given: drawn if it can be
        fbx.portrait(plain, np.zeros((1, 4, 3), "float32"), nodes=["d"], dims=3)


def test_blocks_reorder_rows_that_come_out_of_order():
    net = small()
    x = seq(3, 6, 5)
    frame = fbx.trace(net, x, samples=[2, 0])
    shuffled = frame.sample(frac=1.0, random_state=0)
    _, blocks = explorer_data.blocks(shuffled, ["value"], [0, 2])
    arrays = fbx.trace(net, x, as_arrays=True)
    for name, block in blocks["value"].items():
        np.testing.assert_array_equal(block[0], arrays[name][[0, 2]].reshape(2, 6, -1))


def test_messages_name_no_internals():
    """Every refusal is one line: no 'Traceback', no TensorFlow graph names."""
    net = small()
    with pytest.raises(ValueError) as error:
        fbx.fixed_points(net, {"x": np.zeros(5)}, tolerance=-1)
    assert not re.search(r"Traceback|tf\.|Graph", one_line(error))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fbx.explore(net, seq(2, 6, 5))  # a finite trace warns of nothing
