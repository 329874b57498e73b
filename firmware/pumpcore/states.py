"""The pump's state machine as plain data: states, triggers and transitions.

This table is the single source of truth. The firmware runs it with the small engine in
`pumpcore.fsm`; the host builds a `transitions` machine from it (host/statemachine.py);
docs draw it. Keep it plain tuples of strings so every consumer can read it.
"""

STATES = ("IDLE", "PROGRAMMED", "RUNNING", "PAUSED", "COMPLETE", "ALARM")

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
)

# Triggers the pump fires itself; the others come from host commands.
INTERNAL_TRIGGERS = ("complete", "alarm")

# The states in which the motor may move.
DELIVERING = ("RUNNING",)

INITIAL = "IDLE"
