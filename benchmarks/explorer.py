"""How fast the explorer opens and plays a long trace, and how much it sends.

Run with `python benchmarks/explorer.py [--quick] [--rounds N]` (the browser
part needs the `browser` extra and Debian's Chromium, as `make test-browser`).
The model: x -> Concatenate(x, loop) -> 16 x Dense(64, tanh) -> Dense(64),
the last Dense fed back (`loop`), so 20 traced nodes of 64 units (x has 1,
the Concatenate 65); one sample of T=1,000 steps.

Reported:
- the first `fbx.trace(net, X)` (it builds and compiles the model's loop,
  once per model), then, interleaved over `--rounds` rounds, the median of
  `fbx.trace` and of `fbx.explore(net, X)` (trace, arrays, drawing, frames);
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
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    length, units, layers = (50, 8, 4) if args.quick else (1000, 64, 16)
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
