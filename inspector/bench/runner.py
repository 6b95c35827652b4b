"""Running and timing child processes: the small launcher that spawns each measured command and reads its
wall time and its own peak RSS, and the helpers that build and check command lines.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.bench.model import PROJECT_ROOT, BenchError, Timing

_T0 = time.perf_counter()


def _log(message: str) -> None:
    # Progress on stderr (a full run takes minutes); stdout stays the table or the JSON.
    print(f"[bench {time.perf_counter() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


# --- running children -----------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    # Children import this very tree, whatever is installed elsewhere.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    # The command runs in one process here (no SIGBUS supervisor, see inspector/supervise.py): peak
    # RSS is read with wait4, and on this kernel a grandchild's peak does not reach it, so a supervised
    # run would report the idle parent's RSS instead of the work's. The fork itself costs ~1 ms.
    env["STABLE_INSPECT_NO_SUPERVISOR"] = "1"
    return env


def compile_bytecode() -> None:
    """Compile the package once, as any installation does (into its usual ``__pycache__``).

    Without it, an environment with PYTHONDONTWRITEBYTECODE set (this one has it) recompiles every
    module of the package on every run, and each timed command would pay ~0.1 s that no installed tool
    pays. (A PYTHONPYCACHEPREFIX would be worse: it hides the installed libraries' bytecode too.)
    """
    dirs = [str(PROJECT_ROOT / "inspector")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=False, capture_output=True)


# Peak RSS needs care. Linux keeps a process's RSS high-water mark across fork *and* exec: a child
# forked from this process (tens or hundreds of MB after forging a million-entry map) would report at
# least that much whatever it really used. So children are spawned by a small launcher process that
# is started first and stays small (python -S, a few stdlib modules): the floor is then the
# launcher's own ~10 MB, which only shows for tiny non-Python children (cmp, cat). The launcher also
# takes the wall time, right around posix_spawn and wait4, without this process's IPC in it.
LAUNCHER = r"""
import json, os, sys, time
for line in sys.stdin:
    req = json.loads(line)
    out = os.open(req["stdout"] or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    acts = [(os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)]
    t = time.perf_counter()
    try:
        pid = os.posix_spawnp(req["cmd"][0], req["cmd"], os.environ, file_actions=acts)
    except OSError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        continue
    finally:
        os.close(out)
        os.close(err)
    print(json.dumps({"pid": pid}), flush=True)
    _pid, status, usage = os.wait4(pid, 0)
    dt = time.perf_counter() - t
    print(json.dumps({"spawn": t, "wall": dt, "rss_kb": usage.ru_maxrss, "rc": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Launcher:
    """The long-lived child that spawns and times every measured process (see LAUNCHER)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-c", LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        self.lock = threading.Lock()

    def run(self, cmd: Sequence[str], stdout: str, stderr: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            self.proc.stdin.write(json.dumps({"cmd": list(cmd), "stdout": stdout, "stderr": stderr}) + "\n")
            self.proc.stdin.flush()
            first = json.loads(self.proc.stdout.readline() or "{}")
            if "pid" not in first:
                raise BenchError(f"cannot start {cmd[0]}: {first.get('error', 'launcher died')}")
            # A hung child must not hang the benchmark: kill it after the timeout.
            killer = threading.Timer(timeout, _kill, (first["pid"],))
            killer.start()
            try:
                done = json.loads(self.proc.stdout.readline() or "{}")
            finally:
                killer.cancel()
        if "rc" not in done:
            raise BenchError(f"the launcher died while running {cmd[0]}")
        return done

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except OSError:
        pass


_launcher: Launcher | None = None


def launcher() -> Launcher:
    global _launcher
    if _launcher is None:
        _launcher = Launcher()
    return _launcher


def close_launcher() -> None:
    global _launcher
    if _launcher is not None:
        _launcher.close()
        _launcher = None


@dataclass
class ChildRun:
    spawn: float  # perf_counter when it was spawned (system-wide monotonic clock on Linux)
    wall: float
    rss_kb: int  # its own peak RSS
    rc: int
    stderr: str  # the tail, for error messages


def run_child(cmd: Sequence[str], *, stdout: Path | None = None, timeout: float = 600.0) -> ChildRun:
    """Run one process through the launcher; stdout goes to ``stdout`` or /dev/null."""
    with tempfile.NamedTemporaryFile(prefix="bench-err-") as err:
        done = launcher().run(cmd, str(stdout) if stdout else "", err.name, timeout)
        tail = Path(err.name).read_bytes()[-2000:].decode("utf-8", "replace").strip()
    return ChildRun(done["spawn"], done["wall"], int(done["rss_kb"]), int(done["rc"]), tail)


def time_command(cmd: Sequence[str], runs: int, *, ok: Sequence[int] = (0,), what: str = "") -> Timing:
    times: list[float] = []
    rss = 0
    rc = 0
    for _ in range(runs):
        r = run_child(cmd)
        rc = r.rc
        if rc not in ok:
            raise BenchError(f"{what or ' '.join(cmd)} exited with {rc}: {r.stderr.splitlines()[-1:] or ''}")
        times.append(r.wall)
        rss = max(rss, r.rss_kb)
    return Timing(times, rss, rc)


def inspector_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "inspector", *args]


def command_available(name: str) -> bool:
    """Whether ``stable-inspect NAME`` has its module yet (commands land while this is developed)."""
    try:
        return importlib.util.find_spec(f"inspector.commands.{name}") is not None
    except ImportError:
        return False
