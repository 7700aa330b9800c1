"""What `agentlog up` decides about a death: the restart backoff grows, and starts over once
the thing had run healthy for a while; a zombie is dead; a dead postmaster's locks go."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from agentlog.supervise import HEALTHY_S, Restarts, clear_locks, pid_alive, postmaster_pid


def test_the_backoff_grows_while_deaths_come_fast() -> None:
    restarts = Restarts()
    restarts.started(1000.0)
    delays = []
    for k in range(8):
        now = 1001.0 + k
        delays.append(restarts.died(now))
        assert not restarts.due(now) and restarts.due(now + delays[-1])
        restarts.started(now + delays[-1])
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_the_backoff_starts_over_after_a_healthy_interval() -> None:
    restarts = Restarts()
    restarts.started(0.0)
    for k in range(5):
        restarts.died(1.0 + k)
        restarts.started(1.0 + k)
    assert restarts.count == 5
    assert restarts.died(5.0 + HEALTHY_S) == 0.5 and restarts.count == 1


def test_a_zombie_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while pid_alive(child.pid):  # unreaped: a zombie, which kill(pid, 0) would call alive
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(child.pid, 0)
    child.wait()
    assert pid_alive(os.getpid())


def test_a_dead_postmasters_locks_are_cleared(tmp_path: Path) -> None:
    dead = 2**22 + 7  # above pid_max's default: nobody has it
    lines = [str(dead), str(tmp_path), "1700000000", "5432", str(tmp_path), "", "1 2", "ready"]
    (tmp_path / "postmaster.pid").write_text("\n".join(lines) + "\n")
    (tmp_path / ".s.PGSQL.5432.lock").write_text(f"{dead}\n")
    assert postmaster_pid(tmp_path) == dead and not pid_alive(dead)
    clear_locks(tmp_path)
    assert postmaster_pid(tmp_path) is None and not (tmp_path / ".s.PGSQL.5432.lock").exists()
