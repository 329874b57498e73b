"""Build the controller from what a board provides at boot: drug library, settings, key and
replay counter. A library or settings record that fails its checks puts the pump in FAULT
(it refuses to infuse and says why); nothing falls back to defaults silently.

Optional board hooks (all may be absent): `load_settings() -> bytes | None`,
`store_settings(bytes)`, `load_key() -> bytes | None`, `load_counter() -> int`,
`store_counter(int)`. Without `load_key` the board has no key and authentication cannot be
turned on.
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
    from pumpcore.controller import Controller, Config
    cfg = Config(board.NL_PER_KSTEP, device_id=board.DEVICE_ID)
    for k in ("batt_low_mv", "batt_depleted_mv"):
        if hasattr(board, k.upper()):
            setattr(cfg, k, getattr(board, k.upper()))
    ctl = Controller(cfg, lib, settings, fault, auth)
    ctl.store_settings = getattr(board, "store_settings", None)
    return ctl
