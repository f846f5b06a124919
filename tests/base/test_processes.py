"""Process groups against real subprocesses: spawn, stop with a grace, /proc, start markers.

Waits are on events (a line the child prints once it is ready, a process exit); timing is
only ever checked from below (the grace was given) or against bounds of whole seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
from support.processes import gone

from workspace_adapter.base.processes import (
    ProcessGroup,
    children,
    process_alive,
    process_marker,
    read_stat,
    spawn,
    spawn_async,
    stop_group,
    stop_group_async,
)

# Prints "ready" once SIGTERM is ignored, then sleeps.
IGNORES_TERM = textwrap.dedent(
    """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(100)
    """
)
# Starts IGNORES_TERM as a child (same group), prints its pid once it is ready, sleeps; the
# leader itself dies on SIGTERM.
LEADER_OF_A_STUBBORN_CHILD = textwrap.dedent(
    f"""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", {IGNORES_TERM!r}], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\\n"
    print(f"grandchild {{child.pid}}", flush=True)
    time.sleep(100)
    """
)
SLEEPS = "import time; print('ready', flush=True); time.sleep(100)"


def python(script: str) -> tuple[subprocess.Popen[bytes], ProcessGroup]:
    return spawn([sys.executable, "-c", script], stdout=subprocess.PIPE)


def line_of(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().decode().strip()


def test_a_spawned_child_leads_its_own_session_and_group() -> None:
    proc, group = python(SLEEPS)
    try:
        assert line_of(proc) == "ready"
        stat = read_stat(proc.pid)
        assert stat is not None and stat.running
        assert (stat.ppid, stat.pgid) == (os.getpid(), proc.pid)
        assert os.getsid(proc.pid) == proc.pid
        assert (group.pid, group.marker) == (proc.pid, process_marker(proc.pid))
        assert group.marker
        assert proc.pid in [child.pid for child in children()]
        assert group.is_ours() and group.alive()
    finally:
        stop_group(proc, group, 5.0)


def test_a_child_ignoring_sigterm_is_killed_after_the_grace() -> None:
    proc, group = python(IGNORES_TERM)
    assert line_of(proc) == "ready"
    started = time.monotonic()
    code = stop_group(proc, group, 1.0)
    assert time.monotonic() - started >= 1.0
    assert code == proc.returncode == -signal.SIGKILL
    assert gone(proc.pid) and not group.alive()


def test_a_grandchild_in_the_group_gets_its_grace_and_goes_too() -> None:
    proc, group = python(LEADER_OF_A_STUBBORN_CHILD)
    grandchild = int(line_of(proc).split()[1])
    stat = read_stat(grandchild)
    assert stat is not None and (stat.ppid, stat.pgid) == (proc.pid, proc.pid)
    started = time.monotonic()
    code = stop_group(proc, group, 1.0)
    # The leader went on SIGTERM; the grace was still waited out for its child.
    assert code == -signal.SIGTERM
    assert time.monotonic() - started >= 1.0
    assert gone(grandchild) and not group.alive()


def test_a_child_that_exits_on_its_own_is_only_reaped() -> None:
    proc, group = python("raise SystemExit(3)")
    assert proc.wait() == 3
    started = time.monotonic()
    assert stop_group(proc, group, 60.0) == 3
    assert time.monotonic() - started < 30
    assert not group.alive() and not group.signal(signal.SIGTERM)


def test_what_an_exited_leader_left_in_its_group_gets_sigterm() -> None:
    proc, group = spawn(["sh", "-c", "sleep 100 & echo $!"], stdout=subprocess.PIPE)
    leftover = int(line_of(proc))
    assert proc.wait() == 0
    # The leader is reaped; its group lives on in the leftover, so the id is still ours.
    assert read_stat(proc.pid) is None and group.is_ours() and group.alive()
    started = time.monotonic()
    stop_group(proc, group, 60.0)
    assert time.monotonic() - started < 30  # it went on SIGTERM, not after the grace
    assert gone(leftover)


def test_a_group_whose_leader_has_another_marker_is_never_signalled() -> None:
    proc, group = python(SLEEPS)
    try:
        assert line_of(proc) == "ready"
        # What a reused pid looks like: a process under the id, started at another time.
        reused = ProcessGroup(proc.pid, "another-boot:1")
        assert not reused.is_ours() and not reused.alive()
        assert reused.signal(signal.SIGKILL) is False
        assert proc.poll() is None and process_alive(proc.pid, group.marker)
    finally:
        stop_group(proc, group, 5.0)


def test_process_alive_tells_zombies_and_reused_pids_apart() -> None:
    assert process_alive(os.getpid(), process_marker(os.getpid()))
    assert not process_alive(os.getpid(), "another-boot:1")
    assert not process_alive(None, None)
    proc, group = python("pass")
    # Wait for the exit without reaping: the child stays a zombie under its pid.
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    stat = read_stat(proc.pid)
    assert stat is not None and stat.state == "Z" and not stat.running
    assert not process_alive(proc.pid, group.marker) and not group.alive()
    assert stop_group(proc, group, 5.0) == 0
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert read_stat(pid_max + 1) is None and process_marker(pid_max + 1) == ""


def test_signal_child_groups_signals_the_groups_of_session_leading_children() -> None:
    script = textwrap.dedent(
        f"""
        import signal, subprocess, sys
        from workspace_adapter.base.processes import signal_child_groups, spawn
        leader, _ = spawn([sys.executable, "-c", {SLEEPS!r}], stdout=subprocess.PIPE)
        assert leader.stdout.readline() == b"ready\\n"
        # In this process's own group: not a command task, so left alone.
        inner = subprocess.Popen(["sleep", "100"])
        groups = signal_child_groups(signal.SIGTERM)
        print(groups == [leader.pid], leader.wait() == -signal.SIGTERM, inner.poll() is None)
        inner.kill()
        inner.wait()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.split() == ["True", "True", "True"], done.stderr


async def test_the_async_stop_finishes_even_when_its_caller_is_cancelled() -> None:
    process, group = await spawn_async([sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE)
    assert process.stdout is not None
    received = b""
    while not received.endswith(b"\n"):
        received += await process.stdout.receive()
    assert received == b"ready\n"
    code: int | None = None
    started = time.monotonic()
    with anyio.CancelScope() as scope:
        scope.cancel()
        code = await stop_group_async(process, group, 1.0)
    assert code == -signal.SIGKILL
    assert time.monotonic() - started >= 1.0
    assert gone(process.pid) and not group.alive()
    await process.aclose()
