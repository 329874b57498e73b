"""docs/host.md is runnable: its Python blocks run in order as one script against a simulated
pump, and every CLI command its shell block uses exists."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT
from host import cli

DOC = (ROOT / "docs" / "host.md").read_text()
PY = re.findall(r"```python\n(.*?)```", DOC, re.S)
SH = re.findall(r"```sh\n(.*?)```", DOC, re.S)


@pytest.mark.e2e
@pytest.mark.micropython
def test_python_blocks_run():
    assert len(PY) >= 4
    p = subprocess.run([sys.executable, "-c", "\n".join(PY)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    assert "pump on /dev/pts/" in out and "refused locally: STATE" in out
    assert "pump says: SOFT" in out and "VTBI_DONE" in out and "after reconnect: COMPLETE" in out


def test_cli_lines_parse():
    lines = [ln.split("#")[0].strip() for ln in SH[0].splitlines()]
    cmds = [shlex.split(ln.rstrip("&"))[1:] for ln in lines if ln.startswith(".venv/bin/infusekit")]
    assert len(cmds) >= 10
    from host.clikit import parse
    for argv in cmds:
        parse(cli.cli, ["--port", "x", *argv])               # click.UsageError on a bad line
    listed = re.search(r"lists every command:\n`([^`]*)`", DOC).group(1).split()
    assert set(listed) == set(cli.cli.commands)
