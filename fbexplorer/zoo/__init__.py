"""Reference architectures from the literature, built as `FeedbackModel`s.

Each function builds and returns a small model (sizes are arguments); its
docstring cites the paper and states the wiring: what feeds back where, with
what delay.

| function | paper | feedback |
|---|---|---|
| `elman`, `jordan`, `narx` | Elman 1990; Jordan 1986; Lin et al. 1996 | hidden; output; output and input taps |
| `gated_feedback_rnn` | Chung et al. 2015 (arXiv:1502.02367) | every layer to every layer, gated |
| `vrnn` | Chung et al. 2015 (arXiv:1506.02216) | GRU state to prior, encoder, decoder |
| `draw_generator` | Gregor et al. 2015 (no attention) | canvas; decoder to encoder |
| `lenet5_feedback` | LeCun et al. 1998, FeedbackNets.jl | top-down, transposed convolutions |
| `blt`, `bl`, `bt` | Spoerer et al. 2017 | lateral and/or top-down |
| `cornet_r`, `cornet_rt` | Kubilius et al. 2018 | within areas; delayed forward path (RT) |

Example:
    >>> from fbexplorer import zoo
    >>> net = zoo.lenet5_feedback(steps=3)
"""

from fbexplorer.zoo._variational import GaussianKL, GaussianSample, PriorSwitch, VariationalModel
from fbexplorer.zoo.classic import elman, jordan, narx
from fbexplorer.zoo.draw_gen import draw_generator
from fbexplorer.zoo.gated import gated_feedback_rnn
from fbexplorer.zoo.vision import bl, blt, bt, cornet_r, cornet_rt, lenet5_feedback
from fbexplorer.zoo.vrnn import vrnn

__all__ = [
    "GaussianKL",
    "GaussianSample",
    "PriorSwitch",
    "VariationalModel",
    "bl",
    "blt",
    "bt",
    "cornet_r",
    "cornet_rt",
    "draw_generator",
    "elman",
    "gated_feedback_rnn",
    "jordan",
    "lenet5_feedback",
    "narx",
    "vrnn",
]
