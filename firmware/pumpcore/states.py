"""The pump's state machine as plain data: states, triggers and transitions.

This table is the single source of truth. The firmware runs it with the small engine in
`pumpcore.fsm`; the host builds a `transitions` machine from it (host/statemachine.py);
docs draw it. Keep it plain tuples of strings so every consumer can read it.
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
