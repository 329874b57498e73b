"""The pump's state machine and command table as plain data: states, transitions, and
which command is allowed in which state and which one is guarded (signed, boot-bound).

This table is the single source of truth. The firmware runs it with the small engine in
`pumpcore.fsm` and dispatches commands from COMMANDS; the host builds a `transitions`
machine and its command rules from it (host/statemachine.py); docs/protocol.md's command
tables are generated from it (tests/test_protocol_spec.py checks them). Keep it plain
tuples of strings so every consumer can read it.
"""

STATES = ("IDLE", "PROGRAMMED", "RUNNING", "PAUSED", "COMPLETE", "ALARM", "STANDBY", "KVO",
          "FAULT")

# (trigger, source, destination). A trigger absent for a state is illegal in that state.
TRANSITIONS = (
    ("program", "IDLE", "PROGRAMMED"),
    ("program", "PROGRAMMED", "PROGRAMMED"),
    ("program", "COMPLETE", "PROGRAMMED"),
    ("start", "PROGRAMMED", "RUNNING"),
    ("pause", "RUNNING", "PAUSED"),
    ("resume", "PAUSED", "RUNNING"),
    ("complete", "RUNNING", "COMPLETE"),
    ("alarm", "RUNNING", "ALARM"),
    ("alarm", "PAUSED", "ALARM"),
    ("ack", "ALARM", "PAUSED"),
    ("stop", "PROGRAMMED", "IDLE"),
    ("stop", "RUNNING", "IDLE"),
    ("stop", "PAUSED", "IDLE"),
    ("stop", "COMPLETE", "IDLE"),
    ("stop", "ALARM", "IDLE"),
    # standby: the program is kept, nothing is delivered, the callback alarm is suspended
    ("standby", "PROGRAMMED", "STANDBY"),
    ("standby", "PAUSED", "STANDBY"),
    ("start", "STANDBY", "RUNNING"),
    ("resume", "STANDBY", "RUNNING"),
    ("program", "STANDBY", "PROGRAMMED"),
    ("stop", "STANDBY", "IDLE"),
    # keep vein open after the VTBI when the program has a KVO rate (else "complete")
    ("kvo", "RUNNING", "KVO"),
    ("pause", "KVO", "PAUSED"),
    ("alarm", "KVO", "ALARM"),
    ("program", "KVO", "PROGRAMMED"),
    ("stop", "KVO", "IDLE"),
    # internal fault (corrupt drug library or settings): refuses to infuse; STOP leaves it
    # only when the fault is gone (the controller checks)
    ("fault", "IDLE", "FAULT"),
    ("stop", "FAULT", "IDLE"),
    # ACK clears latched alarms whose condition is gone in any state; only ALARM moves
    ("ack", "IDLE", "IDLE"),
    ("ack", "PROGRAMMED", "PROGRAMMED"),
    ("ack", "RUNNING", "RUNNING"),
    ("ack", "PAUSED", "PAUSED"),
    ("ack", "COMPLETE", "COMPLETE"),
    ("ack", "STANDBY", "STANDBY"),
    ("ack", "KVO", "KVO"),
    ("ack", "FAULT", "FAULT"),
    # after a power cut or watchdog reset an interrupted infusion comes back paused
    ("recover", "IDLE", "PAUSED"),
)

# Triggers the pump fires itself; the others come from host commands.
INTERNAL_TRIGGERS = ("complete", "alarm", "kvo", "fault", "recover")

# The states in which the motor may move.
DELIVERING = ("RUNNING", "KVO")

INITIAL = "IDLE"


# ---------------------------------------------------------------- commands (protocol v1)
# Command classes (docs/protocol.md, *Commands*):
#   TYPED    read-only, CRC optional (typed in a terminal), never needs a signature or boot
#   OPEN     CRC required; never needs a signature or boot: reads, and the commands that stop
#            delivery (PAUSE, STOP must always work, whoever sends them)
#   GUARDED  changes therapy, alarms or settings: CRC required, `boot=N` (the current boot,
#            from HELLO) required, and `ctr` + `mac` when the pump requires authentication
TYPED = "typed"
OPEN = "open"
GUARDED = "guarded"

ANY = STATES
# where PROG (trigger "program") is legal; STEP stages program steps in the same states
PROGRAMMABLE = tuple(s for s in STATES if any(t == "program" and f == s for t, f, _ in TRANSITIONS))
# CFG changes: settings that matter with a program loaded but nothing delivering
CFG_STATES = ("IDLE", "PROGRAMMED", "PAUSED", "STANDBY")

# (word, trigger, class, states). A command with a trigger is allowed exactly where the
# trigger has a transition (states None: TRANSITIONS is its one home); the others list
# their states. A command absent here is ER UNKNOWN.
COMMANDS = (
    ("HELLO", None, TYPED, ANY),
    ("STATUS", None, TYPED, ANY),
    ("HB", None, OPEN, ANY),
    ("LOG", None, OPEN, ANY),
    ("TLM", None, OPEN, ANY),
    ("SETTINGS", None, OPEN, ANY),
    ("LIB", None, OPEN, ANY),
    ("DRUG", None, OPEN, ANY),
    ("PAUSE", "pause", OPEN, None),
    ("STOP", "stop", OPEN, None),
    ("PROG", "program", GUARDED, None),
    ("STEP", None, GUARDED, PROGRAMMABLE),
    ("START", "start", GUARDED, None),
    ("RESUME", "resume", GUARDED, None),
    ("STANDBY", "standby", GUARDED, None),
    ("TITRATE", None, GUARDED, ("RUNNING", "PAUSED")),
    ("BOLUS", None, GUARDED, ("RUNNING",)),
    ("ACK", "ack", GUARDED, None),
    ("SILENCE", None, GUARDED, ANY),
    ("VITALS", None, GUARDED, ANY),
    ("CFG", None, GUARDED, CFG_STATES),
)

# CFG keys and the states each may be changed in (within CFG's own states). Pump-wide link
# and alarm policy only in IDLE; what the clinician adjusts with a program loaded also in
# PROGRAMMED, PAUSED and STANDBY (never while delivering).
CFG_KEYS = (
    ("occl_mmhg", CFG_STATES),
    ("occl_level", CFG_STATES),
    ("interlock", CFG_STATES),
    ("vitals_age_ms", CFG_STATES),
    ("syr_nl", CFG_STATES),
    ("hb_ms", ("IDLE",)),
    ("hb_action", ("IDLE",)),
    ("auth", ("IDLE",)),
    ("callback_ms", ("IDLE",)),
    # the syringe model (issue 12): calibration, compliance and noise the rate loop, volume
    # accounting and occlusion detector plan from; therapy-relevant, so CFG's signature
    # covers it when auth=1, and only with no program loaded
    ("syringe", ("IDLE",)),
)


def command_states(word):
    """The states in which command `word` is allowed (from COMMANDS and TRANSITIONS)."""
    for w, trigger, _cls, where in COMMANDS:
        if w == word:
            if where is not None:
                return tuple(where)
            return tuple(s for s in STATES if any(t == trigger and f == s for t, f, _ in TRANSITIONS))
    return ()
