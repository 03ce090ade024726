"""Every ```python block of README.md and docs/*.md runs, and every `>>>` example in
the package's docstrings runs as a doctest.

A page's blocks run in order in one namespace, in a fresh directory, as a user pastes
them into a notebook: IPython magics included (a `%%fbmodel` block runs as a cell).
Two HTML comments on the line before a block steer it (docs/contributing.md):

    <!-- block: NAME -->        anchors it: CHECKS[NAME] asserts on what it left
    <!-- not run: REASON -->    leaves it out, with the reason (and where it is tested)

and `<!-- page not run: REASON -->` leaves out a whole page.
"""

import doctest
import importlib
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```", re.M | re.S)
MARK = re.compile(r"<!--\s*(block|not run):\s*(.*?)\s*-->\s*\n\s*$", re.S)
PAGE_MARK = re.compile(r"<!--\s*page not run:\s*(.*?)\s*-->", re.S)


def blocks(page: Path):
    """[(code, anchor or None, reason not run or None)] of a page's python blocks."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) != "python":
            continue
        before = text[: match.start()].rsplit("\n", 2)
        mark = MARK.search("\n".join(before[-2:]) + "\n")
        anchor = mark.group(2) if mark and mark.group(1) == "block" else None
        reason = mark.group(2) if mark and mark.group(1) == "not run" else None
        found.append((match.group(2), anchor, reason))
    return found


def page_reason(page: Path):
    mark = PAGE_MARK.search(page.read_text())
    return mark.group(1) if mark else None


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


RUNNABLE = [p for p in PAGES if page_reason(p) is None and any(r is None for *_, r in blocks(p))]


# ---------------------------------------------------------------- checks, by anchor
def check_readme_example(ns, out, tmp_path):
    mse = float(re.search(r"test MSE: ([0-9.e-]+)", out).group(1))
    assert mse < 0.01
    assert (tmp_path / "running_mean.keras").exists()
    assert ns["seq_out"].shape == (2, 20, 1)
    np.testing.assert_allclose(ns["same"].predict(ns["X"][:2], verbose=0), ns["seq_out"], atol=1e-6)


def check_fbmodel(ns, out, tmp_path):
    model = ns["net"]
    assert {layer.name for layer in model.graph.model.layers} >= {"d1", "d2", "d3"}
    assert [(s.name, s.delay) for s in model.graph.specs] == [("d3_prev", 1)]


def check_tracing(ns, out, tmp_path):
    both, cmp = ns["both"], ns["cmp"]
    assert (both["trained"] == both["loaded"]).all()
    import fbexplorer as fbx

    assert fbx.chunk_summary(cmp)["max_abs_difference"].iloc[0] == 0


def check_portraits(ns, out, tmp_path):
    assert ns["arrays"]["d1"].shape == (4, 20, 8)
    assert ns["fig"].layout.meta["nodes"] == ["loop"]
    assert ns["coords"].shape == (4, 20, 2)


def check_fixed_points(ns, out, tmp_path):
    fp, g = ns["fp"], ns["g"]
    assert len(fp) >= 1 and (fp.frame["q"] < fp.settings["tolerance"]).all()
    assert fp.jacobian(0).shape == (8, 8) and ns["start"]["h_prev"].shape == (1, 8)
    assert list(g.columns) == ["sample", "t", "node", "unit", "gradient"]
    assert ns["fig"].layout.yaxis.type == "log"


def check_lyapunov(ns, out, tmp_path):
    # The logistic map at r = 4 stretches by 2 per step on average: ln 2.
    assert ns["lam"].shape == (8, 1) and abs(np.median(ns["lam"][:, 0]) - np.log(2)) < 0.02


def check_continuation(ns, out, tmp_path):
    # x' = tanh(2 x + u): folds at u = +-(atanh(x_f) - 2 x_f), x_f = sqrt(1/2).
    u_f = np.arctanh(np.sqrt(0.5)) - np.sqrt(2.0)
    c = ns["c"]
    assert list(c.bifurcations["kind"]) == ["fold", "fold"]
    np.testing.assert_allclose(c.bifurcations["value"], [u_f, -u_f], atol=0.02)


def check_delays(ns, out, tmp_path):
    # y[t] = x[t] + y[t - 3], with y = 0 before step 0: a numpy loop.
    y = np.zeros(7 + 3)
    for t in range(7):
        y[t + 3] = 1 + y[t]
    np.testing.assert_allclose(np.asarray(ns["net"](ns["X"]))[0, :, 0], y[3:])


def check_stateful(ns, out, tmp_path):
    np.testing.assert_allclose(np.asarray(ns["second"])[:, -1, 0], [10, 10])
    np.testing.assert_allclose(ns["net"].get_states()["total"], np.full((2, 1), 100))


def check_generation(ns, out, tmp_path):
    assert np.asarray(ns["forecast"]).shape == (1, 20, 1)


def check_training(ns, out, tmp_path):
    assert sorted(ns["history"].history) == ["aux_loss", "loss", "out_loss", "out_mae"]
    assert ns["net"].get_layer("d1").trainable is False


def check_saving(ns, out, tmp_path):
    assert (tmp_path / "net.keras").exists()


def check_explorer(ns, out, tmp_path):
    assert ns["ex"].node.value == "d3" and ns["ex"].step.value == 10
    assert (tmp_path / "d3.html").stat().st_size > 0


def check_watch(ns, out, tmp_path):
    assert sorted(ns["watch"].frame["epoch"].unique()) == [0, 2, 4]


def check_live(ns, out, tmp_path):
    ex, live = ns["ex"], ns["live"]
    assert ex.data.epochs == [0, 1, 2] and sorted(live.census) == [0, 1, 2]
    assert ex.view.data["panels"]["training"]["epochs"] == [1, 2]


def check_memory(ns, out, tmp_path):
    assert "2000000000" in out


def check_zoo(ns, out, tmp_path):
    assert ns["probs"].shape == (len(ns["x_test"]), 4, 10)


def check_connections(ns, out, tmp_path):
    # x' = tanh(2x): the saddle at 0 leads to both stable points, +-0.9575.
    points, links = ns["points"], ns["links"]
    reached = points.flat[links["attractor"].to_numpy(int), 0]
    np.testing.assert_allclose(np.sort(reached), [-0.957504, 0.957504], atol=1e-5)
    assert ns["graph"].source.count("->") == 2


def check_refine_cycles(ns, out, tmp_path):
    # The logistic map at r = 3.2: the 2-cycle (r+1 -+ sqrt((r-3)(r+1))) / 2r.
    r, cycle = 3.2, ns["cycle"]
    closed = ((r + 1) + np.array([-1, 1]) * np.sqrt((r - 3) * (r + 1))) / (2 * r)
    np.testing.assert_allclose(np.sort(cycle.orbit(0)["x"][:, 0]), closed, atol=1e-5)
    assert list(ns["refined"]) == [2] and ns["census"].periods() == [2]


CHECKS = {
    "readme-example": check_readme_example,
    "readme-fbmodel": check_fbmodel,
    "magics-fbmodel": check_fbmodel,
    "tracing": check_tracing,
    "portraits": check_portraits,
    "fixed-points": check_fixed_points,
    "lyapunov": check_lyapunov,
    "continuation": check_continuation,
    "delays-feedback": check_delays,
    "stateful": check_stateful,
    "generation": check_generation,
    "training": check_training,
    "saving": check_saving,
    "explorer": check_explorer,
    "explorer-watch": check_watch,
    "explorer-live": check_live,
    "memory": check_memory,
    "zoo": check_zoo,
    "connections": check_connections,
    "refine-cycles": check_refine_cycles,
}


# ---------------------------------------------------------------- the runner
@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fbexplorer")
    ip.reset(new_session=False)
    yield ip
    ip.reset(new_session=False)


@pytest.mark.parametrize("page", RUNNABLE, ids=name)
def test_page_blocks_run(page, shell, tmp_path, monkeypatch, capsys):
    import fbexplorer as fbx

    monkeypatch.chdir(tmp_path)
    ns = shell.user_ns
    budget = fbx.set_memory_budget(None)  # a page may set its own (docs/memory.md)
    try:
        for i, (code, anchor, reason) in enumerate(blocks(page)):
            if reason is not None:
                continue
            source = shell.transform_cell(code)  # %magics -> get_ipython().run_*_magic(...)
            exec(compile(source, f"{name(page)}, python block {i + 1}", "exec"), ns)
            if anchor in CHECKS:
                CHECKS[anchor](ns, capsys.readouterr().out, tmp_path)
    finally:
        fbx.set_memory_budget(budget)


def test_every_block_runs_or_says_why_not():
    for page in PAGES:
        if page_reason(page) is not None:
            continue
        for code, _, reason in blocks(page):
            assert reason is None or len(reason) > 10, (name(page), code[:60])


def test_every_check_has_its_block():
    anchors = {anchor for page in RUNNABLE for _, anchor, r in blocks(page) if r is None}
    assert set(CHECKS) <= anchors, set(CHECKS) - anchors


# ---------------------------------------------------------------- doctests
DOCTEST_MODULES = [
    "fbexplorer._atomic",
    "fbexplorer.bifurcations",
    "fbexplorer.callbacks",
    "fbexplorer.census",
    "fbexplorer.drawing",
    "fbexplorer.dynamics_similarity",
    "fbexplorer.bptt",
    "fbexplorer.engine",
    "fbexplorer.fixed_point_search",
    "fbexplorer.graph",
    "fbexplorer.lyapunov_spectrum",
    "fbexplorer.memory",
    "fbexplorer.plots",
    "fbexplorer.portraits",
    "fbexplorer.saddle_connections",
    "fbexplorer.saving",
    "fbexplorer.tracing",
    "fbexplorer.widgets",
    "fbexplorer.zoo",
    "fbexplorer.zoo.classic",
    "fbexplorer.zoo.data",
    "fbexplorer.zoo.draw_gen",
    "fbexplorer.zoo.gated",
    "fbexplorer.zoo.vision",
    "fbexplorer.zoo.vrnn",
]


def test_every_module_with_examples_is_doctested():
    package = ROOT / "fbexplorer"
    with_examples = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in package.rglob("*.py")
        if ">>>" in path.read_text()
    }
    assert with_examples == set(DOCTEST_MODULES)


class _Checker(doctest.OutputChecker):
    """Compares what an example shows; an example that shows nothing must only run."""

    def check_output(self, want, got, optionflags):
        return not want or super().check_output(want, got, optionflags)


def docstring_namespace(module):
    """What the docstrings speak of: `net` (and `net2`), x -> d1 -> d2 -> d3 -> out
    with d3 fed back as `loop`, all of 5 units, compiled; data `X`, `Y`, `seq`; `fps`
    the fixed points of `net`; `a`, `b` two signals; `page` a page's text; a saved
    "net.keras" for saving's examples. Runs in the test's directory."""
    import keras

    import fbexplorer as fbx

    def build(compiled=True):
        x = keras.Input((5,), name="x")
        loop = fbx.Feedback((5,), name="loop")
        h1 = keras.layers.Dense(5, activation="tanh", name="d1")(
            keras.layers.Concatenate()([x, loop])
        )
        h3 = keras.layers.Dense(5, activation="tanh", name="d3")(
            keras.layers.Dense(5, activation="tanh", name="d2")(h1)
        )
        net = fbx.FeedbackModel(x, keras.layers.Dense(5, name="out")(h3), feedback={"loop": h3})
        if compiled:
            net.compile("adam", "mse")
        return net

    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 30, 5)).astype("float32")
    steps = np.arange(12.0)
    ns = {
        "fbx": fbx, "np": np, "keras": keras, "net": build(), "net2": build(),
        "X": X, "Y": np.tanh(X), "seq": X[:3, :12], "a": np.sin(steps), "b": np.cos(steps),
    }  # fmt: skip
    if module == "fbexplorer._atomic":
        ns.update(pathlib=__import__("pathlib"), page="<p>a page</p>")
    if module == "fbexplorer.saving":
        build(compiled=False).save("net.keras")  # what fbx.load_model's example loads
    if module == "fbexplorer.portraits":
        ns["fps"] = fbx.fixed_points(ns["net"], {"x": np.zeros(5, "float32")}, n_starts=8)
    return ns


@pytest.mark.parametrize("module", DOCTEST_MODULES)
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(module)
    extra = docstring_namespace(module)
    tests = [t for t in doctest.DocTestFinder().find(mod, module) if t.examples]
    assert tests, f"{module} has no >>> examples: take it off DOCTEST_MODULES"
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(checker=_Checker(), optionflags=flags)
    for test in tests:
        test.globs.update(extra)
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} doctest failures in {module} (output above)"
