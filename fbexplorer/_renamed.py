"""Keywords that were renamed: the old name still works, with a DeprecationWarning.

`delay=` is the one keyword for a delay; `fbx.delayed(tensor, steps=2)` and
the `%%fbmodel` language's `prev(var, steps=2)` spelled it `steps=`, which
elsewhere means a run's length. The messages are shared by both.
"""

from __future__ import annotations

import functools
import inspect
import warnings

from fbexplorer._checks import short_repr

__all__ = ["given_twice_message", "renamed_keyword", "renamed_message"]


def renamed_message(label: str, old: str, new: str, shown: str) -> str:
    """The warning for a keyword given by its old name (`shown`: its value as text)."""
    return (
        f"{label}: the keyword `{old}` is deprecated and will be removed; use `{new}` "
        f"instead (the same value). Received: {old}={shown}"
    )


def given_twice_message(label: str, old: str, new: str, new_shown: str, old_shown: str) -> str:
    """The error for a keyword given by both its names (the values as text)."""
    return (
        f"{label}: `{new}` is given twice, as `{new}` and by its deprecated name `{old}`; "
        f"pass `{new}` only. Received: {new}={new_shown}, {old}={old_shown}"
    )


def renamed_keyword(old: str, new: str, label: str):
    """A decorator: `fn(..., old=v)` calls `fn(..., new=v)` with a
    DeprecationWarning (pointing at the caller's line); giving both names is a
    ValueError. The function's signature shows the new name only."""

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                value = kwargs.pop(old)
                given = signature.bind_partial(*args, **kwargs).arguments
                if new in given:
                    shown = short_repr(given[new]), short_repr(value)
                    raise ValueError(given_twice_message(label, old, new, *shown))
                message = renamed_message(label, old, new, short_repr(value))
                warnings.warn(message, DeprecationWarning, stacklevel=2)
                kwargs[new] = value
            return fn(*args, **kwargs)

        return wrapper

    return decorate
