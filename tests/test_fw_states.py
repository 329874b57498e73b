"""The state table is well formed and the firmware engine follows it exactly."""
import sys
from pathlib import Path

if __name__ == "__main__":     # run as a script: regenerate docs/firmware.md's state machine
    sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent.parent)]
    import conftest  # noqa: F401  (puts firmware/ on sys.path)

import pytest
from hypothesis import given, strategies as st

from pumpcore import fsm, states


def test_table_is_plain_data_over_known_states():
    for trig, src, dst in states.TRANSITIONS:
        assert src in states.STATES and dst in states.STATES
        assert isinstance(trig, str)
    assert states.INITIAL in states.STATES
    pairs = [(t, s) for t, s, _ in states.TRANSITIONS]
    assert len(pairs) == len(set(pairs)), "a (trigger, state) pair has two destinations"


def test_every_state_reachable_and_idle_reachable_from_all():
    reach = {states.INITIAL}
    changed = True
    while changed:
        changed = False
        for _, s, d in states.TRANSITIONS:
            if s in reach and d not in reach:
                reach.add(d)
                changed = True
    assert reach == set(states.STATES)
    for s in states.STATES:
        if s != "IDLE":
            assert ("stop", s, "IDLE") in states.TRANSITIONS, f"no way to stop from {s}"


@pytest.mark.req("REQ-MOT-01")
def test_motor_moves_only_in_running_or_kvo():
    # KVO (keep vein open after the VTBI) is the only other state in which the motor runs
    assert states.DELIVERING == ("RUNNING", "KVO")


def test_engine_matches_table_for_every_pair():
    table = {(t, s): d for t, s, d in states.TRANSITIONS}
    for ti, t in enumerate(fsm.TRIGGERS):
        for si, s in enumerate(states.STATES):
            d = fsm.target(ti, si)
            if (t, s) in table:
                assert states.STATES[d] == table[(t, s)]
            else:
                assert d == -1


@given(st.lists(st.integers(0, len(fsm.TRIGGERS) - 1), max_size=60))
def test_random_trigger_sequences_follow_table(seq):
    table = {(t, s): d for t, s, d in states.TRANSITIONS}
    m = fsm.Machine()
    cur = states.INITIAL
    for ti in seq:
        t = fsm.TRIGGERS[ti]
        ok = m.fire(ti)
        assert ok == ((t, cur) in table)
        if ok:
            cur = table[(t, cur)]
        assert states.STATES[m.state] == cur


# ------------------------------------------------------------------ docs/firmware.md
# The transition table and the diagram in docs/firmware.md are generated from
# pumpcore/states.py (never drawn by hand): `python tests/test_fw_states.py` rewrites the
# block between the markers, and the test below fails when it is stale.
_BEGIN = "<!-- BEGIN generated state machine (python tests/test_fw_states.py) -->"
_END = "<!-- END generated state machine -->"


def firmware_doc_block():
    from host.statemachine import mermaid
    trig = []
    for t, _, _ in states.TRANSITIONS:
        if t not in trig:
            trig.append(t)
    dest = {(t, s): d for t, s, d in states.TRANSITIONS}
    lines = [_BEGIN, "",
             "Rows: the state the pump is in; columns: the trigger; a cell is the state it moves to "
             "(– = refused, `ER STATE`). Internal triggers (fired by the pump itself): "
             + ", ".join(f"`{t}`" for t in states.INTERNAL_TRIGGERS) + ". The motor may move only in "
             + " and ".join(states.DELIVERING) + ".", "",
             "| state | " + " | ".join(f"`{t}`" for t in trig) + " |",
             "|---|" + "---|" * len(trig)]
    for s in states.STATES:
        cells = [dest.get((t, s), "–") for t in trig]
        cells = ["=" if c == s else c for c in cells]
        lines.append(f"| **{s}** | " + " | ".join(cells) + " |")
    lines += ["", "(`=`: a self-transition, accepted without a state change.)", "",
              "```mermaid", mermaid().rstrip(), "```", "", _END]
    return "\n".join(lines)


def _doc_path():
    from conftest import ROOT
    return ROOT / "docs" / "firmware.md"


def test_firmware_doc_state_machine_is_generated_from_the_table():
    text = _doc_path().read_text()
    assert _BEGIN in text and _END in text, "docs/firmware.md lost its generated block"
    block = text[text.index(_BEGIN):text.index(_END) + len(_END)]
    assert block == firmware_doc_block(), "stale: run `python tests/test_fw_states.py`"


if __name__ == "__main__":
    p = _doc_path()
    text = p.read_text()
    if _BEGIN in text:
        text = text[:text.index(_BEGIN)] + firmware_doc_block() + text[text.index(_END) + len(_END):]
    else:
        raise SystemExit("add the markers to docs/firmware.md first")
    p.write_text(text)
