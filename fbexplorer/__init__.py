"""fbexplorer: neural networks with feedback connections, as Keras models.

import keras
import fbexplorer as fbx

x = keras.Input((5,), name="x")
loop = fbx.Feedback((5,), name="loop")
h1 = keras.layers.Dense(5, name="d1")(keras.layers.Concatenate()([x, loop]))
h3 = keras.layers.Dense(5, name="d3")(keras.layers.Dense(5, name="d2")(h1))
net = fbx.FeedbackModel(inputs=x, outputs=h3, feedback={"loop": h3})
"""

from fbexplorer import zoo  # registers the zoo's layers for load_model
from fbexplorer.bifurcations import Continuation, continuation
from fbexplorer.bptt import gradient_flow, gradient_norms, plot_gradient_norms
from fbexplorer.callbacks import TraceCallback
from fbexplorer.census import Attractors, attractors
from fbexplorer.drawing import draw
from fbexplorer.engine import FeedbackModel
from fbexplorer.fixed_point_search import FixedPoints, fixed_points
from fbexplorer.graph import Feedback, FeedbackSpec, StepGraph, cell, delayed
from fbexplorer.lyapunov_spectrum import lyapunov
from fbexplorer.memory import memory_budget, set_memory_budget
from fbexplorer.plots import plot_comparison, plot_heatmap, plot_trace, similarity_order
from fbexplorer.portraits import Projection, pca_project, portrait
from fbexplorer.saddle_connections import connection_graph
from fbexplorer.saving import load_model
from fbexplorer.step_cell import StepCell
from fbexplorer.tracing import chunk_summary, compare, compare_stateful, trace, wide
from fbexplorer.widgets import Explorer, explore

__version__ = "0.1.0"


def load_ipython_extension(ipython):
    """`%load_ext fbexplorer`: the %%fbmodel and %fb... magics (fbexplorer.magics)."""
    from fbexplorer.magics import load_ipython_extension as load

    load(ipython)


__all__ = [
    "Attractors",
    "Continuation",
    "Explorer",
    "Feedback",
    "FeedbackModel",
    "FeedbackSpec",
    "FixedPoints",
    "Projection",
    "StepCell",
    "StepGraph",
    "TraceCallback",
    "attractors",
    "cell",
    "chunk_summary",
    "compare",
    "compare_stateful",
    "connection_graph",
    "continuation",
    "delayed",
    "draw",
    "explore",
    "fixed_points",
    "gradient_flow",
    "gradient_norms",
    "load_model",
    "lyapunov",
    "memory_budget",
    "pca_project",
    "plot_comparison",
    "plot_gradient_norms",
    "plot_heatmap",
    "plot_trace",
    "portrait",
    "set_memory_budget",
    "similarity_order",
    "trace",
    "wide",
    "zoo",
]
