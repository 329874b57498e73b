"""host.statemachine: the transitions mirror agrees with the firmware table, pair by pair."""
from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host import statemachine as sm
from host._firmware import pumpcore
from host.errors import IllegalCommand, ProtocolError

TABLE = pumpcore("states")
PAIRS = list(itertools.product(sm.TRIGGERS, sm.STATES))


def test_table_is_loaded_from_the_firmware():
    assert sm.STATES == tuple(TABLE.STATES)
    assert sm.TRANSITIONS == tuple(tuple(t) for t in TABLE.TRANSITIONS)
    assert sm.INITIAL == TABLE.INITIAL
    assert set(sm.INTERNAL_TRIGGERS) <= set(sm.TRIGGERS)
    assert set(sm.COMMAND_WORDS.values()) == set(sm.COMMAND_TRIGGERS)
    assert sm.COMMAND_WORDS["PROG"] == "program" and sm.COMMAND_WORDS["START"] == "start"


@pytest.mark.parametrize("trigger, state", PAIRS)
def test_mirror_legal_iff_in_table(trigger, state):
    expected = {dst for tr, src, dst in TABLE.TRANSITIONS if tr == trigger and src == state}
    m = sm.StateMirror()
    m.set(state)
    assert m.can(trigger) == bool(expected)
    assert sm.target(trigger, state) == (next(iter(expected)) if expected else None)
    if expected:
        assert m.fire(trigger) == next(iter(expected))
    else:
        with pytest.raises(IllegalCommand):
            m.check(trigger)
        with pytest.raises(IllegalCommand):
            m.fire(trigger)
        assert m.state == state          # an illegal trigger changes nothing


@pytest.mark.parametrize("trigger, state", PAIRS)
@pytest.mark.req("REQ-SW-01")
def test_mirror_agrees_with_firmware_engine(trigger, state):
    fsm = pumpcore("fsm")
    t = fsm.TRIGGERS.index(trigger)
    s = fsm.STATES.index(state) if hasattr(fsm, "STATES") else TABLE.STATES.index(state)
    dst = fsm.target(t, s)
    assert sm.target(trigger, state) == (None if dst < 0 else TABLE.STATES[dst])


def test_plain_machine_from_table():
    class Model:
        pass
    model = Model()
    machine = sm.build_machine(model)
    assert model.state == "IDLE"
    assert set(machine.states) == set(sm.STATES)
    assert not hasattr(model, "to_RUNNING")          # no auto transitions
    model.program()
    model.start()
    assert model.state == "RUNNING"


@given(st.lists(st.sampled_from(sm.TRIGGERS), max_size=30))
def test_random_walks_follow_the_table(triggers):
    m = sm.StateMirror()
    m.set(sm.INITIAL)
    state = sm.INITIAL
    for tr in triggers:
        dst = sm.target(tr, state)
        if dst is None:
            with pytest.raises(IllegalCommand):
                m.fire(tr)
        else:
            assert m.fire(tr) == dst
            state = dst
        assert m.state == state


def test_unknown_mirror():
    m = sm.StateMirror()
    assert m.state is None and not m.known
    assert not m.can("stop")
    with pytest.raises(IllegalCommand, match="UNKNOWN"):
        m.check("stop")
    m.set("RUNNING")
    m.forget()
    assert m.state is None
    with pytest.raises(ProtocolError):
        m.set("FLYING")


def test_legal_triggers():
    for state in sm.STATES:
        assert set(sm.legal_triggers(state)) == {t for t, s, _ in TABLE.TRANSITIONS if s == state}
    assert "program" in sm.legal_triggers("IDLE") and "start" not in sm.legal_triggers("IDLE")
    assert {"pause", "complete", "alarm", "stop"} <= set(sm.legal_triggers("RUNNING"))


def test_mermaid_has_every_transition():
    text = sm.mermaid()
    assert "stateDiagram-v2" in text
    assert "[*] --> IDLE" in text
    assert "Class " not in text
    edges = set(re.findall(r"^\s*(\w+) --> (\w+): (.+)$", text, re.M))
    drawn = {(src, dst, lab) for src, dst, labels in edges for lab in labels.split(" | ")}
    assert drawn == {(src, dst, tr) for tr, src, dst in sm.TRANSITIONS}


def test_mermaid_fallback_matches():
    text = sm._mermaid_from_table("t")
    for tr, src, dst in sm.TRANSITIONS:
        assert re.search(rf"{src} --> {dst}: .*\b{tr}\b", text)


def test_committed_diagram_matches_the_table():
    from host._firmware import firmware_dir
    doc = (firmware_dir().parent / sm.DOC_PATH).read_text()
    assert doc == sm.markdown(), "docs/statemachine.md is stale: run `make docs`"
    for tr, src, dst in sm.TRANSITIONS:
        assert f"| `{src}` | `{tr}` | `{dst}` |" in doc
