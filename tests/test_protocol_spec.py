"""docs/protocol.md is normative: its examples are checked against the host codec and the
firmware (the session is replayed against a real controller, byte for byte)."""
import re
import sys
from pathlib import Path

from conftest import ROOT
from host import codec

sys.path.insert(0, str(ROOT / "tests" / "fw"))
from fwkit import Rig  # noqa: E402

SPEC = (ROOT / "docs" / "protocol.md").read_text()
BLOCKS = re.findall(r"```\n(.*?)```", SPEC, re.S)
EXAMPLES = [ln for ln in BLOCKS[-2].splitlines() if ln.strip()] if len(BLOCKS) >= 2 else []
SESSION = [ln for ln in BLOCKS[-1].splitlines() if ln.startswith(("> ", "< "))]


def test_spec_examples_have_valid_crcs_and_parse_in_firmware():
    assert len(EXAMPLES) >= 10
    r = Rig()
    for line in EXAMPLES:
        body, _, crc = line.partition("*")
        if crc:
            assert int(crc, 16) == codec.crc16(body.encode()), line
        tx = r.send(line.encode(), crc=False)
        assert b" ER CRC" not in tx and b" ER SYNTAX" not in tx and b" ER UNKNOWN" not in tx, (line, tx)


def test_spec_session_replays_byte_for_byte():
    assert SESSION
    r = Rig()
    expected: list[bytes] = []
    got: list[bytes] = []
    for line in SESSION:
        text = line[2:].split("  (")[0].rstrip()
        if line.startswith("> "):
            tx = r.send(text.encode(), crc=False)
            got += [ln for ln in tx.split(b"\n") if ln]
        else:
            expected.append(text.encode())
    assert got == expected
