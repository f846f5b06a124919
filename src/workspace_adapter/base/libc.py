"""The C library's functions Python does not wrap, from one handle loaded on first use.

``fallocate`` punches out step output a reader has passed (``flows/stepfiles.py``);
``malloc_trim`` hands the backend's freed heap back after a burst (``backend/transport.py``).
ctypes is imported on the first call, not with this module: it costs milliseconds that a
quick command never needs.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ctypes


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The process's C library, keeping ``errno`` for ``ctypes.get_errno``; None when it
    cannot be loaded."""
    import ctypes
    import ctypes.util

    try:
        # find_library may find nothing (no ldconfig): None loads the process's own symbols,
        # which include the C library it runs on.
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None


def libc_function(name: str) -> Any | None:
    """The C library's function ``name``, the same object on every call (so argument types
    set on it stay), or None where there is no such function (``malloc_trim`` is glibc's)."""
    library = libc()
    if library is None:
        return None
    try:
        return getattr(library, name)
    except AttributeError:
        return None
