"""Old public names kept working for one release (0.2), with a DeprecationWarning that names the
new one. See docs/api.md, "Renamed in 0.2"."""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

REMOVED_IN = "0.3"


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that `old` is now `new` (stacklevel 3: the caller of the function that calls this)."""
    warnings.warn(f"{old} is deprecated and will be removed in featvis-fast {REMOVED_IN}; use {new}",
                  DeprecationWarning, stacklevel=stacklevel)


def renamed_keywords(**renames: str) -> Callable:
    """Decorator: accept each old keyword (old="new") as the new one, with a DeprecationWarning.

    Args:
        renames: old keyword name -> new keyword name.

    Returns:
        a decorator; the wrapped function raises TypeError when both names are given.
    """
    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{func.__qualname__}() got both {old}= (deprecated) and {new}=; give {new}=")
                    warn_renamed(f"{func.__qualname__}({old}=...)", f"{new}=")
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)
        return wrapper
    return decorate
