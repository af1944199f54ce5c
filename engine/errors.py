"""Error types, and the helpers that make their messages useful to people.

Every message names the function input or graph node, what was expected, what was given, and
the user's source line where the node was created (``file.py:12``).
"""

from __future__ import annotations

import os
import sys

_PACKAGE_DIRS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), name) + os.sep
    for name in ("engine", "frontends", "backends")
)


class KilnError(Exception):
    """Base class of every error Kiln raises on purpose."""


class KilnTypeError(KilnError, TypeError):
    """A value or variable has the wrong dtype, rank or kind."""


class KilnShapeError(KilnError, ValueError):
    """Shapes do not fit together (statically or at call time)."""


class KilnValueError(KilnError, ValueError):
    """An argument has an illegal value."""


class DisconnectedInputError(KilnError, ValueError):
    """grad() was asked for a variable the cost does not depend on."""


class GuardError(KilnError, FloatingPointError):
    """mode="guard" found NaN/Inf (or a huge value) in a kernel's output."""


def user_site(skip_package_frames: bool = True) -> str:
    """The ``file:line`` of the innermost frame outside Kiln's own packages."""
    frame = sys._getframe(1)
    fallback = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if fallback is None:
            fallback = f"{filename}:{frame.f_lineno}"
        if not skip_package_frames or not os.path.abspath(filename).startswith(_PACKAGE_DIRS):
            return f"{_short_path(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return fallback or "<unknown>"


def with_site(error: BaseException, site: str, label: str = "at") -> BaseException:
    """Append ``(label file:line)`` to ``error``'s message unless it already names that line, so
    the user sees where the failing call or expression is in their code. Mutates and returns it."""
    message = str(error)
    if site not in message:
        error.args = (f"{message} ({label} {site})",)
    return error


def _short_path(filename: str) -> str:
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if relative.startswith(".." + os.sep + "..") else relative


def describe_node(node: object) -> str:
    """'Elemwise{add} created at model.py:12' for an Apply (or a Variable's owner)."""
    owner = getattr(node, "owner", None)
    if owner is not None and getattr(node, "op", None) is None:
        node = owner
    site = getattr(node, "site", None)
    text = str(getattr(node, "op", node))
    return f"{text} (created at {site})" if site else text
