"""Runs every benchmark, each in its own process.

Run with `make bench` (or `python benchmarks/run.py [--quick]`). The scripts,
in order: fit_predict.py (the small net and an LSTM through fit/predict,
against a hand-written JAX scan and PyTorch), lstm.py (an LSTM six ways),
feedback_nets.py (feedback networks that only some contenders express),
scaling.py (time and memory against T and the number of feedback edges),
roofline.py (FLOP rates against the machine's matmul rate), fixed_points.py
(the fixed-point search of a 64-unit network from 256 starts) and attractors.py
(the census and a continuation of a 64-unit network). Options given
here (`--quick`, `--rounds N`, `--reps N`, `--out DIR`) are passed to each;
results go to benchmarks/results/<script>.json. See benchmarks/README.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = (
    "fit_predict.py",
    "lstm.py",
    "feedback_nets.py",
    "scaling.py",
    "roofline.py",
    "fixed_points.py",
    "attractors.py",
    "live.py",
)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    here = Path(__file__).parent
    for name in SCRIPTS:
        print(f"== {name} {' '.join(argv)}", flush=True)
        code = subprocess.call([sys.executable, str(here / name), *argv])
        if code != 0:
            print(f"{name} failed with exit code {code}", file=sys.stderr)
            return code
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
