"""Names as text: each place a name goes (DOT, a page's JSON, plotly) gets it escaped here.

Names come from users and from `.keras` files, so none is trusted: a layer, input,
feedback or model name may hold quotes, backslashes, `<...>`, `</script>` or a newline.

- DOT: `dot_id` makes a node id of a name (its characters other than letters, digits and
  `_ . - /` written as `~XX`, UTF-8), so the id is plain and one name gives one id;
  `dot_text` and `dot_tooltip` make a label or tooltip show the name as it is (never an
  HTML-like label, no DOT escape such as `\\N`, no entity); `carrier_id` and
  `carried_names` name a delayed edge's SVG element after the values it carries.
- A page: `json_for_html` is JSON to embed in `<script>`, with no `<`, `>`, `&`, U+2028
  or U+2029 in it.
- plotly: `plotly_text` is a name as text in plotly's titles, legend and hover text, which
  plotly reads as a small HTML (`<a href=...>` becomes a link there).
"""

from __future__ import annotations

import html
import json
import re

import graphviz

__all__ = [
    "carried_names",
    "carrier_id",
    "dot_id",
    "dot_text",
    "dot_tooltip",
    "json_for_html",
    "name_of_id",
    "plotly_text",
]

_PLAIN = "_.-/"
_CARRIER = re.compile(r"fbx-delay-\d+:(.*)")
_ESCAPED = re.compile(r"(?:~[0-9A-F]{2})+")


def dot_id(name: str) -> str:
    """A DOT node id of `name`: its letters, digits and `_ . - /` kept, the rest `~XX`.

    Different names give different ids (`~` itself is written `~7E`), and an id holds no
    quote, backslash, `:` (a port in an edge), `@` (draw.py's step separator), `<`, `&`,
    `%` (dot's prefix of anonymous names) or space, so it reads the same in DOT, in the
    SVG's titles and in a CSS selector.
    """
    return "".join(
        ch if ch.isalnum() or ch in _PLAIN else "".join(f"~{b:02X}" for b in ch.encode())
        for ch in name
    )


def name_of_id(node_id: str) -> str:
    """The name `dot_id` made `node_id` of."""
    return _ESCAPED.sub(lambda m: bytes.fromhex(m.group().replace("~", "")).decode(), node_id)


def _escaped(text: str, backslashes: int) -> str:
    # `&amp;` reads as `&` in every label and tooltip (dot replaces entities, then writes
    # `&` as `&amp;` in the SVG), so `&nbsp;` in a name stays those six characters.
    text = str(text).replace("\\", "\\" * backslashes).replace("&", "&amp;")
    return graphviz.nohtml(text)  # never an HTML-like label, however it begins and ends


def dot_text(*lines) -> str:
    """A DOT label showing `lines` as they are, one per line (DOT's escString `\\n`)."""
    return graphviz.nohtml("\\n".join(_escaped(line, 2) for line in lines))


def dot_tooltip(text: str) -> str:
    """A DOT tooltip showing `text` as it is.

    dot reads a tooltip's escapes twice where it writes SVG (`\\\\` becomes `\\`, then
    `\\N` the node's name), so a backslash is written four times.
    """
    return _escaped(text, 4)


def carrier_id(index: int, names) -> str:
    """The SVG id of a delayed edge that carries `names`; `index` makes it unique."""
    return f"fbx-delay-{index}:" + ",".join(dot_id(n) for n in names)


def carried_names(element_id: str | None) -> list[str] | None:
    """The names a delayed edge carries, read back from its id (None: not such an edge)."""
    m = _CARRIER.fullmatch(element_id or "")
    if m is None:
        return None
    return [name_of_id(n) for n in m.group(1).split(",")]


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


def plotly_text(name) -> str:
    """A name as text in plotly's titles, legend names and hover text (its mini-HTML).

    `<`, `>` and `&` become entities, which plotly shows as the characters; quotes stay,
    as plotly has no `&quot;`.
    """
    return html.escape(str(name), quote=False)
