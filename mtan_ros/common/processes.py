"""A child process in its own process group, with its output in a file, stopped politely then for sure.

Why one helper: the demo, the node benchmark and the tests all start ROS programs
that start children of their own; only a process group lets one signal reach them
all, and a child that ignores Ctrl-C must still be gone afterwards (SIGKILL).
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence


class ChildGroup:
    """`command` started in a new session (its own process group), stdout+stderr into `log_path`.

    Without `log_path` the output goes to a temporary file that `stop`/`kill` remove.
    """

    def __init__(self, command: Sequence[str], env: Optional[dict[str, str]] = None,
                 log_path: Optional[os.PathLike | str] = None, cwd: Optional[os.PathLike | str] = None) -> None:
        self.command = list(command)
        self.env = env
        self.cwd = cwd
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path is not None else None
        self.proc: Optional[subprocess.Popen] = None
        self._log: Any = None

    def start(self) -> "ChildGroup":
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="mtan_child_", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> Optional[int]:
        """None while it runs (or before it started)."""
        return None if self.proc is None else self.proc.poll()

    def output(self) -> str:
        if self._log is not None:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the whole group; nothing when it has already gone."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGINT) -> Optional[int]:
        """`sig` (Ctrl-C) to the group, then SIGKILL if it has not ended within `timeout`; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal_group(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._close_log()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL to the group at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
