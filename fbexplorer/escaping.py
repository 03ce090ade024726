"""Names as text: each place a name goes (DOT, a page's JSON, plotly) gets it escaped here.

Names come from users and from `.keras` files, so none is trusted: a layer, input,
feedback or model name may hold quotes, backslashes, `<...>`, `</script>` or a newline.

- DOT: `dot_id` makes a node id of a name (its characters other than letters, digits and
  `_ . - /` written as `~XX`, UTF-8; a long one cut short and ended by a hash), so the id
  is plain and one name gives one id; `dot_text` and `dot_tooltip` make a label or
  tooltip show the name as it is (never an HTML-like label, no DOT escape such as `\\N`,
  no entity), but for the characters no SVG can hold, shown as `shown_name` says, and
  cut at `MAX_SHOWN` characters (dot reads no string longer than 16,383); `carrier_id`
  and `carried_names` name a delayed edge's SVG element after the values it carries.
- A page: `json_for_html` is JSON to embed in `<script>`, with no `<`, `>`, `&`, U+2028
  or U+2029 in it (nor, as it is ASCII, a lone surrogate); `html_text` is text for an
  element such as the page's title.
- plotly: `plotly_text` is a name as text in plotly's titles, legend and hover text, which
  plotly reads as a small HTML (`<a href=...>` becomes a link there).
"""

from __future__ import annotations

import hashlib
import html
import json
import re

import graphviz

__all__ = [
    "MAX_ID",
    "MAX_SHOWN",
    "carried_names",
    "carrier_id",
    "carrier_key",
    "dot_id",
    "dot_text",
    "dot_tooltip",
    "html_text",
    "json_for_html",
    "name_of_id",
    "plotly_text",
    "shown_name",
]

# dot (2.43) reads no quoted string or id longer than 16,383 characters, and a name may be
# any length: ids are cut at MAX_ID characters, each line of a label or a tooltip at
# MAX_SHOWN, and a label at 3 * MAX_SHOWN (escaped, `&` is five characters: 15,000 at most).
MAX_ID = 200
MAX_SHOWN = 1000
_MAX_LABEL = 3 * MAX_SHOWN

_PLAIN = "_.-/"
_CARRIER = re.compile(r"fbx-delay-\d+:(.*)")
_ESCAPED = re.compile(r"(?:~[0-9A-F]{2})+")
# What XML 1.0 cannot hold (so neither can an SVG): C0 controls but tab, newline and
# carriage return; lone surrogates; U+FFFE and U+FFFF. dot writes a label's characters
# as they are, and reads a NUL as the end of its input.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def dot_id(name: str) -> str:
    """A DOT node id of `name`: its letters, digits and `_ . - /` kept, the rest `~XX`.

    Different names give different ids (`~` itself is written `~7E`), and an id holds no
    quote, backslash, `:` (a port in an edge), `@` (drawing.py's step separator), `<`, `&`,
    `%` (dot's prefix of anonymous names) or space, so it reads the same in DOT, in the
    SVG's titles and in a CSS selector.
    A name whose id would be longer than `MAX_ID` characters gets the id's start, `~~`
    (which no other id holds) and a hash of the whole name.
    """
    node_id = "".join(
        ch if ch.isalnum() or ch in _PLAIN else "".join(f"~{b:02X}" for b in _utf8(ch))
        for ch in name
    )
    if len(node_id) <= MAX_ID:
        return node_id
    head = re.sub("~[0-9A-F]?$", "", node_id[: MAX_ID - 18])
    return f"{head}~~{hashlib.sha256(_utf8(name)).hexdigest()[:16]}"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate (from a file's JSON)


def name_of_id(node_id: str) -> str:
    """The name `dot_id` made `node_id` of (not of a long name's id, which is cut short)."""
    return _ESCAPED.sub(
        lambda m: bytes.fromhex(m.group().replace("~", "")).decode("utf-8", "surrogatepass"),
        node_id,
    )


def shown_name(name, limit: int = MAX_SHOWN) -> str:
    """`name` as a drawing shows it: each C0 control character as its Control Picture
    (U+2400 + code: NUL as U+2400), a lone surrogate, U+FFFE or U+FFFF as U+FFFD, and
    past `limit` characters cut, ending in "…"."""
    text = _CONTROL.sub(lambda m: chr(0x2400 + ord(m.group())), str(name))
    text = _NOT_XML.sub("\ufffd", text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _escaped(text: str, backslashes: int) -> str:
    # `&amp;` reads as `&` in every label and tooltip (dot replaces entities, then writes
    # `&` as `&amp;` in the SVG), so `&nbsp;` in a name stays those six characters.
    text = str(text).replace("\\", "\\" * backslashes).replace("&", "&amp;")
    return graphviz.nohtml(text)  # never an HTML-like label, however it begins and ends


def dot_text(*lines) -> str:
    """A DOT label showing `lines` as they are (as `shown_name` shows each), one per line
    (DOT's escString `\\n`); lines past `3 * MAX_SHOWN` characters in all are cut."""
    kept, room = [], _MAX_LABEL
    for line in lines:
        line = shown_name(line, min(MAX_SHOWN, room))
        kept.append(line)
        room -= len(line) + 1
        if room <= 0:
            break
    return graphviz.nohtml("\\n".join(_escaped(line, 2) for line in kept))


def dot_tooltip(*names) -> str:
    """A DOT tooltip showing `names` as they are, joined by ", " (each as `shown_name`
    shows it; past `3 * MAX_SHOWN` characters in all, cut).

    dot reads a tooltip's escapes twice where it writes SVG (`\\\\` becomes `\\`, then
    `\\N` the node's name), so a backslash is written four times.
    """
    text = ", ".join(shown_name(n) for n in names)
    return _escaped(shown_name(text, _MAX_LABEL), 4)


def carrier_id(index: int, names) -> str:
    """The SVG id of a delayed edge that carries `names`; `index` makes it unique.

    Each name is there as its `dot_id`, or, where those would take more than
    `3 * MAX_SHOWN` characters (an edge that carries hundreds of values), as its
    `carrier_key`, so that dot still reads the id.
    """
    ids = [dot_id(n) for n in names]
    if sum(len(i) + 1 for i in ids) > _MAX_LABEL:
        ids = [carrier_key(n) for n in names]
    return f"fbx-delay-{index}:" + ",".join(ids)


def carrier_key(name: str) -> str:
    """A name's short key in a long `carrier_id`: `~~` (in no short name's id) and a hash."""
    return "~~" + hashlib.sha256(_utf8(name)).hexdigest()[:8]


def carried_names(element_id: str | None, names) -> list | None:
    """Those of `names` that the delayed edge `element_id` carries, in the edge's order
    (None: no such edge)."""
    m = _CARRIER.fullmatch(element_id or "")
    if m is None:
        return None
    order = {key: k for k, key in enumerate(m.group(1).split(","))}
    found = [(order.get(dot_id(n), order.get(carrier_key(n))), n) for n in names]
    return [n for k, n in sorted((f for f in found if f[0] is not None), key=lambda f: f[0])]


def json_for_html(value) -> str:
    """`value` as JSON that can stand inside a page's `<script>`: `<`, `>`, `&`, U+2028/9 escaped.

    JSON only has these characters inside strings, where `\\u003c` reads the same, so the
    text is JSON still; a browser can then neither end the script (`</script>`) nor enter
    its double-escaped state (`<!--<script>`) on a name.
    """
    text = json.dumps(value)
    for ch in "<>&\u2028\u2029":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


def html_text(text) -> str:
    """`text` as the text of an HTML element (a page's title): `<`, `>`, `&` and quotes
    escaped, a lone surrogate (which UTF-8 cannot write) as U+FFFD."""
    return html.escape(_SURROGATE.sub("\ufffd", str(text)))


def plotly_text(name) -> str:
    """A name as text in plotly's titles, legend names and hover text (its mini-HTML).

    `<`, `>` and `&` become entities, which plotly shows as the characters; quotes stay,
    as plotly has no `&quot;`.
    """
    return html.escape(str(name), quote=False)
