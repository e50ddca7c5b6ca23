"""
Stopping the processes the tests start, finding them through /proc
(Linux), and reading what they write.
"""

import os
import signal
import subprocess
from pathlib import Path


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """
    Send C{sig} to C{process} unless it has exited, wait for it, and kill
    it if it has not exited in C{timeout} seconds; its exit code.
    """
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def comm(pid: int) -> str:
    """
    The command name of C{pid}, or C{""} if it is gone.
    """
    try:
        with open("/proc/%d/comm" % (pid,)) as f:
            return f.read().strip()
    except OSError:
        return ""


def _parents() -> dict[int, int]:
    """
    Every process's parent: pid -> parent pid.
    """
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % (entry,)) as f:
                data = f.read()
        except OSError:
            continue
        parents[int(entry)] = int(data[data.rindex(")") + 2 :].split()[1])
    return parents


def tree(pid: int) -> list[int]:
    """
    C{pid} and its descendants, parents first.
    """
    parents = _parents()
    found = [pid]
    for parent in found:
        found.extend(child for child, its in parents.items() if its == parent)
    return found


def descendant(pid: int, name: str) -> int | None:
    """
    C{pid}, or the first of its descendants, whose command name starts with
    C{name}; C{None} if none does.
    """
    return next((each for each in tree(pid) if comm(each).startswith(name)), None)


def text_from(path: Path, since: int = 0) -> str:
    """
    The text of the file C{path} (a server's log) from byte C{since} on;
    C{""} if there is no such file.
    """
    try:
        with open(path, "rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def file_size(path: Path) -> int:
    """
    The size of the file C{path} in bytes, 0 if there is none: where what
    is written next starts.
    """
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
