"""InfuseKit host: serial client library, protocol codec, state-machine mirror and CLI.

>>> from host import Pump
>>> with Pump.open("socket://127.0.0.1:7001") as pump:      # doctest: +SKIP
...     pump.program(drug="ketamine", dose="0.5 mg/kg", over="40 min", weight_kg=70)
...     pump.start()

The heavy parts are imported lazily so ``import host.codec`` stays cheap.
"""
from __future__ import annotations

import logging
from typing import Any

from host.errors import (FrameError, IllegalCommand, LimitExceeded, LinkError, ProtocolError,
                         PumpError, PumpRefused, Refused, Timeout)

# a library logs, the application decides where it goes (no "No handlers" warnings)
logging.getLogger("infusekit").addHandler(logging.NullHandler())

__all__ = ["Pump", "Hello", "Status", "ProgramResult", "PumpError", "Refused", "PumpRefused",
           "IllegalCommand", "LimitExceeded", "LinkError", "Timeout", "ProtocolError",
           "FrameError"]


def __getattr__(name: str) -> Any:
    if name in ("Pump", "Hello", "Status", "ProgramResult"):
        from host import client
        return getattr(client, name)
    raise AttributeError(f"module 'host' has no attribute {name!r}")
