"""Memory budgets for the inspection tools: estimate first, refuse above the budget.

`fbx.trace`, `fbx.explore` (and its stateful view), `fbx.TraceCallback`,
`fbx.fixed_points`, `fbx.gradient_flow` and `fbx.portrait` hold every value
they record, so their memory grows with samples x steps x units (and, for
fixed points, with the square of the state size). Before they allocate, they
estimate what they will need and, above the budget, refuse with one line
saying how much they would need and what to pass to need less.

The budget is half the memory available when the tool starts (Linux's
`MemAvailable`, else `psutil`, else a fixed 4 GB), or what
`fbx.set_memory_budget(bytes)` set; `fbx.set_memory_budget(None)` restores
the default. The estimates are bytes per recorded value (or per point, or
per state size squared) at the peak, measured as the increase of the peak
resident memory (VmHWM) of a call in a fresh process (`PER_VALUE` and the
functions below say which).
"""

from __future__ import annotations

import math
import numbers
import os
import re

__all__ = [
    "ADAM_VECTORS",
    "FALLBACK",
    "JACOBIAN_MATRICES",
    "LM_MATRICES",
    "LYAPUNOV_MATRICES",
    "PER_VALUE",
    "PORTRAIT_PER_POINT",
    "available_memory",
    "budget_and_source",
    "check_memory",
    "format_bytes",
    "memory_budget",
    "over_budget",
    "set_memory_budget",
    "values_detail",
]

FRACTION = 0.5  # of the memory available now
FALLBACK = 4 * 10**9  # where the available memory cannot be read

# Bytes at the peak per recorded value (one unit of one node at one step of
# one sample), measured on a 2-core AMD EPYC with TensorFlow 2.21 (23 nodes,
# 1,536 units, 4 samples, T = 500 to 2,000): the tool's own arrays and frames
# and TensorFlow's buffers, not the inputs or the model. Against the peaks
# measured, the estimates were 0.85x (compare_stateful) to 1.4x (explore).
PER_VALUE = {
    "trace": 36,  # the loop's output, its numpy copy, the tidy frame (17 kept)
    "trace_arrays": 14,  # fbx.trace(..., as_arrays=True)
    "recording": 18,  # one TraceCallback trace, kept per epoch recorded
    "compare_stateful": 64,  # both runs, their difference, the tidy frame
    "explore": 48,  # the trace, then the explorer's arrays
    "explore_portrait": 40,  # per value of state: the explorer's PCA in float64
    "stateful_view": 70,  # compare_stateful, then its arrays
    "explore_recording": 50,  # a TraceCallback's frames joined, then the arrays
    "gradient_flow": 48,  # the perturbations, the backward pass, the frame
    "portrait": 60,  # the trace, float64 copies for the SVD, the figure
}
PORTRAIT_PER_POINT = 200  # the figure's hover text and arrays, per step and sample
# Fixed points, per start, in float32 entries of a (state size)^2 matrix: a
# Levenberg-Marquardt step holds the Jacobian and the normal equations
# (about 12 such matrices per start); a Jacobian alone with its eigenvalues
# about 6.
LM_MATRICES = 12
JACOBIAN_MATRICES = 6
ADAM_VECTORS = 12  # the state, Adam's moments, the gradient, temporaries
# Lyapunov exponents, per sample, in float32 matrices of (state size) x n: the
# frame, its image under the step (n forward-mode directions at once), the QR
# and temporaries; measured 6.1 on TensorFlow 2.21 and 4.0 on JAX 0.10 (a
# state of 500, n = 500, 16 samples; 2-core AMD EPYC).
LYAPUNOV_MATRICES = 8

_setting: int | None = None


def set_memory_budget(nbytes: int | None) -> int | None:
    """Set the memory budget of the inspection tools, in bytes; None: the default.

    The default is half the memory available when a tool starts. A tool
    whose estimate exceeds the budget refuses before it allocates, with one
    line that says what to pass to need less.

    Args:
        nbytes: a positive number of bytes (e.g. `8 * 10**9`), or None.

    Returns:
        The previous setting (None for the default), so a test or a
        notebook can put it back.

    Example:
        >>> old = fbx.set_memory_budget(16 * 10**9)  # allow 16 GB
        >>> fbx.set_memory_budget(old)
    """
    global _setting
    ok = nbytes is None or (
        isinstance(nbytes, numbers.Real)
        and not isinstance(nbytes, bool)
        and math.isfinite(nbytes)
        and nbytes >= 1
    )
    if not ok:
        raise ValueError(
            f"fbx.set_memory_budget: the budget is a number of bytes >= 1, or None for half "
            f"the available memory. Received: {nbytes!r}"
        )
    previous, _setting = _setting, None if nbytes is None else int(nbytes)
    return previous


def available_memory() -> int | None:
    """The memory available now, in bytes (Linux's MemAvailable, else psutil), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # not installed, or no reading on this system
        return None


def memory_budget() -> int:
    """The memory budget now, in bytes: the setting, or half the available memory."""
    return _budget()[0]


_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def _from_environment() -> int | None:
    """`FBX_MEMORY_BUDGET` in bytes (`2e9`, `2GB`, `512MB`), or None where unset."""
    text = os.environ.get("FBX_MEMORY_BUDGET", "").strip()
    if not text:
        return None
    found = re.fullmatch(r"([0-9.]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?[bB]?)", text)
    if found is None:
        raise ValueError(
            f"FBX_MEMORY_BUDGET is a number of bytes, such as 2e9, 2GB or 512MB. "
            f"Received: FBX_MEMORY_BUDGET={text!r}"
        )
    unit = found.group(2).upper()
    return int(float(found.group(1)) * _UNITS[unit if unit in ("", "B") else unit[0] + "B"])


def budget_and_source() -> tuple[int, str]:
    """`(bytes, where they come from)`: `fbx.set_memory_budget`'s setting, else the
    `FBX_MEMORY_BUDGET` environment variable, else half the memory available now."""
    return _budget()


def _budget() -> tuple[int, str]:
    if _setting is not None:
        return _setting, "set with fbx.set_memory_budget"
    from_environment = _from_environment()
    if from_environment is not None:
        return from_environment, "FBX_MEMORY_BUDGET"
    free = available_memory()
    if free is None:
        return FALLBACK, "a fixed default: the available memory could not be read"
    return int(free * FRACTION), f"half the {format_bytes(free)} available now"


def format_bytes(n: float) -> str:
    """`1234567` -> `"1.2 MB"` (decimal units)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def over_budget(what: str, need: float, detail: str, remedy: str) -> str | None:
    """The one-line refusal if `need` bytes exceed the budget, else None.

    Args:
        what: the tool, as the message names it (`"fbx.explore"`).
        need: the estimate, in bytes.
        detail: what the estimate counts (`"4 samples x 20,000 steps x 1,345 units"`).
        remedy: what to pass to need less (`"Pass samples= or nodes= ..."`).
    """
    budget, source = _budget()
    if need <= budget:
        return None
    return (
        f"{what} would need about {format_bytes(need)} of memory ({detail}), more than "
        f"the budget of {format_bytes(budget)} ({source}). {remedy}, or raise the "
        f"budget with fbx.set_memory_budget(bytes)."
    )


def check_memory(what: str, need: float, detail: str, remedy: str) -> None:
    """Raise `over_budget`'s line as a ValueError if `need` bytes exceed the budget."""
    message = over_budget(what, need, detail, remedy)
    if message:
        raise ValueError(message)


def values_detail(samples: int, steps: int, units: int, nodes: int) -> str:
    """`"4 samples x 2,000 steps x 1,345 units of 20 nodes"`."""
    return (
        f"{samples:,} sample{'s' * (samples != 1)} x {steps:,} step{'s' * (steps != 1)} x "
        f"{units:,} unit{'s' * (units != 1)} of {nodes} node{'s' * (nodes != 1)}"
    )
