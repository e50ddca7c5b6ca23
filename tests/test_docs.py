"""
The documentation names what exists: the README's two commands, every
file the docs point to, every page of docs/ in the README's map; and CI
runs the README's test command.
"""

import os
import re

import pytest

from harness.proxy import ROOT

DOCS = sorted((ROOT / "docs").glob("*.rst"))
README = (ROOT / "README.rst").read_text()

#: A path of the repository written in a document: under one of its
#: folders, or one of its top-level files.
PATH = re.compile(
    r"(?<![\w/.-])((?:scripts|docs|contrib|examples|benchmarks|tests|client_proxy|\.ci)"
    r"/[\w./-]*\w|LICENSE|proxy\.tac)\b"
)


def test_the_two_commands():
    """The README's "Try it": scripts/demo and scripts/test, both runnable."""
    tryIt = README.split("\nTry it\n------\n", 1)[1].split("\n\n", 2)[1]
    assert re.findall(r"^    (scripts/\w+)", tryIt, re.MULTILINE) == ["scripts/demo", "scripts/test"]
    for command in ("scripts/demo", "scripts/test"):
        assert os.access(ROOT / command, os.X_OK), command


@pytest.mark.parametrize(
    "document",
    [ROOT / "README.rst", *DOCS, *sorted((ROOT / "contrib").iterdir())],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_every_path_named_exists(document):
    named = set(PATH.findall(document.read_text()))
    assert named, document
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert missing == []


def test_the_map_names_every_page():
    assert DOCS
    for page in DOCS:
        assert "``docs/%s``" % (page.name,) in README, page.name


def test_ci_runs_the_readmes_test_command():
    commands = [
        line.split()[0]
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.startswith("scripts/")
    ]
    assert commands == ["scripts/test", "scripts/test-lowest"]
