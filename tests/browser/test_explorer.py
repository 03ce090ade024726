"""A real browser runs a notebook in JupyterLab 4 and Notebook 7 and plays its explorers.

`make test-browser` installs what this needs (Debian's Chromium, JupyterLab,
Notebook 7, playwright) and runs it; plain `make test` leaves this folder out.
For each front end (`ui`: "lab" or "notebook") the test starts its server on a
free loopback port with a fixed token, over a temporary copy of the notebook's
folder (the repository's notebooks are never executed or saved), opens the
notebook in headless Chromium, and runs all cells. The notebook holds two
explorers: `fbx.explore(net, X)` first and `fbx.explore(watch)` (a
`TraceCallback`, with an epoch slider) last. On the first, pressing Play must
change the graph's node fills and move the trajectories' marker in step with
the slider: sampled while it plays, the slider, the view and the marker show
the same t every time. On the last, moving the epoch slider must change the
trajectories. On the first, the portrait tab must draw the state (both front
ends) and, in JupyterLab, move its marker with the slider, on the same t; its
fixed points (the fixture passes `fixed_points=`) must show, filled where
stable and hollow where not. Last, in JupyterLab, the notebook is saved with
its widget state (the test's settings tick "Save Widget State
Automatically") and exported with `jupyter nbconvert --to html`; the page,
opened from disk, must play and scrub as below. A second test writes `Explorer.save_html` to a
file, opens it from disk with every network request refused, and plays and
scrubs it. A third exports a notebook with `jupyter nbconvert --execute --to
html` (widget state stored) and opens the page from disk with no server: Play
advances t and changes the fills, the slider's arrow keys scrub it with the
slider, the view, the marker and the readout on the same t, and the
portrait draws fixed points known in closed form. An exported page loads
its widget code from CDNs; here those files come from their npm packages
(`widget_cdn.py`, cached in build/widget-cdn; npm must be installed), and
every other request is refused.

Environment:
    FBX_BROWSER_NOTEBOOK  the notebook to run, relative to the repository root
                          or absolute (default notebooks/01_quickstart.ipynb;
                          tests/browser/fixture.ipynb is the harness's own,
                          quicker stand-in).
    FBX_BROWSER_TIMEOUT   seconds for the whole test (default 420).
    FBX_CHROMIUM          the browser executable (default: chromium on PATH).

Screenshots go to build/: explorer.png (the first explorer after Play, in
JupyterLab; the README shows a copy as docs/explorer.png),
explorer-epochs.png (the epoch slider moved), explorer-portrait.png (the
portrait tab, JupyterLab only), the same with -notebook7 for Notebook 7,
explorer-offline.png (the saved page) and explorer-export.png (the exported
page, on its portrait tab); on a failing step
the page's screenshot goes to explorer.png (or explorer-notebook7.png) and
the failure message names the front end, the step and what the page showed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = pathlib.Path(__file__).with_name("fixture.ipynb")
NOTEBOOK = REPO / os.environ.get("FBX_BROWSER_NOTEBOOK", "notebooks/01_quickstart.ipynb")
TIMEOUT = float(os.environ.get("FBX_BROWSER_TIMEOUT", "420"))
TOKEN = "fbx-browser-test"

# Headless Chromium as root, with nothing reaching out of the machine.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

# JupyterLab settings for the test's own settings folder: no news or update
# prompts over the page, every cell kept in the DOM (no windowing), and the
# widget state saved with the notebook.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    # Settings > Save Widget State Automatically: saving stores the widgets' state.
    "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
}


# What differs between the two front ends; everything else is shared.
#   label       its name in failure messages
#   app         the module that starts the server (`python -m app`)
#   path        the notebook's page, from its name and the token
#   idle        a JS expression, true when the page shows the kernel idle
#   status      a JS expression, the page's kernel status as text (for failure messages)
#   screenshot  where the last screenshot goes (README shows a copy of the lab one)
# Notebook 7 has no status bar: its toolbar's execution indicator carries the kernel
# state in `data-status`. It reads "idle" before the kernel has connected too, so
# readiness also asks the server (and Run All is retried until a cell starts).
UIS = {
    "lab": {
        "label": "JupyterLab",
        "app": "jupyterlab",
        "path": "/lab/tree/{name}?reset&token={token}",
        "idle": r"/\|\s*Idle/.test((document.querySelector('#jp-main-statusbar') || {}).innerText || '')",
        "status": "(document.querySelector('#jp-main-statusbar') || {}).innerText || '(no status bar)'",
        "screenshot": REPO / "build" / "explorer.png",
    },
    "notebook": {
        "label": "Notebook 7",
        "app": "notebook",
        "path": "/notebooks/{name}?token={token}",
        "idle": "(document.querySelector('.jp-Notebook-ExecutionIndicator') || {dataset: {}})"
        ".dataset.status === 'idle'",
        "status": "'kernel ' + ((document.querySelector('.jp-Notebook-ExecutionIndicator') || "
        "{dataset: {}}).dataset.status || '(no indicator)') + ' ' + "
        "((document.querySelector('.jp-NotebookKernelStatus') || {}).innerText || '')",
        "screenshot": REPO / "build" / "explorer-notebook7.png",
    },
}


class Deadline:
    """Seconds left of the whole test's budget, for every wait to share."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def ms(self, at_most: float) -> float:
        """Milliseconds for one wait: at most `at_most` seconds, never past the end."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the whole test ran past FBX_BROWSER_TIMEOUT={TIMEOUT:g} s")
        return 1000 * min(at_most, left)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: pathlib.Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def _chromium() -> str:
    exe = os.environ.get("FBX_CHROMIUM") or shutil.which("chromium")
    if not exe:
        pytest.fail(
            "No Chromium found: `make test-browser` installs Debian's `chromium` "
            "(or set FBX_CHROMIUM to a Chromium executable)."
        )
    return exe


# -- the server ------------------------------------------------------------------------------


class Server:
    def __init__(self, ui: str, url: str, notebook: str, log: pathlib.Path, root: pathlib.Path):
        self.ui, self.url, self.notebook, self.log, self.root = ui, url, notebook, log, root
        self.label = UIS[ui]["label"]


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server we started, by its PID; kernels it started go with it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # Jupyter shuts its kernels down on SIGINT/SIGTERM
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started
        proc.wait(10)


@pytest.fixture(scope="module", params=list(UIS))
def server(request, tmp_path_factory):
    ui = request.param
    label = UIS[ui]["label"]
    if not NOTEBOOK.is_file():
        pytest.fail(
            f"{NOTEBOOK} does not exist. Set FBX_BROWSER_NOTEBOOK to a notebook path "
            "relative to the repository root, e.g. tests/browser/fixture.ipynb."
        )
    work = tmp_path_factory.mktemp(ui)
    root = work / "root"
    shutil.copytree(
        NOTEBOOK.parent,
        root,
        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.keras"),
    )
    settings = work / "settings"
    for plugin, values in LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),
        TF_CPP_MIN_LOG_LEVEL="3",
        KERAS_BACKEND="tensorflow",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        UIS[ui]["app"],
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
    ]
    if os.getuid() == 0:
        cmd.append("--allow-root")
    log = work / "server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,  # no "Shutdown this Jupyter server?" prompt on SIGINT
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        end = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{label} exited with {proc.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > end:
                pytest.fail(f"{label} did not answer on {url} within 90 s:\n{_tail(log)}")
            time.sleep(0.5)
        yield Server(ui, url, NOTEBOOK.name, log, root)
    finally:
        _stop(proc)


# -- the page --------------------------------------------------------------------------------

# What the page shows, gathered in one go for failure messages (UI_STATUS: the UI's `status`).
_DESCRIBE_JS = """() => {
  const all = (s) => Array.from(document.querySelectorAll(s));
  const text = (e) => (e.innerText || e.textContent || '').trim();
  return {
    status: String(UI_STATUS).trim().slice(0, 200),
    prompts: all('.jp-CodeCell .jp-InputPrompt').map(text),
    tracebacks: all('.jp-OutputArea-output')
      .map(text).filter((t) => /Traceback|Error/.test(t)).map((t) => t.slice(-800)),
    graph_nodes: all('.jp-OutputArea-output svg g.node').length,
    sliders: all('.jp-OutputArea-output .widget-slider').length,
    play_buttons: all('.jp-OutputArea-output .widget-play').length,
    views: all('.jp-OutputArea-output .fbx').map((v) => ({t: v.dataset.t, epoch: v.dataset.epoch})),
    markers: all('.fbx-lines .fbx-marker').map((m) => m.dataset.t),
    readouts: all('.jp-OutputArea-output .widget-slider .widget-readout').map(text),
  };
}"""

# Done: the kernel idle (UI_IDLE: the UI's `idle`) and no cell waiting (Run All marks
# every cell `[*]` at once; an error clears the marks of the cells after it).
_DONE_JS = """() => {
  if (!(UI_IDLE)) return false;
  return !Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))
    .some((e) => e.innerText.includes('*'));
}"""

# Each code cell: its prompt, whether its source is empty, and its outputs' text.
_CELLS_JS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell')).map((c) => ({
  prompt: (c.querySelector('.jp-InputPrompt') || {}).innerText || '',
  empty: !((c.querySelector('.jp-InputArea-editor') || {}).innerText || '').trim(),
  outputs: Array.from(c.querySelectorAll('.jp-OutputArea-output')).map((o) => o.innerText).join('\\n'),
}))"""

_STARTED_JS = """() => Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))
  .some((e) => /\\[(\\*|\\d+)\\]/.test(e.innerText))"""

# One look at an explorer: the time slider's readout, the view's t and epoch, the
# trajectories' marker, every graph box's fill, and the lines' points.
_LOOK_JS = """(root) => {
  const view = root.querySelector('.fbx');
  const marker = view.querySelector('.fbx-lines .fbx-marker');
  const readout = root.querySelector('.widget-slider .widget-readout');
  const fill = (g) => { const s = g.querySelector('path, polygon, ellipse'); return s && s.getAttribute('fill'); };
  return {
    slider: readout ? parseInt(readout.innerText, 10) : null,
    view: parseInt(view.dataset.t, 10),
    epoch: parseInt(view.dataset.epoch, 10),
    marker: marker ? parseInt(marker.dataset.t, 10) : null,
    fills: Array.from(view.querySelectorAll('.fbx-graph g.node')).map(fill),
    lines: Array.from(view.querySelectorAll('.fbx-lines polyline')).map((p) => p.getAttribute('points')),
  };
}"""


# The portrait tab: the slider's readout, the view's t, the marker's t and where it is.
_PORTRAIT_JS = """(root) => {
  const marker = root.querySelector('.fbx-portrait .fbx-marker');
  const readout = root.querySelector('.widget-slider .widget-readout');
  return {
    slider: readout ? parseInt(readout.innerText, 10) : null,
    view: parseInt(root.querySelector('.fbx').dataset.t, 10),
    marker: parseInt(marker.dataset.t, 10),
    at: marker.getAttribute('cx') + ',' + marker.getAttribute('cy'),
  };
}"""

# The portrait's fixed points: stable or not, fill, and whether they are shown.
_FIXED_JS = """(cs) => cs.map((c) => ({
  stable: c.dataset.stable,
  fill: c.getAttribute('fill'),
  shown: c.getBoundingClientRect().width > 0,
}))"""


# Looks at an explorer every 20 ms while Play runs, in the page (a look from Python
# takes longer than a step), until t has not changed for 1.5 s.
_WATCH_JS = (
    """(root) => new Promise((resolve) => {
  const look = LOOK;
  const looks = [];
  let last = null, since = performance.now();
  const timer = setInterval(() => {
    const now = look(root);
    if (!last || now.view !== last.view) { looks.push(now); since = performance.now(); }
    last = now;
    if (performance.now() - since > 1500) { clearInterval(timer); resolve(looks); }
  }, 20);
})"""
).replace("LOOK", _LOOK_JS)


class Steps:
    """Names each step; a failing one fails the test with what the page showed."""

    def __init__(self, page, server: Server, console: list[str]):
        self.page, self.server, self.console = page, server, console

    def screenshot(self) -> str:
        path = UIS[self.server.ui]["screenshot"]
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.page.screenshot(path=str(path))
            return str(path)
        except Exception as e:  # the page may be gone
            return f"(no screenshot: {e})"

    @contextlib.contextmanager
    def __call__(self, name: str):
        try:
            yield
            return
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        try:
            describe = _DESCRIBE_JS.replace("UI_STATUS", UIS[self.server.ui]["status"])
            found = json.dumps(self.page.evaluate(describe), indent=1)
        except Exception as e:
            found = f"(page unreadable: {e})"
        shot = self.screenshot()
        console = "\n".join(self.console[-10:]) or "(none)"
        raise pytest.fail.Exception(
            f"Step '{name}' failed in {self.server.label} for {self.server.notebook}: {error}\n"
            f"Found on the page: {found}\n"
            f"Browser console errors: {console}\n"
            f"Screenshot: {shot}\n"
            f"Server log (last lines):\n{_tail(self.server.log)}",
            pytrace=False,
        ) from None


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=_chromium(),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1100},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def _wait_for_kernel_idle(server: Server, seconds: float) -> None:
    """Wait until the server reports the notebook's kernel idle (started, not busy)."""
    end = time.monotonic() + seconds
    seen = "no session yet"
    while True:
        try:
            url = f"{server.url}/api/sessions?token={TOKEN}"
            with urllib.request.urlopen(url, timeout=5) as r:
                sessions = json.load(r)
            states = [
                (s.get("kernel") or {}).get("execution_state")
                for s in sessions
                if s.get("path", "").endswith(server.notebook)
            ]
            if "idle" in states:
                return
            seen = f"kernel states {states}" if states else f"no session among {len(sessions)}"
        except OSError as e:
            seen = f"{type(e).__name__}: {e}"
        if time.monotonic() > end:
            raise AssertionError(
                f"the server never reported {server.notebook}'s kernel idle in {seconds:g} s "
                f"(last seen: {seen})"
            )
        time.sleep(0.5)


def _readout(explorer) -> int:
    text = explorer.locator(".widget-slider .widget-readout").first.inner_text().strip()
    return int(text)


def test_fixture_is_stored_without_outputs():
    nb = nbformat.read(FIXTURE, as_version=4)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, f"{FIXTURE.name}: cells {dirty} have outputs; strip them before committing"


def test_explorer_plays_in_a_real_browser(server, page):
    deadline = Deadline(TIMEOUT)
    console: list[str] = []
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.on("console", lambda m: m.type == "error" and console.append(f"console: {m.text}"))
    step = Steps(page, server, console)
    ui = UIS[server.ui]

    with step("open the notebook"):
        page.goto(server.url + ui["path"].format(name=server.notebook, token=TOKEN))
        page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=deadline.ms(90))

    with step("wait for the kernel to be idle"):
        _wait_for_kernel_idle(server, deadline.ms(90) / 1000)
        page.wait_for_function(f"() => {ui['idle']}", timeout=deadline.ms(60), polling=250)

    with step("run all cells"):
        for _attempt in range(4):
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click(
                timeout=deadline.ms(30)
            )
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click(
                timeout=deadline.ms(30)
            )
            try:  # a click on a kernel not quite ready does nothing: try again
                page.wait_for_function(_STARTED_JS, timeout=deadline.ms(15))
                break
            except Exception:
                continue
        else:
            raise AssertionError("no cell got an execution count after 4 clicks on Run All")

    with step("wait for every cell to run"):
        done = _DONE_JS.replace("UI_IDLE", ui["idle"])
        page.wait_for_function(done, timeout=deadline.ms(TIMEOUT), polling=500)
        cells = page.evaluate(_CELLS_JS)
        ran = [bool(re.search(r"\[\d+\]", c["prompt"])) for c in cells]
        if not all(r or c["empty"] for r, c in zip(ran, cells)):
            # Run All stops at the first error: the last cell that ran raised it.
            failed = max(i for i, r in enumerate(ran) if r) if any(ran) else 0
            raise AssertionError(
                f"code cell {failed + 1} of {len(cells)} failed; the cells after it did not run. "
                f"Its output:\n{cells[failed]['outputs'][-2000:]}"
            )

    # The explorers: the outputs that hold a Play button; fbx.explore(watch) is the last.
    outputs = page.locator(".jp-OutputArea-output")
    explorer = outputs.filter(has=page.locator(".widget-play")).first
    learning = outputs.filter(has=page.locator(".widget-play")).last

    with step("the slider, the Play button and the view render"):
        explorer.wait_for(timeout=deadline.ms(60))
        explorer.locator(".widget-slider").first.wait_for(timeout=deadline.ms(30))
        explorer.scroll_into_view_if_needed(timeout=deadline.ms(10))

    with step("the graph's SVG and the trajectories render in the explorer"):
        explorer.locator(".fbx-graph svg g.node").first.wait_for(timeout=deadline.ms(60))
        explorer.locator(".fbx-lines .fbx-marker").first.wait_for(
            state="attached", timeout=deadline.ms(30)
        )

    with step("pressing Play lights the graph and moves the marker with the slider"):
        first = explorer.evaluate(_LOOK_JS)
        assert first["slider"] == first["view"] == first["marker"] == 0, first
        explorer.locator(".widget-play button:has(.fa-play)").first.click(timeout=deadline.ms(10))
        looks = explorer.evaluate(_WATCH_JS)
        seen = [(look["slider"], look["view"], look["marker"]) for look in looks]
        assert len({v for _, v, _ in seen}) >= 5, f"Play did not advance t: {seen}"
        out_of_step = [s for s in seen if len(set(s)) != 1]
        assert not out_of_step, f"(slider, view, marker) differ while playing: {out_of_step}"
        by_t = {look["view"]: tuple(look["fills"]) for look in looks}
        assert len(set(by_t.values())) >= 3, f"the graph's fills did not change with t: {by_t}"
        assert tuple(first["fills"]) != by_t[max(by_t)]
    shot = UIS[server.ui]["screenshot"]
    explorer.screenshot(path=str(shot))

    # The portrait, in JupyterLab: in Notebook 7 arrow keys sent to the slider's handle did
    # not move it in this harness (the Play step above covers playback there).
    portrait = server.ui == "lab"
    with step("the portrait tab draws the state, its marker on the slider's step"):
        explorer.locator(".fbx-tab[data-panel=portrait]").click(timeout=deadline.ms(10))
        explorer.locator(".fbx-portrait polyline").wait_for(timeout=deadline.ms(20))
        spots = []
        for t in range(4 if portrait else 0):
            _key_to_step(page, explorer, "ArrowRight" if t else "Home", t, deadline)
            look = explorer.evaluate(_PORTRAIT_JS)
            assert look["slider"] == look["view"] == look["marker"] == t, look
            spots.append(look["at"])
        assert len(set(spots)) == len(spots), f"the portrait's marker did not move: {spots}"
        fixed = explorer.locator(".fbx-portrait .fbx-fixed circle")
        points = fixed.evaluate_all(_FIXED_JS)
        label = explorer.locator(".fbx-portrait-label").inner_text()
        assert bool(points) == ("fixed points" in label), (points, label)
        assert all(p["shown"] for p in points), f"fixed points hidden: {points}"
        wrong = [p for p in points if (p["fill"] == "#fff") != (p["stable"] == "false")]
        assert not wrong, f"fixed points not filled when stable and hollow when unstable: {wrong}"
        if NOTEBOOK.resolve() == FIXTURE.resolve():  # its explorer is given fixed_points
            assert points, "the portrait drew no fixed points"
    if portrait:
        explorer.screenshot(path=str(shot.with_name("explorer-portrait.png")))

    with step("the epoch slider changes the trajectories"):
        learning.scroll_into_view_if_needed(timeout=deadline.ms(10))
        learning.locator(".fbx-lines polyline").first.wait_for(timeout=deadline.ms(30))
        before = learning.evaluate(_LOOK_JS)
        epoch = learning.locator(".widget-slider", has_text="epoch")
        epoch.locator(".noUi-handle").first.focus(timeout=deadline.ms(10))
        page.keyboard.press("Home")
        page.wait_for_function(
            """(root) => root.querySelector('.fbx').dataset.epoch === '0'""",
            arg=learning.element_handle(),
            timeout=deadline.ms(20),
            polling=200,
        )
        after = learning.evaluate(_LOOK_JS)
        assert before["epoch"] > 0 and after["epoch"] == 0, (before["epoch"], after["epoch"])
        assert after["lines"] != before["lines"], "the trajectories did not change with the epoch"
        assert epoch.locator(".widget-readout").inner_text().strip() == "0"
    learning.screenshot(
        path=str(shot.with_name(shot.stem.replace("explorer", "explorer-epochs") + ".png"))
    )

    if server.ui != "lab":
        return
    with step("saved with its widget state and exported, the page plays with no kernel"):
        saved = server.root / server.notebook
        before = saved.stat().st_mtime_ns
        page.keyboard.press("Control+s")  # the settings save the widget state with it
        end = time.monotonic() + deadline.ms(30) / 1000
        while not (saved.stat().st_mtime_ns != before and _has_widget_state(saved)):
            if time.monotonic() > end:
                raise AssertionError(f"saving {saved.name} stored no widget state in 30 s")
            time.sleep(0.5)
        out = server.root.parent / "export"
        done = subprocess.run(
            [sys.executable, "-m", "nbconvert", "--to", "html", "--output-dir", str(out), saved],
            capture_output=True,
            text=True,
            timeout=deadline.ms(120) / 1000,
        )
        assert done.returncode == 0, f"nbconvert failed:\n{done.stderr[-3000:]}"
        exported = page.context.new_page()
        try:
            found, _ = _open_exported(exported, out / saved.with_suffix(".html").name, deadline)
            _plays_and_scrubs(exported, found, deadline)
        finally:
            exported.close()


def _has_widget_state(path: pathlib.Path) -> bool:
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # being written
        return False
    return "application/vnd.jupyter.widget-state+json" in nb.metadata.get("widgets", {})


def test_saved_page_plays_offline(page, tmp_path):
    """Explorer.save_html, opened from disk with the network refused, plays and scrubs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    sys.path.insert(0, str(REPO))
    import fbexplorer as fbx

    keras.utils.set_random_seed(0)
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((4,), name="loop")
    h = keras.layers.Dense(4, activation="tanh", name="d1")(keras.layers.Concatenate()([x, loop]))
    net = fbx.FeedbackModel(x, keras.layers.Dense(1, name="out")(h), feedback={"loop": h})
    X = np.random.default_rng(0).uniform(-1, 1, size=(2, 12, 1)).astype("float32")
    ex = fbx.explore(net, X)
    ex.node.value = "d1"
    path = pathlib.Path(ex.save_html(tmp_path / "explorer.html"))

    asked = []

    def refuse(route):
        if route.request.url.startswith("file:") or route.request.url.startswith("blob:"):
            route.continue_()
        else:
            asked.append(route.request.url)
            route.abort()

    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", refuse)
    page.goto(path.as_uri())
    view = page.locator(".fbx")
    look = """(v) => ({
      t: parseInt(v.dataset.t, 10),
      label: v.querySelector('.fbx-t-label').textContent,
      marker: parseInt(v.querySelector('.fbx-lines .fbx-marker').dataset.t, 10),
      readout: v.querySelector('.fbx-readout-t').textContent,
      fills: Array.from(v.querySelectorAll('.fbx-graph g.node')).map(
        (g) => g.querySelector('path, polygon').getAttribute('fill')),
    })"""
    view.locator(".fbx-graph svg g.node").first.wait_for(timeout=20_000)
    start = view.evaluate(look)
    assert start["t"] == start["marker"] == 0 and start["label"] == "t=0", (start, errors)
    page.click(".fbx-play")
    page.wait_for_function("() => +document.querySelector('.fbx').dataset.t >= 4", timeout=10_000)
    playing = view.evaluate(look)
    t = playing["t"]
    assert playing["marker"] == t and playing["label"] == playing["readout"] == f"t={t}"
    assert playing["fills"] != start["fills"]
    page.wait_for_function(
        "() => document.querySelector('.fbx-play').textContent.includes('play')", timeout=10_000
    )  # stopped at the last step
    assert view.evaluate(look)["t"] == 11
    page.focus(".fbx-t")  # scrub with the keyboard
    page.keyboard.press("Home")
    back = view.evaluate(look)
    assert back["t"] == back["marker"] == 0 and back["fills"] == start["fills"]
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert view.evaluate(look)["t"] == 2
    page.click(".fbx-toggle input")  # the unrolled window around t
    page.wait_for_selector(".fbx-graph[data-view=unrolled] .fbx-now", timeout=5_000)
    now = page.text_content(".fbx-graph .fbx-now text")
    assert now == "t=2", now
    assert not asked and not errors, (asked, errors)
    out = REPO / "build" / "explorer-offline.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)


def _open_exported(page, path: pathlib.Path, deadline: Deadline):
    """Open an nbconvert page from disk, its CDN files served from npm packages.

    Returns the first explorer (the output holding a Play button) once its
    graph is drawn, and the list the page's errors go to.
    """
    import widget_cdn

    html = path.read_text(encoding="utf-8")
    cdn = widget_cdn.Cdn(widget_cdn.fetch(widget_cdn.packages(html), REPO / "build" / "widget-cdn"))
    console: list[str] = []
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.route("**/*", cdn)
    page.goto(path.as_uri())
    explorer = page.locator(".jp-OutputArea-output").filter(has=page.locator(".widget-play")).first
    try:
        explorer.locator(".fbx-graph svg g.node").first.wait_for(timeout=deadline.ms(30))
    except Exception:
        raise AssertionError(
            f"the exported page drew no explorer. Served: {cdn.served}; refused: {cdn.refused}; "
            f"errors: {console}"
        ) from None
    return explorer, console


def _key_to_step(page, explorer, key, t, deadline):
    """Press `key` on the time slider's handle and wait until the view shows step `t`.

    The handle is focused before each key: the page may take focus back."""
    explorer.locator(".widget-slider .noUi-handle").first.focus(timeout=deadline.ms(10))
    page.keyboard.press(key)
    page.wait_for_function(
        "([root, t]) => root.querySelector('.fbx').dataset.t === String(t)",
        arg=[explorer.element_handle(), t],
        timeout=deadline.ms(10),
        polling=50,
    )


def _plays_and_scrubs(page, explorer, deadline: Deadline) -> None:
    """Play advances t and changes the fills; the slider's arrow keys set t 0 to 3.

    The slider, the view, the trajectories' marker and the table's readout
    show the same t throughout, and a step scrubbed to has the fills Play
    showed at that step. It opens the trajectories tab (the page opens on the
    tab that was open when the notebook was saved).
    """
    explorer.locator(".fbx-tab[data-panel=trajectories]").click(timeout=deadline.ms(10))
    first = explorer.evaluate(_LOOK_JS)
    assert first["slider"] == first["view"] == first["marker"], first
    explorer.locator(".widget-play button:has(.fa-play)").first.click(timeout=deadline.ms(10))
    looks = explorer.evaluate(_WATCH_JS)
    seen = [(look["slider"], look["view"], look["marker"]) for look in looks]
    assert len({v for _, v, _ in seen}) >= 5, f"Play did not advance t: {seen}"
    assert not [s for s in seen if len(set(s)) != 1], f"(slider, view, marker) differ: {seen}"
    by_t = {look["view"]: tuple(look["fills"]) for look in [first, *looks]}
    assert len(set(by_t.values())) >= 3, f"the graph's fills did not change with t: {by_t}"

    for t, key in enumerate(["Home", "ArrowRight", "ArrowRight", "ArrowRight"]):
        _key_to_step(page, explorer, key, t, deadline)
        look = explorer.evaluate(_LOOK_JS)
        readout = explorer.locator(".fbx-readout-t").inner_text()
        assert look["slider"] == look["view"] == look["marker"] == t, look
        assert readout == f"t={t}", (readout, t)
        assert tuple(look["fills"]) == by_t.get(t, tuple(look["fills"])), "fills differ from Play's"


# The exported notebook: an explorer of a net whose fixed points are known in closed
# form. d1 = tanh(W [x, loop]) with the loop's part 2 I: with x held at 0 each unit
# solves s = tanh(2 s), so s is 0 (unstable, slope 2) or +-a with a = tanh(2 a)
# (stable, slope 2 (1 - a^2) < 1): 9 fixed points, the 4 with both units at +-a stable.
_EXPORT_NOTEBOOK = """\
import keras
import numpy as np

import fbexplorer as fbx

x = keras.Input((1,), name="x")
loop = fbx.Feedback((2,), name="loop")
h = keras.layers.Dense(2, activation="tanh", use_bias=False, name="d1")(
    keras.layers.Concatenate()([x, loop])
)
net = fbx.FeedbackModel(x, h, feedback={"loop": h})
net.get_layer("d1").set_weights([np.array([[0.5, 0.2], [2, 0], [0, 2]], "float32")])
X = np.random.default_rng(0).uniform(-1, 1, size=(2, 12, 1)).astype("float32")
fp = fbx.fixed_points(net, np.zeros(1, "float32"), n_starts=64)
fbx.explore(net, X, fixed_points=fp)"""


def test_exported_notebook_plays_with_no_kernel(page, tmp_path):
    """`nbconvert --to html` of a notebook saved with widget state, opened from disk.

    The notebook (one explorer) is executed with its widget state stored, as
    `jupyter nbconvert --execute --to html
    --ExecutePreprocessor.store_widget_state=True` does, and exported to HTML.
    The page loads require.js, the widget manager and anywidget's front end
    from CDNs; in real use the CDNs serve them, here `widget_cdn` serves the
    same files from their npm packages (fetched once into build/widget-cdn)
    and refuses every other request off the machine. No server runs: Play
    must advance t and change the node fills, scrubbing the slider must move
    the view, the marker and the readout to the same t, and the portrait
    must draw the fixed points, stable filled and unstable hollow.
    """
    deadline = Deadline(TIMEOUT)
    path = exported_notebook(_EXPORT_NOTEBOOK, tmp_path / "explorer.ipynb", deadline)

    explorer, console = _open_exported(page, path, deadline)
    assert explorer.evaluate(_LOOK_JS)["view"] == 0
    _plays_and_scrubs(page, explorer, deadline)

    explorer.locator(".fbx-tab[data-panel=portrait]").click(timeout=deadline.ms(10))
    circles = explorer.locator(".fbx-portrait .fbx-fixed circle")
    circles.first.wait_for(timeout=deadline.ms(10))
    points = circles.evaluate_all(_FIXED_JS)
    filled = [p["fill"] for p in points if p["stable"] == "true" and p["shown"]]
    hollow = [p["fill"] for p in points if p["stable"] == "false" and p["shown"]]
    assert (len(filled), len(hollow)) == (4, 5), points
    assert "#fff" not in filled and set(hollow) == {"#fff"}, points
    assert explorer.locator(".fbx-portrait .fbx-marker").get_attribute("data-t") == "3"
    assert not console, console
    out = REPO / "build" / "explorer-export.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    explorer.screenshot(path=str(out))


def exported_notebook(source: str, notebook: pathlib.Path, deadline) -> pathlib.Path:
    """A notebook of one cell, `source`, executed by `nbconvert --execute --to html`
    with its widget state stored, as a user exports one: the HTML file's path."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, notebook)
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        KERAS_BACKEND="tensorflow",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    cmd = [sys.executable, "-m", "nbconvert", "--to", "html", "--execute"]
    cmd += ["--ExecutePreprocessor.store_widget_state=True", str(notebook)]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=deadline.ms(300) / 1000
    )
    assert done.returncode == 0, f"nbconvert failed:\n{done.stderr[-3000:]}"
    return notebook.with_suffix(".html")
