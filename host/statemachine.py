"""The host's mirror of the pump state machine, built from the firmware's own table.

``firmware/pumpcore/states.py`` (STATES, TRANSITIONS, INITIAL, INTERNAL_TRIGGERS, COMMANDS,
CFG_KEYS) is the single source of truth; this module turns it into a ``transitions.Machine``
and the command rules (``word_allowed``, ``GUARDED_WORDS``) so the host can tell, before
sending a command, whether the pump would accept it, and draws the diagram (``mermaid()``)
and the protocol's command table (``command_table_markdown()``) from the same table.
"""
from __future__ import annotations

import threading
from types import ModuleType

from transitions import Machine, MachineError

from host._firmware import pumpcore
from host.errors import IllegalCommand, ProtocolError

_table: ModuleType = pumpcore("states")
STATES: tuple[str, ...] = tuple(_table.STATES)
TRANSITIONS: tuple[tuple[str, str, str], ...] = tuple(tuple(t) for t in _table.TRANSITIONS)
INITIAL: str = _table.INITIAL
INTERNAL_TRIGGERS: tuple[str, ...] = tuple(_table.INTERNAL_TRIGGERS)
TRIGGERS: tuple[str, ...] = tuple(dict.fromkeys(t for t, _, _ in TRANSITIONS))
COMMAND_TRIGGERS: tuple[str, ...] = tuple(t for t in TRIGGERS if t not in INTERNAL_TRIGGERS)

# protocol command word -> trigger it fires: the trigger's name in upper case, except
# "program" (PROG). Derived from the table, so a trigger the firmware adds (e.g. "standby")
# is mirrored without a host change.
_WORD_OF = {"program": "PROG"}
COMMAND_WORDS: dict[str, str] = {_WORD_OF.get(t, t.upper()): t for t in COMMAND_TRIGGERS}

# The command table (states.COMMANDS): which command is allowed in which state, and its
# class (typed / open / guarded). The host checks a command against it before sending.
COMMANDS: tuple[tuple[str, str | None, str, tuple[str, ...] | None], ...] = tuple(
    tuple(c) for c in _table.COMMANDS)
COMMAND_STATES: dict[str, tuple[str, ...]] = {c[0]: tuple(_table.command_states(c[0]))
                                              for c in COMMANDS}
COMMAND_CLASS: dict[str, str] = {c[0]: c[2] for c in COMMANDS}
GUARDED: str = _table.GUARDED
# words that need boot=N and, when the pump requires authentication, ctr and mac
GUARDED_WORDS: frozenset[str] = frozenset(w for w, c in COMMAND_CLASS.items() if c == GUARDED)
# words that may be sent without a CRC
TYPED_WORDS: frozenset[str] = frozenset(w for w, c in COMMAND_CLASS.items() if c == _table.TYPED)
CFG_KEYS: dict[str, tuple[str, ...]] = {k: tuple(w) for k, w in _table.CFG_KEYS}


def word_allowed(word: str, state: str) -> bool | None:
    """Whether command ``word`` is legal in ``state`` per the command table: True/False, or
    None when the table does not know the word (the pump decides)."""
    states = COMMAND_STATES.get(word)
    if states is None:
        return None
    return state in states


def target(trigger: str, state: str) -> str | None:
    """The state ``trigger`` leads to from ``state``, or None when it is illegal there."""
    for tr, src, dst in TRANSITIONS:
        if tr == trigger and src == state:
            return dst
    return None


def legal_triggers(state: str) -> tuple[str, ...]:
    """Triggers allowed in ``state``, in table order."""
    return tuple(dict.fromkeys(tr for tr, src, _ in TRANSITIONS if src == state))


def _machine_kwargs(initial: str) -> dict:
    return dict(states=list(STATES), transitions=[list(t) for t in TRANSITIONS],
                initial=initial, auto_transitions=False, ignore_invalid_triggers=False,
                send_event=False)


class _Model:
    """Plain model object ``transitions`` attaches ``state`` and trigger methods to."""
    state: str


class StateMirror:
    """Thread-safe mirror of the pump's state.

    ``state`` is None until the mirror is told the pump's state (a STATUS reply, a command
    reply carrying ``state``, or an ``EV STATE`` event). ``fire()`` applies a trigger the
    pump accepted; ``check()`` raises IllegalCommand when the table forbids a trigger.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model = _Model()
        self.machine = Machine(model=self._model, **_machine_kwargs(INITIAL))
        self._known = False

    @property
    def state(self) -> str | None:
        with self._lock:
            return self._model.state if self._known else None

    @property
    def known(self) -> bool:
        return self._known

    def set(self, state: str) -> None:
        """Adopt the pump's reported state."""
        if state not in STATES:
            raise ProtocolError(f"pump reported unknown state {state!r}")
        with self._lock:
            self.machine.set_state(state, model=self._model)
            self._known = True

    def forget(self) -> None:
        """Mark the mirror unknown (e.g. after the pump disagreed with it)."""
        with self._lock:
            self._known = False

    def can(self, trigger: str) -> bool:
        """True when ``trigger`` is legal in the mirrored state (False when unknown)."""
        with self._lock:
            if not self._known:
                return False
            return bool(self.machine.get_triggers(self._model.state).count(trigger))

    def check(self, trigger: str, command: str | None = None) -> None:
        """Raise IllegalCommand unless ``trigger`` is legal in the (known) mirrored state."""
        with self._lock:
            state = self._model.state if self._known else "UNKNOWN"
            ok = self._known and trigger in self.machine.get_triggers(state)
        if not ok:
            raise IllegalCommand(command or trigger.upper(), state)

    def fire(self, trigger: str) -> str:
        """Take the transition and return the new state (IllegalCommand when illegal)."""
        with self._lock:
            if not self._known:
                raise IllegalCommand(trigger.upper(), "UNKNOWN")
            try:
                getattr(self._model, trigger)()
            except MachineError:
                raise IllegalCommand(trigger.upper(), self._model.state) from None
            return self._model.state


def build_machine(model: object | None = None, initial: str = INITIAL) -> Machine:
    """A plain ``transitions.Machine`` over the firmware table (no auto transitions)."""
    return Machine(model=model if model is not None else _Model(), **_machine_kwargs(initial))


def mermaid(title: str = "InfuseKit pump") -> str:
    """A Mermaid ``stateDiagram-v2`` of the table (transitions' mermaid engine, no graphviz)."""
    try:
        from transitions.extensions.diagrams import GraphMachine
        model = _Model()
        GraphMachine(model=model, graph_engine="mermaid", title=title,
                     **_machine_kwargs(INITIAL))
        text = model.get_graph().draw(None)  # type: ignore[attr-defined]
        # transitions 0.9.3 writes "Class X s_active" (marks the current state); Mermaid's
        # keyword is lower case and the diagram should not highlight a state.
        lines = [ln for ln in text.splitlines() if not ln.strip().startswith("Class ")]
        # transitions writes the title bare between "---" lines; Mermaid's front matter
        # wants "title: …"
        if len(lines) > 2 and lines[0] == "---" and lines[2] == "---" and ":" not in lines[1]:
            lines[1] = f"title: {lines[1]}"
        return "\n".join(lines).rstrip() + "\n"
    except ImportError:  # pragma: no cover - transitions without the mermaid engine
        return _mermaid_from_table(title)


def _mermaid_from_table(title: str) -> str:
    lines = ["---", f"title: {title}", "---", "stateDiagram-v2", "  direction LR", f"  [*] --> {INITIAL}"]
    edges: dict[tuple[str, str], list[str]] = {}
    for tr, src, dst in TRANSITIONS:
        edges.setdefault((src, dst), []).append(tr)
    for (src, dst), labels in edges.items():
        lines.append(f"  {src} --> {dst}: {' | '.join(labels)}")
    return "\n".join(lines) + "\n"


DOC_PATH = "docs/statemachine.md"


def markdown() -> str:
    """docs/statemachine.md: the diagram and the table, generated (``make docs``)."""
    rows = "\n".join(f"| `{src}` | `{tr}` | `{dst}` | "
                      f"{'pump' if tr in INTERNAL_TRIGGERS else _word(tr)} |"
                      for tr, src, dst in TRANSITIONS)
    return (
        "# Pump state machine\n\n"
        "<!-- Generated by `make docs` (python -m host.statemachine --write) from\n"
        "     firmware/pumpcore/states.py. Do not edit: tests/test_statemachine.py checks it. -->\n\n"
        "The firmware runs this table (`pumpcore/fsm.py`); the host mirrors it with a\n"
        "`transitions` machine (`host/statemachine.py`) and refuses locally a command the table\n"
        "forbids in the current state. Triggers fired by the pump itself: "
        + ", ".join(f"`{t}`" for t in INTERNAL_TRIGGERS) + ".\n\n"
        "```mermaid\n" + mermaid() + "```\n\n"
        "| from | trigger | to | sent by |\n|---|---|---|---|\n" + rows + "\n")


PROTOCOL_PATH = "docs/protocol.md"
TABLE_BEGIN = "<!-- BEGIN command table: generated from firmware/pumpcore/states.py by `make docs`; do not edit -->"
TABLE_END = "<!-- END command table -->"
_CLASS_TEXT = {
    "typed": "read; CRC optional",
    "open": "never needs a signature",
    "guarded": "**guarded**: `ctr`+`mac` when `auth=1`",
}


def _states_text(states: tuple[str, ...]) -> str:
    if tuple(states) == STATES:
        return "any"
    return ", ".join(states)


def command_table_markdown() -> str:
    """The protocol's command table (which command in which state, which one is guarded),
    generated from the firmware's table; docs/protocol.md holds it between TABLE_BEGIN and
    TABLE_END."""
    rows = ["| command | class | allowed in | state change |", "|---|---|---|---|"]
    for word, trigger, cls, _ in COMMANDS:
        change = "–"
        if trigger is not None:
            change = ", ".join(sorted({f"{s}→{target(trigger, s)}" for s in COMMAND_STATES[word]
                                       if target(trigger, s) != s}, key=lambda x: STATES.index(x.split("→")[0]))) or "–"
        rows.append(f"| `{word}` | {_CLASS_TEXT[cls]} | {_states_text(COMMAND_STATES[word])} | {change} |")
    rows += ["", "| `CFG` key | may change in |", "|---|---|"]
    for key, states in CFG_KEYS.items():
        rows.append(f"| `{key}` | {_states_text(states)} |")
    return "\n".join(rows) + "\n"


def protocol_with_table(text: str) -> str:
    """``text`` (docs/protocol.md) with its generated command table replaced by the current one."""
    a = text.index(TABLE_BEGIN) + len(TABLE_BEGIN)
    b = text.index(TABLE_END)
    return text[:a] + "\n\n" + command_table_markdown() + "\n" + text[b:]


def _word(trigger: str) -> str:
    return f"`{_WORD_OF.get(trigger, trigger.upper())}`"


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path
    ap = argparse.ArgumentParser(prog="python -m host.statemachine",
                                 description="print the state diagram (Mermaid) or write "
                                             + DOC_PATH)
    ap.add_argument("--write", nargs="?", const=DOC_PATH, metavar="FILE",
                    help=f"write the Markdown page (default {DOC_PATH})")
    args = ap.parse_args(argv)
    if args.write:
        Path(args.write).write_text(markdown())
        print(f"wrote {args.write}")
        proto = Path(args.write).parent / Path(PROTOCOL_PATH).name
        if proto.is_file():
            proto.write_text(protocol_with_table(proto.read_text()))
            print(f"wrote the command table in {proto}")
    else:
        print(mermaid(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
