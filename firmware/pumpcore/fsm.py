"""Tiny table-driven state machine engine for the table in `pumpcore.states`.

The table is compiled once at import into a bytearray indexed by (trigger, state), so
firing a trigger is one lookup and allocates nothing. The command table is compiled the
same way: a tuple of command words, and per command its class and a bitmask of the states
it is allowed in (`command()`, `allowed()`), so dispatch is a few comparisons.
"""
from array import array

from pumpcore import states as _t

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

NSTATES = len(_t.STATES)
NTRIGGERS = 0
_triggers = []
for _tr, _src, _dst in _t.TRANSITIONS:
    if _tr not in _triggers:
        _triggers.append(_tr)
TRIGGERS = tuple(_triggers)
NTRIGGERS = len(TRIGGERS)
_NONE = const(255)

# state ids (indexes into STATES)
IDLE = _t.STATES.index("IDLE")
PROGRAMMED = _t.STATES.index("PROGRAMMED")
RUNNING = _t.STATES.index("RUNNING")
PAUSED = _t.STATES.index("PAUSED")
COMPLETE = _t.STATES.index("COMPLETE")
ALARM = _t.STATES.index("ALARM")
STANDBY = _t.STATES.index("STANDBY")
KVO = _t.STATES.index("KVO")
FAULT = _t.STATES.index("FAULT")

# trigger ids (indexes into TRIGGERS)
T_PROGRAM = TRIGGERS.index("program")
T_START = TRIGGERS.index("start")
T_PAUSE = TRIGGERS.index("pause")
T_RESUME = TRIGGERS.index("resume")
T_COMPLETE = TRIGGERS.index("complete")
T_ALARM = TRIGGERS.index("alarm")
T_ACK = TRIGGERS.index("ack")
T_STOP = TRIGGERS.index("stop")
T_STANDBY = TRIGGERS.index("standby")
T_KVO = TRIGGERS.index("kvo")
T_FAULT = TRIGGERS.index("fault")
T_RECOVER = TRIGGERS.index("recover")

STATE_NAMES = tuple(s.encode() for s in _t.STATES)  # bytes, for frames

_TABLE = bytearray([_NONE] * (NSTATES * NTRIGGERS))
for _tr, _src, _dst in _t.TRANSITIONS:
    _TABLE[TRIGGERS.index(_tr) * NSTATES + _t.STATES.index(_src)] = _t.STATES.index(_dst)
_INITIAL = _t.STATES.index(_t.INITIAL)

# command table: words (bytes), class (CLS_*), allowed-state bitmask; CFG keys likewise
CLS_TYPED = const(0)
CLS_OPEN = const(1)
CLS_GUARDED = const(2)
_CLS = (_t.TYPED, _t.OPEN, _t.GUARDED)


def _mask(names):
    m = 0
    for n in names:
        m |= 1 << _t.STATES.index(n)
    return m


CMD_WORDS = tuple(c[0].encode() for c in _t.COMMANDS)
_CMD_CLASS = bytes(_CLS.index(c[2]) for c in _t.COMMANDS)
_CMD_MASK = array("H", [_mask(_t.command_states(c[0])) for c in _t.COMMANDS])
CFG_KEYS = tuple(k.encode() for k, _ in _t.CFG_KEYS)
_CFG_MASK = array("H", [_mask(w) for _, w in _t.CFG_KEYS])
C_HELLO = CMD_WORDS.index(b"HELLO")
C_STATUS = CMD_WORDS.index(b"STATUS")
C_HB = CMD_WORDS.index(b"HB")
C_LOG = CMD_WORDS.index(b"LOG")
C_TLM = CMD_WORDS.index(b"TLM")
C_SETTINGS = CMD_WORDS.index(b"SETTINGS")
C_LIB = CMD_WORDS.index(b"LIB")
C_DRUG = CMD_WORDS.index(b"DRUG")
C_PAUSE = CMD_WORDS.index(b"PAUSE")
C_STOP = CMD_WORDS.index(b"STOP")
C_PROG = CMD_WORDS.index(b"PROG")
C_STEP = CMD_WORDS.index(b"STEP")
C_START = CMD_WORDS.index(b"START")
C_RESUME = CMD_WORDS.index(b"RESUME")
C_STANDBY = CMD_WORDS.index(b"STANDBY")
C_TITRATE = CMD_WORDS.index(b"TITRATE")
C_BOLUS = CMD_WORDS.index(b"BOLUS")
C_ACK = CMD_WORDS.index(b"ACK")
C_SILENCE = CMD_WORDS.index(b"SILENCE")
C_VITALS = CMD_WORDS.index(b"VITALS")
C_CFG = CMD_WORDS.index(b"CFG")

# the table is compiled: on MicroPython forget the source module (its tuples return to the
# heap); CPython keeps it for the host and the docs
import sys  # noqa: E402
if sys.implementation.name == "micropython":
    del sys.modules["pumpcore.states"]
    import pumpcore  # noqa: E402
    if "states" in pumpcore.__dict__:
        delattr(pumpcore, "states")
    del _t, _triggers, _tr, _src, _dst, pumpcore, _mask, _CLS


def target(trigger, state):
    """Destination state id, or -1 when `trigger` is illegal in `state`."""
    d = _TABLE[trigger * NSTATES + state]
    return -1 if d == _NONE else d


def command_class(c):
    """CLS_TYPED, CLS_OPEN or CLS_GUARDED of command index `c`."""
    return _CMD_CLASS[c]


def allowed(c, state):
    """True when command index `c` is allowed in `state` (the command table)."""
    return (_CMD_MASK[c] >> state) & 1 == 1


def cfg_allowed(k, state):
    """True when CFG key index `k` (into CFG_KEYS) may be changed in `state`."""
    return (_CFG_MASK[k] >> state) & 1 == 1


class Machine:
    """Current state plus a change flag the controller turns into an event frame."""

    def __init__(self):
        self.state = _INITIAL
        self.changed = False

    def can(self, trigger):
        return _TABLE[trigger * NSTATES + self.state] != _NONE

    def fire(self, trigger):
        """Take the transition; return False (and change nothing) when it is illegal."""
        d = _TABLE[trigger * NSTATES + self.state]
        if d == _NONE:
            return False
        if d != self.state:
            self.changed = True
        self.state = d
        return True
