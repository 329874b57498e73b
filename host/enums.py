"""The pump's states, alarms and alarm priorities as enums, built from the firmware's own
tables (``pumpcore/states.py``, ``pumpcore/alarms.py``) so no name is kept twice.

They are ``StrEnum``/``IntEnum``: ``Status.state == "RUNNING"`` and ``State.RUNNING ==
"RUNNING"`` both hold, ``f"{state}"`` is the wire name and ``json.dumps`` writes it as is.
A name the firmware adds later and this host does not know stays a plain ``str``
(``as_state`` / ``as_alarm``), so a newer pump never breaks an older host.
"""
from __future__ import annotations

from enum import IntEnum, StrEnum

from host._firmware import pumpcore

_states = pumpcore("states")
_alarms = pumpcore("alarms")

State = StrEnum("State", [(s, s) for s in _states.STATES])                  # type: ignore[misc]
State.__doc__ = "A pump state (firmware/pumpcore/states.py)."
Alarm = StrEnum("Alarm", [(n.decode(), n.decode()) for n in _alarms.NAMES])  # type: ignore[misc]
Alarm.__doc__ = "An alarm name (firmware/pumpcore/alarms.py); Alarm.NONE: no alarm."


class Priority(IntEnum):
    """Alarm priority (IEC 60601-1-8): none, low, medium, high."""
    NONE = 0
    LOW = _alarms.PRIO_LOW
    MEDIUM = _alarms.PRIO_MEDIUM
    HIGH = _alarms.PRIO_HIGH


def as_state(name: str | None):
    """``State`` for a known state name, the plain string otherwise (None stays None)."""
    if name is None:
        return None
    try:
        return State(name)
    except ValueError:
        return name


def as_alarm(name: str | None):
    """``Alarm`` for a known alarm name, the plain string otherwise."""
    if name is None:
        return None
    try:
        return Alarm(name)
    except ValueError:
        return name


def as_priority(value: int | str | None) -> Priority | int:
    """``Priority`` for 0..3 (a digit string too), the plain int otherwise."""
    try:
        n = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return Priority.NONE
    try:
        return Priority(n)
    except ValueError:
        return n
