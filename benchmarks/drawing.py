"""How long the unrolled drawing takes, with dot's layout and with positions of our own.

Run with `python benchmarks/drawing.py [--quick] [--rounds N] [--edges 10,20,30,50]
[--steps 3,6] [--timeout S] [--only dot|ours]` (needs Graphviz's `dot`).

The model: a chain of n `Concatenate -> Dense(2)` layers, where layer i also
reads layer (i + n/2) mod n, 1 to 3 steps late (`Feedback(delay=1 + i % 3)`):
n delayed edges, each of them long. The time is `fbx.draw(net, unroll=steps)`
and its rendering to SVG by `dot -Tsvg` (what `.pipe(format="svg")` does, and
what `fbx.explore` and `save_html` do with the unrolled window), for two
contenders, interleaved over `--rounds` rounds (medians):

- "dot": dot lays the strip out itself (`draw.DOT_WORK_LIMIT` raised above
  any drawing), as every drawing did before;
- "ours": positions of our own (`fbexplorer/_strip.py`) where dot would take
  long (above `DOT_WORK_LIMIT` virtual nodes), dot's layout below.

`--steps 0` times the cyclic view (`fbx.draw(net)`, which the explorer draws
for every node picked) instead, its limit `CYCLIC_WORK_LIMIT`.

A run longer than `--timeout` seconds is stopped and shown as "> S"; that
contender is not run again at more edges.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import fbexplorer as fbx  # noqa: E402

draw_module = importlib.import_module("fbexplorer.drawing")
LIMIT, CYCLIC_LIMIT = draw_module.DOT_WORK_LIMIT, draw_module.CYCLIC_WORK_LIMIT


def many_loops(n: int):
    """n layers in a chain; layer i also reads layer (i + n // 2) % n, 1 to 3 steps late."""
    x = keras.Input((1,), name="x")
    loops = [fbx.Feedback((2,), name=f"f{i}", delay=1 + i % 3) for i in range(n)]
    h, outs = x, []
    for i in range(n):
        h = keras.layers.Dense(2, name=f"d{i}")(
            keras.layers.Concatenate(name=f"c{i}")([h, loops[i]])
        )
        outs.append(h)
    feedback = {f"f{i}": outs[(i + n // 2) % n] for i in range(n)}
    return fbx.FeedbackModel(x, h, feedback=feedback, name=f"loops{n}")


def drawing_time(net, steps, limit: int, timeout: float) -> float:
    """Seconds to build the DOT text and render it to SVG; inf past `timeout`.
    `steps` None: the cyclic view."""
    draw_module.DOT_WORK_LIMIT = limit
    draw_module.CYCLIC_WORK_LIMIT = limit if limit != LIMIT else CYCLIC_LIMIT
    try:
        start = time.perf_counter()
        source = fbx.draw(net, unroll=steps).source
        subprocess.run(["dot", "-Tsvg"], input=source.encode(), capture_output=True,
                       timeout=timeout, check=True)  # fmt: skip
        return time.perf_counter() - start
    except subprocess.TimeoutExpired:
        return float("inf")
    finally:
        draw_module.DOT_WORK_LIMIT, draw_module.CYCLIC_WORK_LIMIT = LIMIT, CYCLIC_LIMIT


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 20 edges, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--edges", default="10,20,30,50")
    parser.add_argument("--steps", default="3", help="unroll, or several: 3,6,12; 0: cyclic")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--only", choices=["dot", "ours"], help="time one contender")
    args = parser.parse_args(argv)
    edges = [10, 20] if args.quick else [int(n) for n in args.edges.split(",")]
    rounds = 1 if args.quick else args.rounds
    contenders = {"dot": 10**12, "ours": LIMIT}
    if args.only:
        contenders = {args.only: contenders[args.only]}
    slow = set()  # contenders past the timeout: not run on larger drawings
    print(f"{rounds} rounds, load average {os.getloadavg()[0]:.1f}; seconds, median")
    print(f"{'edges':>5} {'steps':>6} " + " ".join(f"{name:>9}" for name in contenders))
    for n in edges:
        net = many_loops(n)
        for steps in (int(s) or None for s in args.steps.split(",")):
            cells = [time_both(net, steps, contenders, rounds, args.timeout, slow)]
            shown = steps or "cyclic"
            print(f"{n:>5} {shown:>6} " + " ".join(f"{c:>9}" for c in cells[0]), flush=True)


def time_both(net, steps, contenders, rounds, timeout, slow) -> list:
    """Each contender's median over `rounds` (interleaved), as text."""
    times = {name: [] for name in contenders}
    for r in range(rounds):
        order = list(contenders)[r % len(contenders) :] + list(contenders)[: r % len(contenders)]
        for name in order:
            if name in slow:
                continue
            times[name].append(drawing_time(net, steps, contenders[name], timeout))
            if times[name][-1] == float("inf"):
                slow.add(name)
    cells = []
    for name in contenders:
        done = [s for s in times[name] if s != float("inf")]
        if len(done) < len(times[name]):
            cells.append(f"> {timeout:.0f}")
        else:
            cells.append(f"{statistics.median(done):.2f}" if done else "-")
    return cells


if __name__ == "__main__":
    main()
