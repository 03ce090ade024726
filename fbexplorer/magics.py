"""IPython magics: `%%fbmodel` and the line magics `%fbdraw`, `%fbtrace`,
`%fbcompare`, `%fbexplore`, `%fbfixed`, `%fbattractors`, `%fbgrad`. Load them
with `%load_ext fbexplorer`.

The magics parse flags and show results; the cell language is `dsl.py`, the
rest is the public API (`fbx.draw`, `fbx.trace`, `fbx.compare_stateful`,
`fbx.explore`, `fbx.fixed_points`, `fbx.attractors`, `fbx.gradient_flow`). Bad flags raise `UsageError`; mistakes in a cell or in the
data raise `FbModelError`; both show as one line, without a traceback.
"""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.core.magic_arguments import parse_argstring as _parse_argstring
from IPython.display import display

from fbexplorer.dsl import FbModelError, build, one_line
from fbexplorer.engine import FeedbackModel

__all__ = ["FeedbackMagics", "load_ipython_extension", "parse_argstring"]


def parse_argstring(magic, line: str):
    """IPython's flag parsing, with unbalanced quotes as a UsageError too."""
    try:
        return _parse_argstring(magic, line)
    except ValueError as exc:
        raise UsageError(f"%{magic.__name__} {line}: {exc}") from None


def _fbmodel_flags(args) -> tuple[list, list]:
    """`%%fbmodel`'s flags, checked: `(inputs, constants)` as `[(name, shape), ...]`."""
    if not args.name.isidentifier():
        raise UsageError(f"%%fbmodel {args.name}: NAME must be a Python variable name")
    if args.unroll is not None and args.quiet:
        raise UsageError(
            "%%fbmodel: --unroll N draws the time expansion, --quiet draws "
            "nothing; give one of them"
        )
    if args.unroll is not None and args.unroll < 1:
        raise UsageError(f"%%fbmodel: --unroll {args.unroll}: give a number of steps >= 1")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"%%fbmodel: --steps {args.steps}: give a number of steps >= 1")
    inputs = [_shape_flag(t, "--input") for t in args.input]
    constants = [_shape_flag(t, "--constant") for t in args.constant]
    if not inputs and not constants:
        raise UsageError(
            "%%fbmodel: declare the inputs of one timestep, as in "
            f"%%fbmodel {args.name} --input x:5"
        )
    if inputs and args.steps is not None:
        raise UsageError(
            f"%%fbmodel: --steps {args.steps} is for a model with only --constant inputs; "
            "with --input, the number of steps is the length of the sequences"
        )
    if not inputs and args.steps is None:
        raise UsageError(
            "%%fbmodel: a model with only --constant inputs has no sequence to take "
            f"the number of steps from; give --steps N, as in %%fbmodel {args.name} "
            f"{' '.join('--constant ' + t for t in args.constant)} --steps 10"
        )
    return inputs, constants


def _shape_flag(text: str, flag: str) -> tuple[str, tuple]:
    """`x:5` -> ("x", (5,)); `img:8,8,1` -> ("img", (8, 8, 1))."""
    name, sep, dims = text.partition(":")
    try:
        shape = tuple(int(d) for d in dims.split(",")) if sep and dims else None
    except ValueError:
        shape = None
    if not name.isidentifier() or shape is None or any(d < 1 for d in shape):
        raise UsageError(
            f"{flag} {text}: write NAME:SHAPE with a per-step shape of positive ints, "
            f"as in {flag} x:5 or {flag} img:28,28,1"
        )
    return name, shape


def _names(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if not n.isidentifier()]
    if not names or bad:
        raise UsageError(
            f"{flag} {text}: give variable names separated by commas, as in {flag} y,z"
        )
    return names


def _node_names(text: str | None, flag: str = "--nodes") -> list[str] | None:
    """`--nodes d1,lstm/h,loop`: node names as `fbx.trace` takes them (layers,
    `d1#1`, `lstm/h`, feedback names), separated by commas; the public API
    checks them against the model."""
    if text is None:
        return None
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":  # IPython keeps quotes
        text = text[1:-1]
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(
            f"{flag} {text!r}: give node names separated by commas, as in {flag} d1,lstm/h"
        )
    return names


@magics_class
class FeedbackMagics(Magics):
    """The fbexplorer magics, registered by `%load_ext fbexplorer`."""

    # -- lookups ---------------------------------------------------------------

    def _model(self, name: str, magic: str) -> FeedbackModel:
        if name not in self.shell.user_ns:
            raise UsageError(
                f"%{magic}: no model named '{name}' in the notebook; build one with "
                f"%%fbmodel {name} --input x:5"
            )
        model = self.shell.user_ns[name]
        if not isinstance(model, FeedbackModel):
            raise UsageError(f"%{magic}: '{name}' is a {type(model).__name__}, not a FeedbackModel")
        return model

    def _data(self, expr: str, magic: str, what: str = "DATA"):
        try:
            return eval(expr, self.shell.user_ns)  # noqa: S307 - the user's own expression
        except Exception as exc:
            raise UsageError(
                f"%{magic}: {what} '{expr}' could not be evaluated: {one_line(exc)}"
            ) from None

    def _call(self, magic: str, fn, *args, **kwargs):
        """Run a public API call; a bad argument becomes one line."""
        try:
            return fn(*args, **kwargs)
        except (ValueError, KeyError) as exc:
            raise FbModelError(f"%{magic}: {one_line(exc)}") from None

    def _store(self, var: str | None, value):
        if var:
            self.shell.user_ns[var] = value

    # -- %%fbmodel -------------------------------------------------------------

    @magic_arguments()
    @argument("name", help="the variable the model is bound to")
    @argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:SHAPE",
        help="a per-step input and its shape without batch or time axis, as in x:5 or "
        "img:28,28,1; repeat for several",
    )
    @argument(
        "--constant",
        action="append",
        default=[],
        metavar="NAME:SHAPE",
        help="an input without a time axis, fed unchanged at every step",
    )
    @argument(
        "--output",
        metavar="VAR[,VAR...]",
        help="the output variables (default: the last variable the cell assigns a layer output to)",
    )
    @argument(
        "--steps",
        type=int,
        metavar="N",
        help="the number of steps of a model with only --constant inputs (a call's "
        "steps= overrides it)",
    )
    @argument("--stateful", action="store_true", help="carry the state across calls")
    @argument("--unroll", type=int, metavar="N", help="draw the time expansion over N steps")
    @argument("--quiet", action="store_true", help="draw nothing")
    @cell_magic
    def fbmodel(self, line, cell):
        """Define a feedback network: one timestep in Python, prev(var) for feedback.

        The cell body is Python run once, symbolically, like a Keras functional
        model. It sees every Keras layer by name (Dense, Concatenate, Conv2D,
        LSTMCell, ...), `ops` (keras.ops), `cell` (fbx.cell) and the
        notebook's own names, plus:

          prev(var, delay=1, initial="zeros", shape=None)
              the value variable `var` had `delay` steps ago. `var` may be
              assigned anywhere in the cell, later lines included; its shape
              is inferred. initial: "zeros", "learned" or a Keras initializer.

        These names of the language win over notebook variables of the same
        name. The output is the last variable assigned a layer output (or
        --output); a plain statement after it, as cfg['units'] = 4, just runs. A
        model with only --constant inputs needs --steps N. The model (a
        fbx.FeedbackModel) is bound to NAME, returned, and drawn (cyclic, or
        unrolled with --unroll N).

        A layer created on a line that assigns it to a variable once is named
        after it: h = Dense(5)(x) is the layer h, lstm = LSTMCell(8) the
        layer lstm, and h = cell(LSTMCell(8))(x) the cell h, whose states are
        h/h and h/c. Other layers get Keras's names (dense, dense_1, ...),
        counted for this cell alone: running the cell again gives the same
        names, so names in nodes=[...] and initial_state={...} stay valid.

        Using a variable before its line without prev() is a cycle without a
        delay, and an error. On any error NAME keeps its old value. Line
        numbers count the %%fbmodel line as line 1.

        Example:

            %%fbmodel net --input x:5
            h1 = Dense(5, activation="tanh")(Concatenate()([x, prev(h3)]))
            h2 = Dense(5, activation="tanh")(h1)
            h3 = Dense(5, activation="tanh")(h2)
            y = Dense(1)(h3)

        then net.compile(...), net.fit(X, Y) with X of shape (batch, time, 5),
        %fbdraw net --unroll 3, %fbtrace net X, %fbexplore net X.
        """
        args = parse_argstring(self.fbmodel, line)
        inputs, constants = _fbmodel_flags(args)
        model = build(
            cell,
            name=args.name,
            inputs=inputs,
            constants=constants,
            outputs=_names(args.output, "--output"),
            stateful=args.stateful,
            steps=args.steps,
            user_ns=self.shell.user_ns,
        )
        self.shell.user_ns[args.name] = model
        if not args.quiet:
            from fbexplorer.drawing import draw

            display(draw(model, unroll=args.unroll))
        return model

    # -- line magics -----------------------------------------------------------

    @magic_arguments()
    @argument("name", help="a FeedbackModel in the notebook")
    @argument("--unroll", type=int, metavar="N", help="draw the time expansion over N steps")
    @line_magic
    def fbdraw(self, line):
        """Draw a feedback model: its cyclic graph, or its time expansion.

        Example: %fbdraw net --unroll 3
        """
        from fbexplorer.drawing import draw

        args = parse_argstring(self.fbdraw, line)
        model = self._model(args.name, "fbdraw")
        return self._call("fbdraw", draw, model, unroll=args.unroll)

    @magic_arguments()
    @argument("name", help="a FeedbackModel in the notebook")
    @argument("data", help="an expression for the input sequences, as in X[:4]")
    @argument(
        "--nodes",
        metavar="A,B",
        help="the nodes to record, by the names fbx.trace takes: layers (d1, d1#1 for "
        "a second call), inputs, feedback names (h3_prev), cell states (lstm/h); "
        "default: every node",
    )
    @argument("-o", dest="out", metavar="VAR", help="also bind the DataFrame to VAR")
    @line_magic
    def fbtrace(self, line):
        """Record every node's value at every timestep, as a tidy DataFrame
        (fbx.trace).

        Example: %fbtrace net X[:4] --nodes d1,h3_prev,lstm/h -o df
        """
        from fbexplorer.tracing import trace

        args = parse_argstring(self.fbtrace, line)
        model = self._model(args.name, "fbtrace")
        data = self._data(args.data, "fbtrace")
        nodes = _node_names(args.nodes)
        df = self._call("fbtrace", trace, model, data, nodes=nodes)
        self._store(args.out, df)
        return df

    @magic_arguments()
    @argument("name", help="a FeedbackModel in the notebook")
    @argument("data", help="an expression for the input sequences, as in X[:4]")
    @argument("--chunks", type=int, required=True, metavar="K", help="split time into K chunks")
    @argument(
        "--nodes",
        metavar="A,B",
        help="the nodes to compare, named as for %%fbtrace (default: every node)",
    )
    @argument("-o", dest="out", metavar="VAR", help="also bind the DataFrame to VAR")
    @line_magic
    def fbcompare(self, line):
        """Run the data in K chunks, stateless and stateful, side by side
        (fbx.compare_stateful).

        Example: %fbcompare net X[:4] --chunks 4 --nodes d3,lstm/c -o cmp
        """
        from fbexplorer.tracing import compare_stateful

        args = parse_argstring(self.fbcompare, line)
        model = self._model(args.name, "fbcompare")
        data = self._data(args.data, "fbcompare")
        nodes = _node_names(args.nodes)
        df = self._call("fbcompare", compare_stateful, model, data, chunks=args.chunks, nodes=nodes)
        self._store(args.out, df)
        return df

    @magic_arguments()
    @argument(
        "name",
        help="a FeedbackModel in the notebook, or a fbx.TraceCallback that has recorded "
        "during fit (its epochs get a slider)",
    )
    @argument(
        "data",
        nargs="?",
        help="an expression for the input sequences, as in X[:4] (none for a TraceCallback)",
    )
    @argument(
        "--nodes",
        metavar="A,B",
        help="the nodes to offer, named as for %%fbtrace (default: every node)",
    )
    @argument(
        "--chunks",
        type=int,
        metavar="K",
        help="the number of chunks of the stateful view (default 2; 1 turns it off)",
    )
    @argument("--window", type=int, metavar="N", help="the steps the unrolled view draws (5)")
    @argument(
        "--fixed",
        metavar="EXPR",
        help="an expression for the fbx.FixedPoints drawn on the portrait, as in fp "
        "(from %%fbfixed ... -o fp)",
    )
    @argument("-o", dest="out", metavar="VAR", help="also bind the Explorer to VAR")
    @line_magic
    def fbexplore(self, line):
        """Scrub through a model's states: the graph lit by each node's value at
        step t, node and sample pickers, Play and a time slider that run in the
        browser, the trajectories, a heatmap and the portrait (fbx.explore).

        NAME is a FeedbackModel, traced on DATA, or a fbx.TraceCallback that
        recorded during fit: then there is no DATA, and an epoch slider
        shows the dynamics as they formed. --fixed draws fixed points on the
        portrait, as fbx.explore(..., fixed_points=...) does.

        Example: %fbexplore net X[:4] --fixed fp -o ex   (DATA without spaces)
                 %fbexplore watch                        (watch = fbx.TraceCallback(X[:2]))
        """
        from fbexplorer.callbacks import TraceCallback
        from fbexplorer.fixed_point_search import FixedPoints
        from fbexplorer.widgets import explore

        args = parse_argstring(self.fbexplore, line)
        watched = self.shell.user_ns.get(args.name)
        kwargs = {}
        if isinstance(watched, TraceCallback):
            flags = {"DATA": args.data, "--nodes": args.nodes, "--chunks": args.chunks}
            given = [flag for flag, value in flags.items() if value is not None]
            if given:
                raise UsageError(
                    f"%fbexplore: '{args.name}' is a TraceCallback, which shows the inputs "
                    f"and nodes it traced during fit, in one run; drop {given[0]}, as in "
                    f"%fbexplore {args.name}"
                )
            target, data = watched, None
        else:
            if args.name in self.shell.user_ns and not isinstance(watched, FeedbackModel):
                raise UsageError(
                    f"%fbexplore: '{args.name}' is a {type(watched).__name__}, not a "
                    "FeedbackModel or a fbx.TraceCallback"
                )
            target = self._model(args.name, "fbexplore")
            if args.data is None:
                raise UsageError(
                    f"%fbexplore: give the data to trace '{args.name}' on, as in "
                    f"%fbexplore {args.name} X[:4]"
                )
            data = self._data(args.data, "fbexplore")
            kwargs.update(nodes=_node_names(args.nodes), chunks=args.chunks)
        if args.window is not None:
            if args.window < 1:
                raise UsageError(f"%fbexplore: --window {args.window}: give a number of steps >= 1")
            kwargs["window"] = args.window
        if args.fixed is not None:
            fixed = self._data(args.fixed, "fbexplore", what="--fixed")
            model = args.name if isinstance(target, FeedbackModel) else "MODEL"
            if not isinstance(fixed, FixedPoints):
                raise UsageError(
                    f"%fbexplore: --fixed {args.fixed} is a {type(fixed).__name__}, not a "
                    f"fbx.FixedPoints; find them with %fbfixed {model} DATA -o fp, then --fixed fp"
                )
            kwargs["fixed_points"] = fixed
        ex = self._call("fbexplore", explore, target, data, **kwargs)
        self._store(args.out, ex)
        return ex

    @magic_arguments()
    @argument("name", help="a FeedbackModel in the notebook")
    @argument(
        "data",
        help="an expression for the inputs held at every step: one timestep, without batch "
        "or time axes, as in {'x': X[0, 0]}",
    )
    @argument(
        "--initial",
        metavar="EXPR",
        help="sequences to start from the states the model visits on them, as in X[:8]",
    )
    @argument("-o", dest="out", metavar="VAR", help="also bind the FixedPoints to VAR")
    @line_magic
    def fbfixed(self, line):
        """Find the fixed points of a model with its inputs held, and their
        stability (fbx.fixed_points); shows one row per point.

        Example: %fbfixed net X[0,0] --initial X[:8] -o fp  (DATA without spaces)
        """
        from fbexplorer.fixed_point_search import fixed_points

        args = parse_argstring(self.fbfixed, line)
        model = self._model(args.name, "fbfixed")
        data = self._data(args.data, "fbfixed")
        initial = None if args.initial is None else self._data(args.initial, "fbfixed")
        fp = self._call("fbfixed", fixed_points, model, data, initial=initial)
        self._store(args.out, fp)
        return fp

    @magic_arguments()
    @argument("name", help="a FeedbackModel in the notebook")
    @argument(
        "data",
        help="an expression for the inputs held at every step: one timestep, without batch "
        "or time axes, as in {'x': X[0, 0]}",
    )
    @argument(
        "--initial",
        metavar="EXPR",
        help="sequences to start from the states the model visits on them, as in X[:8], "
        "or states by name, as in fp.states",
    )
    @argument("--starts", type=int, metavar="N", help="the number of runs (256)")
    @argument("--steps", type=int, metavar="N", help="the steps run before classifying (1000)")
    @argument("--max-period", type=int, metavar="N", help="the longest cycle looked for (16)")
    @argument("-o", dest="out", metavar="VAR", help="also bind the Attractors to VAR")
    @line_magic
    def fbattractors(self, line):
        """A census of where the model's free runs end with its inputs held: fixed
        points, cycles, continua, irregular orbits (fbx.attractors); shows one row
        per attractor (kind, period, dimension, share, max_lyapunov).

        Example: %fbattractors net X[0,0] --initial X[:8] --starts 64 -o census
                 (DATA without spaces)
        """
        from fbexplorer.census import attractors

        args = parse_argstring(self.fbattractors, line)
        kwargs = {}
        for flag, key in (
            ("--starts", "starts"),
            ("--steps", "steps"),
            ("--max-period", "max_period"),
        ):
            value = getattr(args, key)
            if value is not None and value < 1:
                raise UsageError(f"%fbattractors: {flag} {value}: give a whole number >= 1")
            if value is not None:
                kwargs[key] = value
        model = self._model(args.name, "fbattractors")
        data = self._data(args.data, "fbattractors")
        if args.initial is not None:
            kwargs["initial"] = self._data(args.initial, "fbattractors", what="--initial")
        census = self._call("fbattractors", attractors, model, data, **kwargs)
        self._store(args.out, census)
        return census.frame

    @magic_arguments()
    @argument("name", help="a FeedbackModel in the notebook")
    @argument("data", help="an expression for the input sequences, as in X[:4]")
    @argument(
        "targets",
        nargs="?",
        help="an expression for the targets (the loss is then the compiled one; default: "
        "the sum of the outputs at the last step)",
    )
    @argument("--nodes", metavar="A,B", help="the nodes to differentiate (default: every node)")
    @argument("--plot", action="store_true", help="show the gradient norm per step (log scale)")
    @argument("-o", dest="out", metavar="VAR", help="also bind the DataFrame to VAR")
    @line_magic
    def fbgrad(self, line):
        """The gradient of the loss with respect to every node at every step,
        as a tidy DataFrame (fbx.gradient_flow).

        Example: %fbgrad net X[:4] Y[:4] --nodes h1,h3 --plot -o g
        """
        from fbexplorer.bptt import gradient_flow, plot_gradient_norms

        args = parse_argstring(self.fbgrad, line)
        model = self._model(args.name, "fbgrad")
        data = self._data(args.data, "fbgrad")
        targets = None if args.targets is None else self._data(args.targets, "fbgrad")
        nodes = _node_names(args.nodes)
        df = self._call("fbgrad", gradient_flow, model, data, targets, nodes=nodes)
        self._store(args.out, df)
        if args.plot:
            display(plot_gradient_norms(df))
        return df


def load_ipython_extension(ipython):
    """`%load_ext fbexplorer`: register the magics (again is harmless)."""
    ipython.register_magics(FeedbackMagics)
