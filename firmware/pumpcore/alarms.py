"""Alarm conditions, IEC 60601-1-8 priorities, latching, acknowledge and audio silence.

Each alarm has two bits: *active* (the alarm is signalled) and *condition* (the cause is
present now). Raising sets both. When the cause goes away the condition bit clears; alarms
in _AUTO_CLEAR then clear themselves, the others stay latched until ACK. ACK clears only the
latched alarms whose condition is gone. SILENCE pauses the audio signal for 120 s and never
clears anything; a newly raised alarm of the same or higher priority ends the silence.
Every raise and clear is announced as `! EV ALARM` / `! EV CLEAR`. Integer bit masks only:
nothing here allocates.
"""
from pumpcore import protocol as P
from pumpcore.ticks import ticks_diff, ticks_add

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

_A_NONE = const(0)
A_OCCLUSION = const(1)
A_VTBI_DONE = const(2)
A_AIR = const(3)
A_AIR_CUM = const(4)
A_DOOR = const(5)
A_EMPTY = const(6)
A_NEAR_EMPTY = const(7)
A_VTBI_NEAR = const(8)
A_STALL = const(9)
A_RUNAWAY = const(10)
A_BATT_LOW = const(11)
A_BATT_DEPLETED = const(12)
A_FAULT = const(13)
A_COMM_LOSS = const(14)
A_CALLBACK = const(15)
A_VITALS = const(16)
A_VITALS_STALE = const(17)
A_RESTART = const(18)
_N_ALARMS = const(19)

NAMES = (b"NONE", b"OCCLUSION", b"VTBI_DONE", b"AIR", b"AIR_CUM", b"DOOR", b"EMPTY",
         b"NEAR_EMPTY", b"VTBI_NEAR", b"STALL", b"RUNAWAY", b"BATT_LOW", b"BATT_DEPLETED",
         b"FAULT", b"COMM_LOSS", b"CALLBACK", b"VITALS", b"VITALS_STALE", b"RESTART")

_PRIO_NONE = const(0)
PRIO_LOW = const(1)
PRIO_MEDIUM = const(2)
PRIO_HIGH = const(3)
# priority per alarm id (COMM_LOSS is 3 when the heartbeat action is "pause")
_PRIO = const((0, 3, 1, 3, 3, 3, 3, 2, 1, 3, 3, 2, 3, 3, 2, 2, 3, 2, 2))

# precedence among alarms of the same priority: the first active one in this list is shown
_ORDER = const((A_RUNAWAY, A_FAULT, A_OCCLUSION, A_AIR, A_AIR_CUM, A_EMPTY, A_DOOR, A_STALL,
         A_BATT_DEPLETED, A_VITALS, A_COMM_LOSS, A_RESTART, A_BATT_LOW, A_NEAR_EMPTY,
         A_VITALS_STALE, A_CALLBACK, A_VTBI_NEAR, A_VTBI_DONE))

# alarms that clear by themselves when their condition goes away (no ACK needed)
_AUTO_CLEAR = const((1 << A_COMM_LOSS) | (1 << A_VITALS_STALE) | (1 << A_CALLBACK)
              | (1 << A_NEAR_EMPTY) | (1 << A_VTBI_NEAR) | (1 << A_BATT_LOW))

SILENCE_MS = const(120000)    # audio paused by SILENCE (IEC 60601-1-8 "audio paused"), ms
del const   # compile-time only (each module global is a slot of heap on the board)


class Alarms:
    def __init__(self):
        self.act = 0            # bit i: alarm i active (signalled)
        self.cond = 0           # bit i: alarm i's condition present now
        self.comm_prio = PRIO_MEDIUM
        self.silenced = False
        self._silence_until = 0
        self._silence_prio = 0
        self.raised = 0         # count of raises, for the event log

    def prio(self, a):
        if a == A_COMM_LOSS:
            return self.comm_prio
        return _PRIO[a]

    def is_active(self, a):
        return (self.act >> a) & 1

    def raise_(self, a, tx, now):
        """Raise alarm a (sets active and condition). Returns True when it was not active."""
        bit = 1 << a
        self.cond |= bit
        if self.act & bit:
            return False
        self.act |= bit
        self.raised += 1
        p = self.prio(a)
        if self.silenced and p >= self._silence_prio:
            self.silenced = False
        self.announce(a, tx)
        return True

    def announce(self, a, tx):
        """Send `! EV ALARM` for alarm a (raise_ does; a boot-time raise is announced again
        from the first step, whose transmit buffer reaches the host)."""
        tx.begin(P.ID_EVENT)
        tx.put(b" EV ALARM")
        tx.field_lit(b"alarm", NAMES[a])
        tx.field_int(b"prio", self.prio(a))
        tx.end()

    def condition_gone(self, a, tx):
        bit = 1 << a
        self.cond &= ~bit
        if (self.act & bit) and (_AUTO_CLEAR & bit):
            self.clear(a, tx)

    def clear(self, a, tx):
        """Clear alarm a unconditionally (program reset, stop)."""
        bit = 1 << a
        self.cond &= ~bit
        if self.act & bit:
            self.act &= ~bit
            tx.begin(P.ID_EVENT)
            tx.put(b" EV CLEAR")
            tx.field_lit(b"alarm", NAMES[a])
            tx.end()

    def ack(self, tx):
        """Clear every active alarm whose condition is gone; return how many stay active."""
        left = 0
        for a in range(1, _N_ALARMS):
            bit = 1 << a
            if self.act & bit:
                if self.cond & bit:
                    left += 1
                else:
                    self.clear(a, tx)
        return left

    def high_with_condition(self):
        """True while a high-priority alarm's condition is still present."""
        return self.high_with_condition_in(self.cond)

    def high_with_condition_in(self, cond):
        """high_with_condition() if the conditions were `cond` (a bit mask)."""
        for a in range(1, _N_ALARMS):
            if (self.act >> a) & (cond >> a) & 1:
                if self.prio(a) == PRIO_HIGH:
                    return True
        return False

    def any_high(self):
        for a in range(1, _N_ALARMS):
            if (self.act >> a) & 1 and self.prio(a) == PRIO_HIGH:
                return True
        return False

    def highest(self):
        """The alarm to signal: highest priority, then _ORDER precedence; _A_NONE if none."""
        if not self.act:
            return _A_NONE
        best = _A_NONE
        bp = 0
        for a in _ORDER:
            if (self.act >> a) & 1:
                p = self.prio(a)
                if p > bp:
                    best = a
                    bp = p
        return best

    def silence(self, now):
        self.silenced = True
        self._silence_until = ticks_add(now, SILENCE_MS)
        self._silence_prio = self.prio(self.highest())
        return self._silence_until

    def audio(self, now):
        """True when the auditory signal is due: an alarm is active and audio is not silenced.
        The board plays the pattern of the priority (a low-priority burst is 1-2 pulses)."""
        if self.silenced and ticks_diff(now, self._silence_until) >= 0:
            self.silenced = False
        return (not self.silenced) and self.act != 0

    def silence_until(self):
        return self._silence_until if self.silenced else 0
