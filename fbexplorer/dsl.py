"""The `%%fbmodel` cell language: one timestep in Python, `prev(var)` for feedback.

A cell body is ordinary Python run once, symbolically, like a Keras functional
model: Keras layers by name (`Dense`, `Concatenate`, `LSTMCell`, ...), `ops`
for `keras.ops`, `cell` for `fbx.cell`, and `prev(var, steps=1,
initial="zeros")`, the value that variable `var` had `steps` steps ago. `var`
may be assigned anywhere in the cell, later lines included, so feedback reads
like feed-forward code:

    h1 = Dense(5)(Concatenate()([x, prev(h3)]))
    h2 = Dense(5)(h1)
    h3 = Dense(5)(h2)

`prev(h3)` becomes an `fbx.Feedback` bound to `h3`'s final value. Its shape is
inferred: the body is run with a guess for every shape not known yet, the
guesses are corrected from what the variables turn out to be, and the body is
run again until they agree (two runs for most cells). `prev(h3, shape=(8,))`
skips the guess.

`build()` is the whole language; the IPython magics in `magics.py` only parse
flags and show the result. Every mistake is raised as `FbModelError`, one line
that names the cell line and the offending name.
"""

from __future__ import annotations

import ast
import re
import traceback
from dataclasses import dataclass, field

import keras

from fbexplorer.engine import FeedbackModel
from fbexplorer.graph import Feedback, cell, delayed

FILENAME = "<fbmodel>"
_MAX_PASSES = 6


class FbModelError(Exception):
    """A mistake in a `%%fbmodel` cell, shown as one line in IPython."""

    def _render_traceback_(self):
        return [f"FbModelError: {self}"]


def one_line(exc: BaseException) -> str:
    """An exception's message as one line: its first paragraph, without
    Keras's "Arguments received" block."""
    text = str(exc).split("Arguments received by")[0]
    paragraph = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0]
    line = " ".join(part.strip() for part in paragraph.splitlines() if part.strip())
    return line or type(exc).__name__


def namespace() -> dict:
    """The names a cell body sees before the notebook's own: every Keras layer
    class, `ops`, `keras`, `cell`."""
    names = {
        name: obj
        for name, obj in vars(keras.layers).items()
        if isinstance(obj, type) and issubclass(obj, keras.layers.Layer)
    }
    names.update(ops=keras.ops, keras=keras, cell=cell)
    return names


@dataclass
class _Source:
    """A cell body parsed once: the code to run and what it assigns."""

    code: object
    assigned: dict = field(default_factory=dict)  # var -> last top-level line
    order: list = field(default_factory=list)  # top-level assignment order


def _targets(node) -> list[str]:
    """Plain names a top-level statement assigns."""
    if isinstance(node, ast.Assign):
        found = []
        for target in node.targets:
            found += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
        return found
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


class _NameLayers(ast.NodeTransformer):
    """`h1 = Dense(5)(...)` -> `Dense(5, name="h1")(...)`, for readable graphs:
    only for names assigned once, by a Keras layer class given no name."""

    def __init__(self, single: set, layer_names: set):
        self.single = single
        self.layer_names = layer_names

    def visit_Assign(self, node):
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            return node
        var = node.targets[0].id
        call = node.value
        if var not in self.single or not isinstance(call, ast.Call):
            return node
        maker = call.func
        if (
            isinstance(maker, ast.Call)
            and isinstance(maker.func, ast.Name)
            and maker.func.id in self.layer_names
            and not any(k.arg == "name" for k in maker.keywords)
        ):
            maker.keywords.append(ast.keyword(arg="name", value=ast.Constant(var)))
        return node


def parse(body: str, first_line: int = 2, layer_names: set = frozenset(), reserved=()) -> tuple:
    """Parse a cell body into a `_Source` and its `prev` call sites.

    `first_line` is the number of the body's first line in the cell (the
    `%%fbmodel` line is line 1). `prev(h3, ...)` is rewritten to
    `prev(<site index>, ...)` so that `h3` need not exist yet when it runs.
    """
    try:
        tree = ast.parse(body, filename=FILENAME)
    except (SyntaxError, ValueError) as exc:  # ValueError: a null byte
        line = (getattr(exc, "lineno", None) or 1) + first_line - 1
        raise FbModelError(f"line {line}: invalid Python: {getattr(exc, 'msg', exc)}") from None
    ast.increment_lineno(tree, first_line - 1)

    source = _Source(code=None)
    counts: dict = {}
    for stmt in tree.body:
        for var in _targets(stmt):
            source.assigned[var] = stmt.lineno
            source.order.append(var)
            counts[var] = counts.get(var, 0) + 1

    sites: list[str] = []  # the variable of each prev() call, by its index
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id != "prev":
            continue
        if not node.args or not isinstance(node.args[0], ast.Name):
            shown = ast.unparse(node.args[0]) if node.args else ""
            raise FbModelError(
                f"line {node.lineno}: prev() takes the name of a variable assigned in this "
                f"cell, as in prev(h3); received prev({shown})"
            )
        var = node.args[0].id
        if var not in source.assigned and var not in reserved:
            raise FbModelError(
                f"line {node.lineno}: prev({var}): '{var}' is never assigned in this cell; "
                "prev() feeds back a variable the cell assigns"
            )
        sites.append(var)
        node.args[0] = ast.Constant(len(sites) - 1)

    single = {var for var, n in counts.items() if n == 1} - set(reserved)
    tree = ast.fix_missing_locations(_NameLayers(single, set(layer_names)).visit(tree))
    try:  # what the parser accepts but the compiler refuses, as `return` at top level
        source.code = compile(tree, FILENAME, "exec")
    except SyntaxError as exc:
        raise FbModelError(f"line {exc.lineno}: invalid Python: {exc.msg}") from None
    return source, sites


def _cell_line(exc: BaseException) -> int | None:
    """The cell line an exception was raised from, if it came from the cell."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == FILENAME]
    return frames[-1].lineno if frames else None


def _explain(exc: BaseException, source: _Source) -> str:
    """`line N: message`, with a hint for the mistakes the language invites."""
    line = _cell_line(exc)
    message = one_line(exc)
    if isinstance(exc, NameError) and getattr(exc, "name", None) in source.assigned:
        var = exc.name
        later = source.assigned[var]
        if line is not None and later >= line:
            message = (
                f"'{var}' is used before it is assigned (line {later}): a cycle without a "
                f"delay; to feed it back from the previous step, write prev({var})"
            )
    if isinstance(exc, TypeError) and "'states'" in message:
        message += "; a Keras RNN cell runs in the loop through cell(), as in cell(LSTMCell(8))(x)"
    return f"line {line}: {message}" if line is not None else message


class _Pass:
    """One symbolic run of the body with given shape guesses."""

    def __init__(self, sites, guesses, default, declared=()):
        self.sites = sites
        self.declared = set(declared)
        self.guesses = guesses  # var -> (shape, dtype)
        self.default = default
        self.placeholders: dict = {}  # (var, steps, initial) -> Feedback tensor
        self.bindings: dict = {}  # feedback name -> var
        self.names: set = set()  # names given to delayed values
        self.assumed: dict = {}  # var -> shape guessed without evidence
        self.ns: dict = {}

    def prev(self, index, steps=1, initial="zeros", shape=None, dtype=None):
        var = self.sites[index]
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"prev({var}, steps={steps!r}): steps must be an int >= 1")
        key = (var, steps, repr(initial))
        if key in self.placeholders:
            return self.placeholders[key]
        if var in self.declared:  # an input: a forward delay, bound by itself
            self.placeholders[key] = delayed(
                self.ns[var], steps=steps, initial=initial, name=self._name(var, steps)
            )
            return self.placeholders[key]
        if shape is not None:
            shape = (shape,) if isinstance(shape, int) else tuple(shape)
            self.guesses[var] = (shape, dtype)
        elif var not in self.guesses:
            current = self.ns.get(var)
            if _is_tensor(current):
                self.guesses[var] = (tuple(current.shape[1:]), current.dtype)
            else:
                self.guesses[var] = (self.default, None)
                self.assumed[var] = self.default
        guess_shape, guess_dtype = self.guesses[var]
        name = self._name(var, steps)
        tensor = Feedback(
            guess_shape, name=name, delay=steps, initial=initial, dtype=dtype or guess_dtype
        )
        self.placeholders[key] = tensor
        self.bindings[name] = var
        return tensor

    def _name(self, var, steps) -> str:
        name = f"{var}_prev" if steps == 1 else f"{var}_prev{steps}"
        while name in self.names:
            name += "_"
        self.names.add(name)
        return name

    def run(self, code, base: dict, tensors: dict):
        self.ns = dict(base)
        self.ns.update(tensors)
        self.ns["prev"] = self.prev
        exec(code, self.ns)  # noqa: S102 - the user's own cell, like any notebook cell


def _is_tensor(value) -> bool:
    return isinstance(value, keras.KerasTensor)


def _spec(value):
    return tuple(value.shape[1:]), value.dtype


def build(
    body: str,
    *,
    name: str,
    inputs: list,
    constants: list = (),
    outputs: list | None = None,
    stateful: bool = False,
    user_ns: dict | None = None,
    first_line: int = 2,
) -> FeedbackModel:
    """Build a `FeedbackModel` from a `%%fbmodel` cell body.

    Args:
        body: the cell body (Python).
        name: the model's name.
        inputs: `[(name, shape), ...]`, the per-step inputs.
        constants: `[(name, shape), ...]`, inputs without a time axis.
        outputs: variable names of the outputs; default: the last variable
            the cell assigns.
        stateful: build a stateful model.
        user_ns: the notebook's names, visible to the body (Keras layer
            names fill in what it lacks).
        first_line: the cell line of the body's first line.

    Raises:
        FbModelError: any mistake, as one line naming the cell line.
    """
    names = namespace()
    layer_names = {n for n, obj in names.items() if isinstance(obj, type)}
    user_ns = dict(user_ns or {})
    shadowed = {n for n in layer_names if n in user_ns and user_ns[n] is not names[n]}
    declared = [n for n, _ in list(inputs) + list(constants)]
    source, sites = parse(body, first_line, layer_names - shadowed, reserved=declared)
    if not source.order:
        raise FbModelError(
            "the cell assigns no variable; write one timestep, as in y = Dense(1)(x), "
            "and the last variable assigned is the output"
        )
    if len(set(declared)) != len(declared):
        raise FbModelError(f"input and constant names must differ; received {declared}")
    outputs = list(outputs) if outputs else [source.order[-1]]
    for out in outputs:
        if out not in source.assigned and out not in declared:
            raise FbModelError(
                f"--output {out}: the cell assigns no variable '{out}'; "
                f"it assigns {', '.join(dict.fromkeys(source.order))}"
            )
    base = {"__builtins__": __builtins__, **names, **user_ns}

    # Candidate shapes for a prev() whose variable is not assigned yet.
    candidates = list(dict.fromkeys([tuple(s) for _, s in list(inputs) + list(constants)]))
    candidates.append((1,))

    guesses: dict = {}
    wrong: dict = {}
    first_error = None
    candidate = 0
    for _ in range(_MAX_PASSES + len(candidates)):
        run = _Pass(sites, dict(guesses), candidates[candidate], declared)
        tensors = {n: keras.Input(shape, name=n) for n, shape in inputs}
        tensors.update({n: keras.Input(shape, name=n) for n, shape in constants})
        try:
            run.run(source.code, base, tensors)
        except Exception as exc:  # the user's code: any error becomes one line
            message = _explain(exc, source)
            if run.assumed and not isinstance(exc, (NameError, SyntaxError)):
                assumed = ", ".join(f"prev({v}) shape {s}" for v, s in run.assumed.items())
                message += (
                    f" (shapes assumed while inferring: {assumed}; if that is the cause, "
                    "give the shape, as in prev(h3, shape=(8,)))"
                )
            first_error = first_error or message
            if run.assumed and candidate + 1 < len(candidates):
                candidate += 1
                continue
            raise FbModelError(first_error) from None
        values = {var: run.ns.get(var) for var in set(run.bindings.values()) | set(outputs)}
        for var, value in values.items():
            if not _is_tensor(value):
                line = source.assigned.get(var, "?")
                raise FbModelError(
                    f"line {line}: '{var}' is {type(value).__name__} {value!r:.40}, not the "
                    "output of a layer; prev() and outputs take layer outputs"
                )
        actual = {var: _spec(values[var]) for var in set(run.bindings.values())}
        wrong = {
            var: spec
            for var, spec in actual.items()
            if tuple(run.guesses[var][0]) != spec[0] or (run.guesses[var][1] or spec[1]) != spec[1]
        }
        if not wrong:
            return _assemble(run, tensors, inputs, constants, outputs, stateful, name)
        guesses = {**run.guesses, **wrong}
    raise FbModelError(
        "could not infer the shapes of "
        + ", ".join(f"prev({v})" for v in wrong)
        + "; give them, as in prev(h3, shape=(8,))"
    )


def _assemble(run, tensors, inputs, constants, outputs, stateful, name) -> FeedbackModel:
    feedback = {fb: run.ns[var] for fb, var in run.bindings.items()}
    ins = [tensors[n] for n, _ in inputs]
    consts = [tensors[n] for n, _ in constants]
    outs = [run.ns[o] for o in outputs]
    try:
        return FeedbackModel(
            inputs=ins[0] if len(ins) == 1 else ins,
            outputs=outs[0] if len(outs) == 1 else outs,
            feedback=feedback,
            constants=consts or None,
            stateful=stateful,
            name=name,
        )
    except Exception as exc:  # graph validation: the engine's message, on one line
        raise FbModelError(one_line(exc)) from None
