"""The C library's functions, from one handle loaded on first use (``base/libc.py``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workspace_adapter.base.libc import libc, libc_function


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fallocate is Linux's")
def test_a_function_is_the_same_object_each_time_so_its_argument_types_stay() -> None:
    fallocate = libc_function("fallocate")
    assert fallocate is not None
    assert libc_function("fallocate") is fallocate
    assert libc() is libc()


def test_a_function_the_library_lacks_is_none() -> None:
    assert libc_function("no_such_function_in_any_libc") is None


def test_importing_the_module_loads_no_ctypes() -> None:
    code = "import sys, workspace_adapter.base.libc; print('ctypes' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
