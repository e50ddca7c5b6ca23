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


def children(pid: int) -> list[int]:
    """
    The pids whose parent is C{pid}.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % (entry,)) as f:
                data = f.read()
        except OSError:
            continue
        if int(data[data.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry))
    return found


def descendant(pid: int, name: str) -> int | None:
    """
    C{pid}, or the first of its descendants, whose command name starts with
    C{name}; C{None} if none does.
    """
    todo = [pid]
    while todo:
        pid = todo.pop(0)
        if comm(pid).startswith(name):
            return pid
        todo.extend(children(pid))
    return None
