"""
The package as pip installs it: its version, its licence, and an sdist
holding everything the tests need.
"""

import configparser
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile

import pytest

import client_proxy
from harness.proxy import ROOT, run_twistd


def test_one_version():
    """
    Written once, in client_proxy/__init__.py: the installed package's
    metadata and twistd client-proxy --version say the same.
    """
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["version"] == "attr: client_proxy.__version__"
    assert importlib.metadata.version("client-proxy") == client_proxy.__version__
    code, output = run_twistd(["client-proxy", "--version"])
    assert code == 0
    assert output.startswith("client-proxy %s (Twisted " % (client_proxy.__version__,)), output


def test_the_installed_package_prints_the_example_configuration():
    """
    A wheel carries no contrib/: the example configuration file (checked
    in test_config_file) is package data, which twistd client-proxy
    --example-config prints.
    """
    code, output = run_twistd(["client-proxy", "--example-config"])
    assert code == 0, output
    assert output == (ROOT / "client_proxy" / "proxy.toml.example").read_text()


def test_the_licence():
    assert (ROOT / "LICENSE").read_text().startswith(
        "MIT License\n\nCopyright (c) 2026 the client-proxy authors\n"
    )
    assert importlib.metadata.metadata("client-proxy")["License"] == "MIT"


def trackedFiles():
    """The files git tracks in this checkout, or a skip outside of one."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to compare the sdist with")
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return {name for name in listed if (ROOT / name).exists()}


def test_the_sdist_holds_every_file(tmp_path):
    """
    Every file of the repository is in the sdist (MANIFEST.in), so that
    the tests, the demo and the benchmarks run from it (scripts/test-lowest
    runs the tests from one).
    """
    tracked = trackedFiles()
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from setuptools import build_meta; "
            "print(build_meta.build_sdist(sys.argv[1]))",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    name = built.stdout.splitlines()[-1]
    with tarfile.open(tmp_path / name) as sdist:
        top = name.removesuffix(".tar.gz") + "/"
        packed = {member.name.removeprefix(top) for member in sdist.getmembers()}
    assert tracked - packed - {".gitignore"} == set()
