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



# ------------------------------------------------------------------ the compiled tables
# pumpcore/fsm.py holds the table as constants (in flash on the frozen image), written by
# tools/gen_fsm.py from pumpcore/states.py, the table's one home.
def _gen():
    import importlib.util
    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("gen_fsm", ROOT / "tools" / "gen_fsm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.req("REQ-COM-06")
def test_fsm_constants_are_generated_from_the_table():
    gen = _gen()
    _, block, _ = gen.split(Path(fsm.__file__).read_text())
    assert block == gen.block(states), "stale: run `python tools/gen_fsm.py`"
    assert gen.main(["--check"]) == 0


@pytest.mark.req("REQ-COM-06")
def test_fsm_constants_follow_a_changed_table():
    # the check can fail: a table with one transition more gives another block
    import types
    t = types.SimpleNamespace(**{k: getattr(states, k) for k in dir(states) if k.isupper()})
    t.command_states = states.command_states
    assert _gen().block(t) == _gen().block(states)
    t.TRANSITIONS = states.TRANSITIONS + (("pause", "STANDBY", "PAUSED"),)
    assert _gen().block(t) != _gen().block(states)


@pytest.mark.req("REQ-COM-06")
def test_fsm_command_and_cfg_tables_match_the_table():
    assert fsm.STATE_NAMES == tuple(s.encode() for s in states.STATES)
    assert [getattr(fsm, s) for s in states.STATES] == list(range(len(states.STATES)))
    assert fsm.CMD_WORDS == tuple(c[0].encode() for c in states.COMMANDS)
    cls = {states.TYPED: fsm.CLS_TYPED, states.OPEN: fsm.CLS_OPEN, states.GUARDED: fsm.CLS_GUARDED}
    for ci, (word, _trigger, klass, _where) in enumerate(states.COMMANDS):
        assert getattr(fsm, "C_" + word) == ci
        assert fsm.command_class(ci) == cls[klass]
        where = set(states.command_states(word))
        for si, s in enumerate(states.STATES):
            assert fsm.allowed(ci, si) == (s in where), (word, s)
    assert fsm.CFG_KEYS == tuple(k.encode() for k, _ in states.CFG_KEYS)
    for ki, (_k, where) in enumerate(states.CFG_KEYS):
        for si, s in enumerate(states.STATES):
            assert fsm.cfg_allowed(ki, si) == (s in where)
    for ti, t in enumerate(fsm.TRIGGERS):
        assert getattr(fsm, "T_" + t.upper()) == ti
    assert fsm.Machine().state == states.STATES.index(states.INITIAL)

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
