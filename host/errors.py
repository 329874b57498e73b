"""The host library's one exception hierarchy.

::

    PumpError                      base of everything below
    ├── Refused                    the command was not carried out; nothing changed
    │   ├── PumpRefused            ... by the pump: ``<id> ER <code> <reason>``
    │   ├── IllegalCommand         ... by the host: the state mirror says it is illegal now
    │   └── LimitExceeded          ... by the host: a drug-library hard limit (pre-check)
    ├── LinkError                  the serial link failed (port gone, write failed, garbled)
    │   └── Timeout                no reply after every retry
    ├── ProtocolError              the pump speaks something this host does not support
    │   └── FrameError             one frame broke the grammar, the CRC or the length limit
    ├── KeyStoreError              the pump's authentication key is missing or unusable
    └── UsageMistake               a caller's mistake found before anything is sent
        ├── UnitError              a quantity without a unit, an unknown unit, out of range
        └── BadPortURL             a port URL pyserial cannot open as written

``Timeout`` is a ``LinkError``: to a caller both mean "the pump did not answer; the command
may or may not have been executed — ask STATUS". ``Refused`` means it was certainly not.
"""
from __future__ import annotations


class PumpError(Exception):
    """Base class of all InfuseKit host errors."""


class Refused(PumpError):
    """A command was refused (by the pump or by the host's own checks); nothing changed."""

    def __init__(self, code: str, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code} {reason}".strip())


class PumpRefused(Refused):
    """The pump answered ``ER <code> <reason>``."""


class IllegalCommand(Refused):
    """The host's state mirror says the command is not allowed in the pump's state."""

    def __init__(self, command: str, state: str) -> None:
        self.command = command
        self.state = state
        super().__init__("STATE", f"{command} not allowed in {state}")


class LimitExceeded(Refused):
    """A drug-library hard limit would be exceeded (host-side pre-check; code ``LIMIT``)."""

    def __init__(self, reason: str) -> None:
        super().__init__("LIMIT", reason)


class LinkError(PumpError):
    """The serial link failed: the port could not be opened, read or written."""


class Timeout(LinkError):
    """No reply within the timeout after every retry."""


class ProtocolError(PumpError):
    """The pump's answer is not something this host understands (or wrong protocol version)."""


class FrameError(ProtocolError, ValueError):
    """A frame broke the grammar, the CRC or the length limit."""


class KeyStoreError(PumpError, ValueError):
    """An authentication key is missing, the wrong size or stored unsafely."""


class UsageMistake(PumpError, ValueError):
    """The caller's mistake, found before anything was sent; nothing changed (CLI exit 2).
    Also a ``ValueError``, so code that caught the plain ``ValueError`` still works."""


class UnitError(UsageMistake):
    """A quantity without a unit, in an unknown unit, or not representable on the wire."""


class BadPortURL(UsageMistake):
    """A port URL with an unknown scheme or a missing/invalid ``host:port``."""
