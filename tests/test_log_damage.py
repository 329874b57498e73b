"""A log that survives damage (issue 10): after bit flips, a record torn in the middle, a
deleted record or a full flash, the records after the damage stay readable and exportable,
the damage is reported in HELLO (`logdmg`), sequence numbers never repeat, and
recovery never uses a record from before the damage in place of a later one
(tests/fw/logdmg.py; `make bench` runs 1,000 trials: rel.log_damage / rel.log_unrecovered)."""
import json
import subprocess
import sys

import pytest

from conftest import FIRMWARE, ROOT

sys.path.insert(0, str(FIRMWARE))

from pumpcore.eventlog import open_log  # noqa: E402
from pumpcore.store import MemStore  # noqa: E402


def _log(n):
    st = MemStore()
    log, _, _ = open_log(st)
    for i in range(n):
        log.add(1000 + i, b"CMD", b"%d HB" % i)
        log.commit()
    return st


@pytest.mark.req("REQ-LOG-07")
def test_records_after_a_bit_flip_stay_readable_and_seq_never_repeats():
    """One damaged record stopped verification there: later records were no longer
    exported and sequence numbers restarted below them."""
    st = _log(30)
    name = [n for n in st.names() if n.startswith("log")][0]
    lines = bytes(st.files[name]).split(b"\n")
    off = sum(len(x) + 1 for x in lines[:10]) + 5      # a byte of record 11
    st.files[name][off] ^= 0x04
    log, v, _ = open_log(st)
    assert not v.ok and v.damaged >= 1 and v.last_damaged in (11, 12)
    seqs = [r.seq for r in log.records()]
    assert seqs[-1] == 31 and 30 in seqs and 20 in seqs, seqs
    assert log.seq == 31
    log.add(5000, b"BOOT", b"n=2")
    log.commit()
    log2, v2, _ = open_log(st)
    s2 = [r.seq for r in log2.records()]
    assert s2[-1] > 31 and s2 == sorted(set(s2)), s2         # after a damaged tail: a new segment


def _sweep(trials, seed):
    p = subprocess.run([sys.executable, str(ROOT / "tests" / "fw" / "logdmg.py"), str(trials), str(seed)],
                       cwd=str(FIRMWARE), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.req("REQ-LOG-07", "REQ-LOG-08", "REQ-LOG-09")
def test_log_damage_sweep():
    r = _sweep(120, 5)
    assert r["unrecovered"] == 0, r["failures"]
    assert set(r["kinds"]) == {"flip", "seqflip", "tear", "delete", "full", "rekey", "heartbeat"}
    assert r["detected"] >= 60, r


def _raise_seq(st, seq, bit):
    """Flip one bit of the leading digit of record `seq`'s sequence number (upwards)."""
    for name in sorted(n for n in st.names() if n.startswith("log")):
        f = st.files[name]
        pos = 0
        for line in bytes(f).split(b"\n"):
            if line.startswith(b"%d " % seq):
                f[pos] ^= bit
                return
            pos += len(line) + 1
    raise AssertionError("no record %d" % seq)


@pytest.mark.req("REQ-LOG-07")
@pytest.mark.parametrize("seq, bit", [(15, 0x04), (16, 0x08), (31, 0x04), (2, 0x04), (43, 0x01)])
def test_a_bit_flip_that_raises_a_seq_does_not_hide_later_records(seq, bit):
    """A bit flip that raised the sequence number of a record near a segment's end
    (15 -> 55, 16 -> 96, 31 -> 71; 2 -> 6, a seq a later record has; 43 -> 53, the last
    record) made `scan` take the raised number as the last seq used: every later record, in
    that segment and the next ones, then failed the seq check and was dropped as damaged,
    and `LOG` export (`page`) stopped there."""
    st = MemStore()
    log, _, _ = open_log(st, seg_records=16)
    for i in range(40):
        log.add(1000 + i, b"CMD", b"%d HB" % i)
        log.commit()
    top = log.seq
    before = [r.seq for r in log.records()]
    _raise_seq(st, seq, bit)
    log, v, _ = open_log(st, seg_records=16)
    assert not v.ok and v.damaged == 1 and v.last_damaged == seq, (v.damaged, v.last_damaged)
    got = [r.seq for r in log.records()]
    assert got == [s for s in before if s != seq], got      # only the damaged one is lost
    assert [r.seq for r in log.page(0, 1000)] == got         # LOG exports the same records
    assert [r.seq for r in log.page(seq + 1, 1000)] == [s for s in got if s > seq]
    assert log.seq >= top                                   # never a seq used twice
    log.add(5000, b"BOOT", b"n=2")
    log.commit()
    log2, v2, _ = open_log(st, seg_records=16)
    s2 = [r.seq for r in log2.records()]
    assert s2 == sorted(set(s2)) and s2[-1] > top and v2.damaged == 1, s2
