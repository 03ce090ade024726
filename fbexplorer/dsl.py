"""The `%%fbmodel` cell language: one timestep in Python, `prev(var)` for feedback.

A cell body is ordinary Python run once, symbolically, like a Keras functional
model: Keras layers by name (`Dense`, `Concatenate`, `LSTMCell`, ...), `ops`
for `keras.ops`, `cell` for `fbx.cell`, and `prev(var, delay=1,
initial="zeros")`, the value that variable `var` had `delay` steps ago. `var`
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

Names are stable: a layer created inline and assigned to a variable is named
after it (`h = cell(LSTMCell(8))(x)` is the cell `h`, its states `h/h` and
`h/c`), and every other layer the body creates gets Keras's automatic name
counted afresh for the cell (`dense`, `dense_1`, ...), skipping the names
already in the model, so running the same cell again gives the same names.
The language's own names (`prev`, `cell`, `ops`, `keras`, the Keras layers)
win over the notebook's; the notebook's other names are visible.

`build()` is the whole language; the IPython magics in `magics.py` only parse
flags and show the result. Every mistake is raised as `FbModelError`, one line
that names the cell line and the offending name.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import itertools
import re
import traceback
import warnings
from dataclasses import dataclass, field

import keras

from fbexplorer import _keras, graph
from fbexplorer._renamed import given_twice_message, renamed_message
from fbexplorer.engine import FeedbackModel
from fbexplorer.graph import Feedback, cell, delayed

__all__ = ["FILENAME", "FbModelError", "build", "namespace", "one_line", "parse"]

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
    """The cell language's own names, which win over the notebook's: every
    Keras layer class, `ops`, `keras`, `cell` (and `prev`, added per run)."""
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
    names: set = field(default_factory=set)  # constant name="..." given to layers
    site_lines: list = field(default_factory=list)  # the line of each prev() call


def _bound(target) -> list[str]:
    """The names an assignment target binds: `a`, `a, (b, *c)`; not `cfg['k']` or
    `obj.attr`, which change an object and bind nothing."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Starred):
        return _bound(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _bound(element)]
    return []


def _targets(node) -> list[str]:
    """Plain names a top-level statement assigns."""
    if isinstance(node, ast.Assign):
        return [name for target in node.targets for name in _bound(target)]
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


class _NameLayers(ast.NodeTransformer):
    """Name a layer created inline after the variable it is assigned to, for
    readable graphs and stable names: `h1 = Dense(5)(...)`, `lstm =
    LSTMCell(8)`, `h = cell(LSTMCell(8))(...)` and `f = cell(GRUCell(4))`
    give the layer `name="h1"`, `"lstm"`, `"h"`, `"f"`. Only for names
    assigned once, and layers given no name."""

    def __init__(self, single: set, layer_names: set, cell_name: str | None = "cell"):
        self.single = single
        self.layer_names = layer_names
        self.cell_name = cell_name

    def _is_layer(self, node) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in self.layer_names
        )

    def _is_cell(self, node) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == self.cell_name
            and bool(node.args)
            and self._is_layer(node.args[0])
        )

    def _made_layer(self, value):
        """The layer constructor call whose result `value` is or applies."""
        for made in (value, value.func if isinstance(value, ast.Call) else None):
            # lstm = LSTMCell(8); f = cell(LSTMCell(8)); then each applied to (x)
            if self._is_layer(made):
                return made
            if self._is_cell(made):
                return made.args[0]
        return None

    def visit_Assign(self, node):
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            return node
        var = node.targets[0].id
        maker = self._made_layer(node.value) if var in self.single else None
        if maker is not None and not any(k.arg == "name" for k in maker.keywords):
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
        _rename_steps(node, var)
        sites.append(var)
        source.site_lines.append(node.lineno)
        node.args[0] = ast.Constant(len(sites) - 1)

    single = {var for var, n in counts.items() if n == 1} - set(reserved)
    own = set(source.assigned) | set(reserved)  # names the body itself rebinds
    namer = _NameLayers(single, set(layer_names) - own, None if "cell" in own else "cell")
    tree = ast.fix_missing_locations(namer.visit(tree))
    source.names = {
        node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword)
        and node.arg == "name"
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }
    try:  # what the parser accepts but the compiler refuses, as `return` at top level
        source.code = compile(tree, FILENAME, "exec")
    except SyntaxError as exc:
        raise FbModelError(f"line {exc.lineno}: invalid Python: {exc.msg}") from None
    return source, sites


def _rename_steps(node: ast.Call, var: str) -> None:
    """`prev(var, steps=k)`, the old spelling, becomes `prev(var, delay=k)`, with a
    DeprecationWarning naming the cell line; both given is an error."""
    old = [k for k in node.keywords if k.arg == "steps"]
    if not old:
        return
    label, shown = f"line {node.lineno}: prev({var})", ast.unparse(old[0].value)
    new = [k.value for k in node.keywords if k.arg == "delay"] + node.args[1:2]
    if new:
        message = given_twice_message(label, "steps", "delay", ast.unparse(new[0]), shown)
        raise FbModelError(message)
    message = renamed_message(label, "steps", "delay", shown)
    warnings.warn_explicit(message, DeprecationWarning, FILENAME, node.lineno, module="__main__")
    old[0].arg = "delay"


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


def _auto_name(prefix: str, k: int) -> str:
    """Keras's k-th automatic name for `prefix` (`dense`, `dense_1`, ...)."""
    return prefix if k == 0 else f"{prefix}_{k}"


class _CellUids(collections.defaultdict):
    """Keras's counters of automatic names, for one run of a cell body:
    counted from zero, so that a re-run gives the same names, and skipping
    the `taken` names, so that a name cannot clash in the model."""

    def __init__(self, taken: set):
        super().__init__(int)
        self.taken = taken

    def __contains__(self, prefix):  # Keras asks this before it names
        while _auto_name(prefix, self[prefix]) in self.taken:
            self[prefix] += 1
        return self[prefix] > 0

    def generated(self) -> set:
        return {_auto_name(p, k) for p, n in self.items() for k in range(n)} - self.taken


@contextlib.contextmanager
def _cell_names(taken: set):
    """Name what the body creates unnamed from fresh counters (`_CellUids`).

    Keras counts automatic names process-wide (`keras.backend.get_uid`), so
    the same cell run twice would name its layers `gru_cell`, then
    `gru_cell_1`. Afterwards the process-wide counters move past the names
    used here, so that layers made outside stay clear of them.
    """
    outer = _keras.names_counter()
    uids = _CellUids(taken)
    _keras.set_names_counter(uids)
    try:
        yield uids
    finally:
        _keras.set_names_counter(outer)
        for prefix, n in uids.items():
            outer[prefix] = max(outer.get(prefix, 0), n)


@contextlib.contextmanager
def _delay_names():
    """`fbx.delayed`'s default names (`h_delay1`, then `h_delay1_<n>`), kept
    unique in a process-wide set and counter, counted afresh for one run of
    the body (as `_cell_names` does for Keras's); afterwards the set holds
    them and the counter has moved past them."""
    outer_names, outer_uid = graph._used_names, graph._uid
    graph._used_names, graph._uid = set(), itertools.count(1)
    try:
        yield
    finally:
        outer_names |= graph._used_names
        handed_out = next(graph._uid) - 1  # the body's names end in _1 ... _n
        graph._used_names = outer_names
        graph._uid = itertools.count(next(outer_uid) + handed_out)


def _graph_names(tensors) -> collections.Counter:
    """How many distinct operations of the graph behind `tensors` (delayed
    sources included) carry each name."""
    ops, seen, stack = {}, set(), list(tensors)
    while stack:
        tensor = stack.pop()
        if not _keras.has_history(tensor):
            continue
        op, node = _keras.operation_of(tensor), _keras.producer(tensor)
        if id(node) in seen:
            continue
        seen.add(id(node))
        ops[id(op)] = op
        stack.extend(node.input_tensors)
        if getattr(op, "_fbx_source", None) is not None:
            stack.append(op._fbx_source)
    return collections.Counter(op.name for op in ops.values())


class _Pass:
    """One symbolic run of the body with given shape guesses."""

    def __init__(self, sites, guesses, default, declared=(), calls=None):
        self.sites = sites
        self.declared = set(declared)
        self.guesses = guesses  # var -> (shape, dtype)
        self.default = default
        self.placeholders: dict = {}  # (var, delay, initial) -> Feedback tensor
        self.bindings: dict = {}  # feedback name -> var
        self.names: set = set()  # names given to delayed values
        self.assumed: dict = {}  # var -> shape guessed without evidence
        self.given: dict = {}  # var -> (prev site index, shape, dtype) the cell gives
        self.ns: dict = {}
        # id -> (cell layer, its fbx.cell call count before the build): every
        # run numbers a cell's uses from the same count, so names stay stable.
        self.calls = {} if calls is None else calls
        self.generated: set = set()  # automatic names given in this run

    def cell(self, layer, **kwargs):
        """`fbx.cell`, for the body."""
        target = layer.as_cell() if hasattr(layer, "as_cell") else layer
        if hasattr(target, "state_size") and callable(target):
            self.calls.setdefault(id(target), (target, getattr(target, "_fbx_calls", 0)))
        return cell(target, **kwargs)

    def prev(self, index, delay=1, initial="zeros", shape=None, dtype=None):
        var = self.sites[index]
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 1:
            raise ValueError(f"prev({var}, delay={delay!r}): delay must be an int >= 1")
        key = (var, delay, repr(initial))
        if key in self.placeholders:
            return self.placeholders[key]
        if var in self.declared:  # an input: a forward delay, bound by itself
            _check_input_shape(var, self.ns[var], shape)
            self.placeholders[key] = delayed(
                self.ns[var], delay=delay, initial=initial, name=self._name(var, delay)
            )
            return self.placeholders[key]
        if shape is not None or dtype is not None:
            self.given[var] = (index, shape, dtype)
        if shape is not None:
            shape = (shape,) if isinstance(shape, int) else tuple(shape)
            self.given[var] = (index, shape, dtype)
            self.guesses[var] = (shape, dtype)
        elif var not in self.guesses:
            current = self.ns.get(var)
            if _is_tensor(current):
                self.guesses[var] = (tuple(current.shape[1:]), current.dtype)
            else:
                self.guesses[var] = (self.default, None)
                self.assumed[var] = self.default
        guess_shape, guess_dtype = self.guesses[var]
        name = self._name(var, delay)
        tensor = Feedback(
            guess_shape, name=name, delay=delay, initial=initial, dtype=dtype or guess_dtype
        )
        self.placeholders[key] = tensor
        self.bindings[name] = var
        return tensor

    def _name(self, var, delay) -> str:
        name = f"{var}_prev" if delay == 1 else f"{var}_prev{delay}"
        while name in self.names:
            name += "_"
        self.names.add(name)
        return name

    def run(self, code, base: dict, tensors: dict, taken: set):
        self.ns = dict(base)
        self.ns.update(tensors)
        self.ns.update(prev=self.prev, cell=self.cell)
        with _cell_names(taken) as uids, _delay_names():
            try:
                exec(code, self.ns)  # noqa: S102 - the user's own cell, like any notebook cell
            finally:
                self.generated = uids.generated()
                for target, count in self.calls.values():
                    target._fbx_calls = count

    def clashes(self, tensors) -> set:
        """If an automatic name of this run is also another operation's (a
        layer from the notebook, or one named on a later line), every name of
        the graph that is not automatic, for the next run to avoid; else
        nothing."""
        counts = _graph_names(tensors)
        if not any(c > 1 and n in self.generated for n, c in counts.items()):
            return set()
        return {n for n, c in counts.items() if c > 1 or n not in self.generated}


def _check_input_shape(var, tensor, shape):
    """prev() of an input takes the input's shape; a different one given is an error."""
    if shape is None:
        return
    given, have = (shape,) if isinstance(shape, int) else tuple(shape), tuple(tensor.shape[1:])
    if given != have:
        raise ValueError(
            f"prev({var}, shape={given}): the given shape {given} does not match the shape "
            f"{have} of input '{var}'; give shape={have}, or leave shape out"
        )


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
    steps: int | None = None,
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
            the cell assigns that holds a layer output (a plain statement
            after it, such as `cfg["units"] = 4`, is just Python).
        stateful: build a stateful model.
        steps: the number of steps of a model without per-step inputs.
        user_ns: the notebook's names, visible to the body where the
            language has no name of its own.
        first_line: the cell line of the body's first line.

    Raises:
        FbModelError: any mistake, as one line naming the cell line.
    """
    names = namespace()
    layer_names = {n for n, obj in names.items() if isinstance(obj, type)}
    declared = _declared(inputs, constants, names)
    source, sites = parse(body, first_line, layer_names, reserved=declared)
    outputs = list(outputs) if outputs else None
    _check_outputs(outputs, source, declared)
    # The language's own names win over the notebook's (prev and cell come per run).
    base = {"__builtins__": __builtins__, **(user_ns or {}), **names}
    run, tensors, outs = _infer(source, sites, base, declared, inputs, constants, outputs)
    return _assemble(run, tensors, inputs, constants, outs, stateful, steps, name)


def _check_outputs(outputs, source, declared):
    """`--output` names a variable the cell assigns (or an input)."""
    if not source.order:
        raise FbModelError(
            "the cell assigns no variable; write one timestep, as in y = Dense(1)(x), "
            "and the last layer output assigned is the output"
        )
    for out in outputs or ():
        if out not in source.assigned and out not in declared:
            raise FbModelError(
                f"--output {out}: the cell assigns no variable '{out}'; "
                f"it assigns {', '.join(dict.fromkeys(source.order))}"
            )


def _infer(source, sites, base, declared, inputs, constants, outputs):
    """Run the cell until every `prev()`'s shape is what its variable turns out
    to be: `(the last _Pass, its input tensors, the output variables)`.

    A `prev()` whose variable is not assigned yet is first given a candidate
    shape (an input's, a constant's, then `(1,)`); each pass corrects the
    guesses that were wrong, and a pass whose automatic layer names clash
    with the others' runs again clear of them.
    """
    candidates = list(dict.fromkeys([tuple(s) for _, s in list(inputs) + list(constants)]))
    candidates.append((1,))
    guesses, wrong, actual = {}, {}, {}
    first_error = None
    candidate = 0
    taken = set(declared) | source.names  # names automatic ones must avoid
    calls: dict = {}  # fbx.cell call counts, as before the build
    passes = _MAX_PASSES + len(candidates)
    while passes > 0:
        passes -= 1
        run = _Pass(sites, dict(guesses), candidates[candidate], declared, calls)
        tensors = {n: keras.Input(shape, name=n) for n, shape in inputs}
        tensors.update({n: keras.Input(shape, name=n) for n, shape in constants})
        try:
            run.run(source.code, base, tensors, taken)
        except Exception as exc:  # the user's code: any error becomes one line
            first_error = first_error or _pass_error(exc, run, source)
            if run.assumed and candidate + 1 < len(candidates):
                candidate += 1
                continue
            raise FbModelError(first_error) from None
        outs = outputs or _last_layer_output(run, source)
        values, actual, wrong = _mismatches(run, source, outs)
        if set(wrong) <= set(run.given):  # nothing left to infer: what was given must fit
            _check_given(run, source, actual)
        if wrong:
            guesses = {**run.guesses, **wrong}
            continue
        avoid = run.clashes([values[v] for v in values])
        if avoid - taken:  # run again, the automatic names clear of the others
            taken |= avoid
            passes += 1
            continue
        return run, tensors, outs
    _check_given(run, source, {v: s for v, s in actual.items() if v in wrong})
    raise FbModelError(
        "could not infer the shapes of "
        + ", ".join(f"prev({v})" for v in wrong)
        + "; give them, as in prev(h3, shape=(8,))"
    )


def _pass_error(exc, run, source) -> str:
    """The one line a pass's error becomes, naming the shapes it assumed."""
    message = _explain(exc, source)
    if run.assumed and not isinstance(exc, (NameError, SyntaxError)):
        assumed = ", ".join(f"prev({v}) shape {s}" for v, s in run.assumed.items())
        message += (
            f" (shapes assumed while inferring: {assumed}; if that is the cause, "
            "give the shape, as in prev(h3, shape=(8,)))"
        )
    return message


def _mismatches(run, source, outs) -> tuple[dict, dict, dict]:
    """`(values, actual, wrong)` of a pass: the layer outputs it needs, the
    (shape, dtype) of each `prev()`'s variable, and those guessed wrong."""
    values = _layer_outputs(run, source, set(run.bindings.values()) | set(outs))
    actual = {var: _spec(values[var]) for var in set(run.bindings.values())}
    wrong = {
        var: spec
        for var, spec in actual.items()
        if tuple(run.guesses[var][0]) != spec[0] or (run.guesses[var][1] or spec[1]) != spec[1]
    }
    return values, actual, wrong


def _declared(inputs, constants, names) -> list:
    """The input and constant names, checked: each once, none hiding the language's."""
    declared = [n for n, _ in list(inputs) + list(constants)]
    hidden = [n for n in declared if n in names or n == "prev"]
    if hidden:
        raise FbModelError(
            f"input '{hidden[0]}' would hide the cell language's own '{hidden[0]}'; "
            "give the input another name"
        )
    flags = [("--input", n, s) for n, s in inputs] + [("--constant", n, s) for n, s in constants]
    for i, (flag, name, shape) in enumerate(flags):
        for other, again, shape2 in flags[i + 1 :]:
            if again != name:
                continue
            first, second = f"{name}:{_dims(shape)}", f"{name}:{_dims(shape2)}"
            if flag == other:
                kind = flag.lstrip("-")
                raise FbModelError(
                    f"{flag} {name} is given twice, as {first} and {second}; give each "
                    f"{kind} its own name"
                )
            raise FbModelError(
                f"'{name}' is given both as {flag} {first} and as {other} {second}; an input "
                "and a constant need different names"
            )
    return declared


def _dims(shape) -> str:
    return ",".join(str(d) for d in shape)


def _last_layer_output(run, source) -> list:
    """The default output: the last variable assigned that holds a layer output."""
    for var in reversed(source.order):
        if _is_tensor(run.ns.get(var)):
            return [var]
    var = source.order[-1]
    value = run.ns.get(var)
    raise FbModelError(
        f"line {source.assigned[var]}: no variable the cell assigns is the output of a layer "
        f"('{var}' is {type(value).__name__} {value!r:.40}); write one timestep, as in "
        "y = Dense(1)(x), and the last layer output assigned is the output"
    )


def _layer_outputs(run, source, variables) -> dict:
    """{var: its tensor} after a run; a value that is no layer output is an error."""
    values = {var: run.ns.get(var) for var in variables}
    for var, value in values.items():
        if not _is_tensor(value):
            line = source.assigned.get(var, "?")
            raise FbModelError(
                f"line {line}: '{var}' is {type(value).__name__} {value!r:.40}, not the "
                "output of a layer; prev() and outputs take layer outputs"
            )
    return values


def _check_given(run, source, actual: dict):
    """A shape or dtype given to prev() that the variable does not have is an error."""
    for var, (index, shape, dtype) in run.given.items():
        if var not in actual:
            continue
        have, have_dtype = actual[var]
        where = f"line {source.site_lines[index]}: prev({var}, "
        found = f"that '{var}' has (line {source.assigned[var]})"
        if shape is not None and tuple(shape) != tuple(have):
            raise FbModelError(
                f"{where}shape={tuple(shape)}): the given shape {tuple(shape)} does not match "
                f"the shape {tuple(have)} {found}; give shape={tuple(have)}, or leave shape "
                "out to have it inferred"
            )
        if dtype is not None and keras.backend.standardize_dtype(dtype) != have_dtype:
            raise FbModelError(
                f"{where}dtype={dtype!r}): the given dtype {dtype} does not match the dtype "
                f"{have_dtype} {found}; give dtype={have_dtype!r}, or leave dtype out to "
                "have it inferred"
            )


def _assemble(run, tensors, inputs, constants, outputs, stateful, steps, name) -> FeedbackModel:
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
            steps=steps,
            name=name,
        )
    except Exception as exc:  # graph validation: the engine's message, on one line
        raise FbModelError(one_line(exc)) from None
