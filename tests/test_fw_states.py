"""The state table is well formed and the firmware engine follows it exactly."""
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
