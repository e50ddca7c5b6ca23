"""
The proxy as users run it: a C{twistd} process of the installed package.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import processes

#: The twistd of the Python running the tests: the virtualenv where
#: scripts/setup installed client-proxy with `pip install .`.
TWISTD = str(Path(sys.executable).parent / "twistd")
ROOT = Path(__file__).resolve().parents[1]


class ProxyProcess:
    """
    A C{twistd -n} process running the proxy, logging to a file.

    @param args: what follows C{twistd -n --pidfile= -l LOG}: C{client-proxy}
        and its options, or C{-y proxy.tac}.
    @param env: variables added to the environment.
    @param workdir: its folder (for the log); by default a new temporary
        one, which L{remove} removes.
    """

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, workdir: Path | None = None
    ) -> None:
        self.args = args
        self.env = dict(os.environ, **(env or {}))
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="client-proxy-"))
        self.logfile = self.workdir / "twistd.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "ProxyProcess":
        self.logfile.write_text("")
        self.process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "-l", str(self.logfile)] + self.args,
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return self

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10.0, count: int = 1) -> None:
        """
        Wait until C{text} appears C{count} times in the log.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        output = self.process.stdout.read().decode() if self.process.poll() is not None else ""
        raise AssertionError(
            "%r did not appear in the proxy's log:\n%s%s" % (text, self.log(), output)
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """
        Stop the process with C{sig} and return its exit code.
        """
        code = processes.stop(self.process, sig, timeout)
        self.process.stdout.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> "ProxyProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def remove(self) -> None:
        """
        Stop the process and remove its folder, log included.
        """
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def client_proxy(prosody, target: str, *options: str, secret: str | None = None) -> ProxyProcess:
    """
    A C{twistd client-proxy} process for the component of C{prosody}, with
    the secret in a file, as the README recommends.
    """
    component, real = next(iter(prosody.components.items()))
    proxy = ProxyProcess([])
    secret_file = proxy.workdir / "secret"
    secret_file.write_text((secret or real) + "\n")
    proxy.args = [
        "client-proxy",
        "--jid", component,
        "--target", target,
        "--secret-file", str(secret_file),
        "--endpoint", "tcp:host=127.0.0.1:port=%d" % (prosody.component_port,),
        *options,
    ]
    return proxy


def run_twistd(args: list[str], env: dict[str, str] | None = None, timeout: float = 20):
    """
    Run twistd to completion (for configuration errors): its exit code and
    everything it printed.
    """
    with tempfile.TemporaryDirectory(prefix="client-proxy-") as workdir:
        done = subprocess.run(
            [TWISTD, "-n", "--pidfile="] + args,
            env=dict(os.environ, **(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=workdir,
        )
    return done.returncode, done.stdout + done.stderr
