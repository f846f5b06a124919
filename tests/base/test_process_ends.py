"""How a child failed to start or how it ended, in the words every caller shares; the /proc
and pidfd readers that live beside them in ``base/processes``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from workspace_adapter.base.processes import (
    cmdline,
    exit_reason,
    path_with_interpreter,
    rss_kib,
    spawn,
    start_failure,
    stop_group,
    wait_exit_sync,
)
from workspace_adapter.local.taskrun import Sinks, run_command

# Between SIGRTMIN (34) and SIGRTMAX (64) on Linux: a signal number without a name.
UNNAMED_SIGNAL = 40


def test_exit_reasons_name_the_code_or_the_signal() -> None:
    assert exit_reason(3) == "exited with code 3"
    assert exit_reason(-signal.SIGKILL) == "killed by signal SIGKILL"


def test_a_signal_without_a_name_is_given_by_its_number() -> None:
    with pytest.raises(ValueError):
        signal.Signals(UNNAMED_SIGNAL)  # the case: no enum member to take the name of
    assert exit_reason(-UNNAMED_SIGNAL) == f"killed by signal {UNNAMED_SIGNAL}"


def test_a_command_task_killed_by_an_unnamed_signal_is_failed_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, reason, code, _, _ = run_command(
        ["sh", "-c", f"kill -{UNNAMED_SIGNAL} $$"],
        cwd=tmp_path,
        env=os.environ,
        timeout=30,
        sinks=Sinks(sys.stdout, sys.stderr),
        statuses={UNNAMED_SIGNAL: "needs_intervention"},  # maps exit codes, never a signal
    )
    assert (status, reason, code) == (
        "failed",
        f"killed by signal {UNNAMED_SIGNAL}",
        -UNNAMED_SIGNAL,
    )


def test_start_failures_say_what_is_wrong_with_the_program() -> None:
    assert start_failure("ghost", FileNotFoundError("ghost")) == (
        "program not found: ghost (not on PATH)"
    )
    # A path is not looked up on PATH: saying so would send the reader to the wrong place.
    assert start_failure("./ghost", FileNotFoundError("./ghost")) == (
        "program not found: ./ghost (no such file)"
    )
    assert start_failure("./x", PermissionError("./x")) == "program not executable: ./x"
    too_long = OSError(7, "Argument list too long")
    assert start_failure("x", too_long) == "could not start x: Argument list too long"


def test_the_interpreters_folder_comes_first_and_an_empty_path_is_the_default() -> None:
    folder = os.path.dirname(sys.executable)
    assert path_with_interpreter("/a:/b") == os.pathsep.join([folder, "/a:/b"])
    assert path_with_interpreter("/a", "/opt/venv/bin/python") == "/opt/venv/bin:/a"
    # Unset or empty: never a trailing empty entry, which would search the current folder.
    assert path_with_interpreter(None) == os.pathsep.join([folder, os.defpath])
    assert path_with_interpreter("") == os.pathsep.join([folder, os.defpath])


def test_cmdline_is_the_argv_of_a_live_process_and_none_once_it_is_gone(tmp_path: Path) -> None:
    # Popen returns once the program was executed: its command line is already the new one.
    argv = [sys.executable, "-c", "import time; time.sleep(30)", str(tmp_path / "a b")]
    proc, group = spawn(argv)
    try:
        assert cmdline(proc.pid) == argv
    finally:
        stop_group(proc, group, 0)
    assert cmdline(proc.pid) in (None, [])  # reaped (or, unlikely, the pid reused)
    assert cmdline(2**22 + 1) is None  # above the kernel's largest pid


def test_rss_is_this_processes_resident_size() -> None:
    assert 1024 < rss_kib() < 64 * 1024 * 1024


def test_wait_exit_sync_returns_the_exit_code_or_times_out() -> None:
    proc, group = spawn(["sh", "-c", "exit 5"])
    assert wait_exit_sync(proc, 30) == 5
    proc, group = spawn(["sleep", "30"])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            wait_exit_sync(proc, 0.05)
    finally:
        stop_group(proc, group, 0)
