"""Build the controller from what a board provides at boot: drug library, settings, key and
replay counter. A library or settings record that fails its checks puts the pump in FAULT
(it refuses to infuse and says why); nothing falls back to defaults silently.

Optional board hooks (all may be absent): `load_settings() -> bytes | None`,
`store_settings(bytes)`, `load_key() -> bytes | None`, `load_counter() -> int`,
`store_counter(int)`. Without `load_key` the board has no key and authentication cannot be
turned on.

The boot number (docs/protocol.md, *Boot number*) lives in the board's `store` as
`boot.txt`: each boot reads it, adds one (1 after 2**30 - 1) and writes it back before the
pump answers a single frame. A missing file is a fresh pump (boot 1); an unreadable one
starts from a random number, so a damaged file never brings an earlier boot's number back.
Without a store (a bare board) every boot draws a random one.
"""
import gc
import sys

from pumpcore.druglib import LibraryError
from pumpcore.settings import Settings

_MICROPYTHON = sys.implementation.name == "micropython"


def drop(name):
    """Forget a boot-only module on MicroPython so that its bytecode returns to the heap."""
    if _MICROPYTHON and name in sys.modules:
        del sys.modules[name]
        import pumpcore
        short = name.rsplit(".", 1)[1]
        if short in pumpcore.__dict__:
            delattr(pumpcore, short)


BOOT_FILE = "boot.txt"
_BOOT_MAX = 0x3FFFFFFF      # boot numbers are 1 .. 2**30 - 1


def _random_boot():
    try:
        import os
        r = os.urandom(4)
        v = (r[0] | (r[1] << 8) | (r[2] << 16) | ((r[3] & 0x3F) << 24))
    except Exception:  # no entropy source: the clock is the best there is
        import time
        v = int(time.time() * 1000) & _BOOT_MAX
    return v if v > 0 else 1


def next_boot(store):
    """This boot's number: the stored one plus one, written back (random when none)."""
    if store is None:
        return _random_boot()   # nothing survives a reboot: a random number is as unique
    prev = 0                    # a fresh pump (no file): its first boot is 1
    if store is not None:
        raw = store.read(BOOT_FILE)
        if raw:
            try:
                prev = int(raw)
            except ValueError:
                prev = -1
            if not 0 <= prev <= _BOOT_MAX:
                prev = -1       # unreadable: a random start, never an earlier number
    if 0 <= prev < _BOOT_MAX:
        n = prev + 1
    elif prev == _BOOT_MAX:
        n = 1
    else:
        n = _random_boot()
    if store is not None:
        store.write(BOOT_FILE, b"%d" % n)
    return n


def build_controller(board):
    """The controller for this board. The drug library is read first, its loader dropped and
    its garbage collected, and only then are the controller's modules imported: the json
    tree and the controller's code are never in the heap together."""
    fault = None
    lib = None
    try:
        from pumpcore import libload
        lib = libload.load(board.LIB_PATH)
    except LibraryError as e:
        fault = b"drug library: " + str(e).encode()
    except MemoryError:
        fault = b"out of memory reading the drug library"
    except Exception as e:  # anything unexpected in the file is a corrupt library too
        fault = b"drug library unreadable: " + str(e).encode()[:40]
    settings = Settings()
    load = getattr(board, "load_settings", None)
    raw = load() if load is not None else None
    if raw is not None:
        why = settings.decode(raw)
        if why is not None and fault is None:
            fault = why
    key = None
    lk = getattr(board, "load_key", None)
    if lk is not None:
        key = lk()
        if key is not None and len(key) < 16:
            key = None
            if fault is None:
                fault = b"key.bin too short"
    drop("pumpcore.libload")
    auth = None
    if key is not None:             # authentication code is loaded only for a provisioned pump
        from pumpcore.auth import Auth
        lc = getattr(board, "load_counter", None)
        ctr = lc() if lc is not None else 0
        auth = Auth(key, ctr, getattr(board, "store_counter", None))
    if settings.auth and key is None and fault is None:
        fault = b"settings require authentication but no key is provisioned"
    gc.collect()
    if lib is not None:
        lib = lib.moved()           # low in the heap, out of the json tree's hole
        gc.collect()
    from pumpcore.controller import Controller, Config
    cfg = Config(board.NL_PER_KSTEP, device_id=board.DEVICE_ID)
    for k in ("batt_low_mv", "batt_depleted_mv"):
        if hasattr(board, k.upper()):
            setattr(cfg, k, getattr(board, k.upper()))
    ctl = Controller(cfg, lib, settings, fault, auth)
    ctl.store_settings = getattr(board, "store_settings", None)
    try:
        ctl.boot = next_boot(getattr(board, "store", None))
    except OSError:                 # not writable: a random number is as unique
        ctl.boot = _random_boot()
    return ctl
