"""How fast the explorer opens and plays a long trace, and how much it sends.

Run with `python benchmarks/explorer.py [--quick] [--rounds N] [--cold N]` (the browser
part needs the `browser` extra and Debian's Chromium, as `make test-browser`).
The model: x -> Concatenate(x, loop) -> 16 x Dense(64, tanh) -> Dense(64),
the last Dense fed back (`loop`), so 20 traced nodes of 64 units (x has 1,
the Concatenate 65); one sample of T=1,000 steps.

Reported:
- the cold first open: `fbx.explore(net, X)` on a freshly built model, in a
  fresh process that has done nothing else with TensorFlow (the worst case:
  it builds the model's trace loop and pays TensorFlow's own first-call
  costs); each of `--cold` processes (run one after another) times one open,
  after the imports and the model's construction, which are reported apart;
  the median and every run, and the median CPU time of the open (all of the
  process's threads: on a machine shared with other work, the wall time
  grows with the load, the CPU time much less);
- in this process, the first `fbx.trace(net, X)` (it builds the model's
  loop, once per model and node list), then, interleaved over `--rounds`
  rounds, the median of `fbx.trace` and of `fbx.explore(net, X)` (trace,
  arrays, drawing, frames);
- the frames sent (`view.data` as JSON) and the page `save_html` writes;
- in headless Chromium, from the saved page: the time from navigation until
  the view has drawn, and the time one step takes to redraw (node fills,
  edge widths, marker, readout) over 200 steps scrubbed one after another,
  median and max. Play runs at 10 steps a second, so a step must take well
  under 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

START = time.perf_counter()
LOAD = os.getloadavg()[0]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import fbexplorer as fbx  # noqa: E402

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


def network(units: int, layers: int):
    keras.utils.set_random_seed(0)
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((units,), name="loop")
    h = keras.layers.Concatenate(name="cat")([x, loop])
    for i in range(layers):
        h = keras.layers.Dense(units, activation="tanh", name=f"d{i + 1}")(h)
    out = keras.layers.Dense(units, name="out")(h)
    return fbx.FeedbackModel(x, out, feedback={"loop": out}, name="deep")


def cold_open(length: int, units: int, layers: int) -> dict:
    """In this (fresh) process: the imports, the model, and one first open."""
    import sys

    imported = time.perf_counter() - START
    start = time.perf_counter()
    net = network(units, layers)
    X = np.random.default_rng(0).uniform(-1, 1, (1, length, 1)).astype("float32")
    built = time.perf_counter() - start
    start, cpu_start = time.perf_counter(), time.process_time()
    fbx.explore(net, X)
    opened, cpu_time = time.perf_counter() - start, time.process_time() - cpu_start
    json.dump(
        {"import_s": imported, "build_s": built, "open_s": opened, "open_cpu_s": cpu_time},
        sys.stdout,
    )


def cold_opens(runs: int, quick: bool) -> dict:
    """`cold_open` in `runs` fresh processes, one after another."""
    import sys

    command = [sys.executable, __file__, "--cold-child"] + (["--quick"] if quick else [])
    results = []
    for _ in range(runs):
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "open_median_s": statistics.median(r["open_s"] for r in results),
        "open_s": [r["open_s"] for r in results],
        "open_cpu_median_s": statistics.median(r["open_cpu_s"] for r in results),
        "import_median_s": statistics.median(r["import_s"] for r in results),
        "build_median_s": statistics.median(r["build_s"] for r in results),
    }


def cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line
        )
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def in_browser(page_path: Path, steps: int) -> dict:
    from playwright.sync_api import sync_playwright

    exe = os.environ.get("FBX_CHROMIUM") or shutil.which("chromium")
    if not exe:
        return {"skipped": "no chromium on PATH (apt-get install chromium)"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        page.goto(page_path.as_uri())
        page.wait_for_selector(".fbx[data-render-ms]", timeout=60_000)
        drawn = time.perf_counter() - start
        # Scrub: the range input moved one step at a time, as a user drags it.
        times = page.evaluate(
            """(steps) => {
              const input = document.querySelector('.fbx-t');
              const view = document.querySelector('.fbx');
              const out = [];
              for (let t = 1; t <= steps; t++) {
                input.value = t;
                input.dispatchEvent(new Event('input'));
                if (+view.dataset.t !== t) throw new Error('step ' + t + ' not drawn');
                out.push(+view.dataset.renderMs);
              }
              return out;
            }""",
            steps,
        )
        browser.close()
    return {
        "open_s": drawn,
        "step_ms_median": statistics.median(times),
        "step_ms_max": max(times),
        "steps": len(times),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=50, 8 units: a smoke run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--cold", type=int, default=3, help="fresh processes timing a first open (0: none)"
    )
    parser.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    length, units, layers = (50, 8, 4) if args.quick else (1000, 64, 16)
    if args.cold_child:
        return cold_open(length, units, layers)
    cold = cold_opens(args.cold, args.quick) if args.cold else None
    net = network(units, layers)
    X = np.random.default_rng(0).uniform(-1, 1, (1, length, 1)).astype("float32")

    start = time.perf_counter()
    fbx.trace(net, X)  # the first trace of a model builds and compiles its loop
    first = time.perf_counter() - start
    traces, opens = [], []
    for _ in range(1 if args.quick else args.rounds):  # interleaved, medians
        start = time.perf_counter()
        fbx.trace(net, X)
        traces.append(time.perf_counter() - start)
        start = time.perf_counter()
        ex = fbx.explore(net, X)
        opens.append(time.perf_counter() - start)
    nodes = len(ex.node.options)
    frames = len(json.dumps(ex.view.data))
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(ex.save_html(Path(tmp) / "explorer.html"))
        page_bytes = page.stat().st_size
        browser = in_browser(page, min(200, length - 1))
    result = {
        "cpu": cpu(),
        "cores": os.cpu_count(),
        "T": length,
        "units": units,
        "nodes": nodes,
        "load_1min_at_start": LOAD,
        "cold_first_open": cold,
        "trace_first_s": first,
        "trace_median_s": statistics.median(traces),
        "open_median_s": statistics.median(opens),
        "frames_json_bytes": frames,
        "saved_page_bytes": page_bytes,
        "browser": browser,
    }
    print(json.dumps(result, indent=1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "explorer.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
