"""A real browser runs a notebook in JupyterLab 4 and Notebook 7 and plays its explorer.

`make test-browser` installs what this needs (Debian's Chromium, JupyterLab,
Notebook 7, playwright) and runs it; plain `make test` leaves this folder out.
For each front end (`ui`: "lab" or "notebook") the test starts its server on a
free loopback port with a fixed token, over a temporary copy of the notebook's
folder (the repository's notebooks are never executed or saved), opens the
notebook in headless Chromium, runs all cells, and checks
that the graph's SVG, an ipywidgets slider and a plotly figure render, and that
pressing Play moves the figure's time marker (a plotly layout shape: a `path`
in the figure's `.shapelayer`) and advances the slider.

Environment:
    FBX_BROWSER_NOTEBOOK  the notebook to run, relative to the repository root
                          or absolute (default notebooks/01_quickstart.ipynb;
                          tests/browser/fixture.ipynb is the harness's own
                          stand-in).
    FBX_BROWSER_TIMEOUT   seconds for the whole test (default 420).
    FBX_CHROMIUM          the browser executable (default: chromium on PATH).

The last screenshot goes to build/explorer.png (JupyterLab) and
build/explorer-notebook7.png (Notebook 7), also when a step fails; the failure
message names the front end, the step and what the page showed.
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
# prompts over the page, and every cell kept in the DOM (no windowing).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
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
    def __init__(self, ui: str, url: str, notebook: str, log: pathlib.Path):
        self.ui, self.url, self.notebook, self.log = ui, url, notebook, log
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
        yield Server(ui, url, NOTEBOOK.name, log)
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
    plotly: all('.jp-OutputArea-output .js-plotly-plot').length,
    markers: all('.js-plotly-plot .shapelayer path').map((p) => p.getAttribute('d')),
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

_MARKER_JS = """(root) => Array.from(root.querySelectorAll('.js-plotly-plot .shapelayer path'))
  .map((p) => p.getAttribute('d'))"""


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

    # The explorer: the last output that holds a Play button.
    outputs = page.locator(".jp-OutputArea-output")
    explorer = outputs.filter(has=page.locator(".widget-play")).last

    with step("the slider and the Play button render"):
        explorer.wait_for(timeout=deadline.ms(60))
        explorer.locator(".widget-slider").first.wait_for(timeout=deadline.ms(30))
        explorer.scroll_into_view_if_needed(timeout=deadline.ms(10))

    with step("the graph's SVG renders in the explorer"):
        explorer.locator("svg g.node").first.wait_for(timeout=deadline.ms(60))

    with step("the plotly figure renders with its time marker"):
        explorer.locator(".js-plotly-plot").first.wait_for(timeout=deadline.ms(60))
        explorer.locator(".js-plotly-plot .shapelayer path").first.wait_for(
            state="attached", timeout=deadline.ms(30)
        )

    with step("pressing Play moves the marker and the slider"):
        before = explorer.evaluate(_MARKER_JS)
        start = _readout(explorer)
        explorer.locator(".widget-play button:has(.fa-play)").first.click(timeout=deadline.ms(10))
        page.wait_for_function(
            """([root, before, start]) => {
              const now = Array.from(root.querySelectorAll('.js-plotly-plot .shapelayer path'))
                .map((p) => p.getAttribute('d'));
              const readout = parseInt(root.querySelector('.widget-slider .widget-readout').innerText, 10);
              return JSON.stringify(now) !== JSON.stringify(before) && readout > start;
            }""",
            arg=[explorer.element_handle(), before, start],
            timeout=deadline.ms(30),
            polling=200,
        )
        after = explorer.evaluate(_MARKER_JS)
        assert after != before and _readout(explorer) > start

    step.screenshot()
