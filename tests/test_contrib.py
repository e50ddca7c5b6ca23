"""
contrib/client-proxy.service: a unit systemd accepts, which stops
restarting a proxy whose configuration is broken.
"""

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.proxy import ROOT, run_twistd

UNIT = ROOT / "contrib" / "client-proxy.service"


def unit():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def test_systemd_accepts_the_unit(tmp_path):
    """systemd-analyze finds nothing wrong, given a twistd that exists."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    twistd = Path(sys.executable).parent / "twistd"
    copy = tmp_path / "client-proxy.service"
    copy.write_text(UNIT.read_text().replace("/opt/client-proxy/bin/twistd", str(twistd)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_a_broken_configuration_is_not_restarted():
    """
    A configuration error exits with the status the unit does not restart
    on, and any other failure is restarted a few times only.
    """
    code, output = run_twistd(["client-proxy", "--timeout", "-1"])
    assert code == 1 and output.startswith("client-proxy: "), output
    service = unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == str(code)
    assert int(unit()["Unit"]["StartLimitBurst"]) <= 10
