"""
Stopping the processes the tests start, and finding them through /proc
(Linux).
"""

import os
import signal
import subprocess


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
