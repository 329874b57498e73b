"""Authentication of therapy-changing commands (docs/protocol.md, *Authentication*).

A pump may hold a per-device key: 32 random bytes written to its filesystem as ``key.bin``
when it is flashed (``infusekit firmware flash``). The host keeps the same key in a *key
store*, one file per device id with mode 0600:

    $INFUSEKIT_KEYS/<device-id>.key          (default ~/.config/infusekit/keys/)
    $INFUSEKIT_KEYS/<device-id>.ctr          last counter this host used (text)

A signed request carries ``ctr=<n>`` and, as its last field, ``mac=<16 hex>``: the first 16
upper-case hex digits of HMAC-SHA256(key, body before " mac="). ``ctr`` must grow with every
command the pump accepts (it keeps the last one across reboots), so the host persists the
counter it used before sending and starts above the one HELLO reports. Keys are never
printed, logged or put in an exception message.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
from pathlib import Path

from host.errors import KeyStoreError

log = logging.getLogger(__name__)

ENV_KEYS = "INFUSEKIT_KEYS"
KEY_BYTES = 32
MAC_HEX = 16
from host._firmware import pumpcore  # noqa: E402

_fw_auth = pumpcore("auth")
CTR_MAX: int = _fw_auth.CTR_MAX          # the largest counter the pump accepts
CTR_WINDOW: int = _fw_auth.CTR_WINDOW    # the pump accepts a ctr at most this far above its last
KEY_FILE = "key.bin"             # name of the key on the board's filesystem
COUNTER_FILE: str = _fw_auth.COUNTER_FILE   # the board's replay counter (reset on provisioning)

# Which commands are signed comes from the firmware's command table (pumpcore.states
# COMMANDS): the guarded ones are signed when the host has the pump's key; the others
# (reads, PAUSE, STOP) never carry a MAC.
from host.statemachine import COMMAND_CLASS, GUARDED_WORDS  # noqa: E402
OPEN_WORDS = frozenset(w for w in COMMAND_CLASS if w not in GUARDED_WORDS)

_DEV_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")


def default_dir() -> Path:
    """``$INFUSEKIT_KEYS`` or ``~/.config/infusekit/keys`` (``$XDG_CONFIG_HOME`` honoured)."""
    env = os.environ.get(ENV_KEYS)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "infusekit" / "keys"


def generate_key() -> bytes:
    """32 bytes from the OS's CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


def mac_hex(key: bytes, body: bytes) -> str:
    """First 16 hex digits (upper case) of HMAC-SHA256(key, body)."""
    return hmac.new(key, body, hashlib.sha256).hexdigest()[:MAC_HEX].upper()


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (never world/group readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class KeyStore:
    """Per-device keys and counters in a directory (created 0700, files 0600)."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.dir = Path(directory).expanduser() if directory else default_dir()
        self._lock = threading.Lock()

    def _path(self, dev: str, suffix: str) -> Path:
        if not _DEV_RE.match(dev):
            raise KeyStoreError(f"device id {dev!r} cannot name a key file")
        return self.dir / f"{dev}{suffix}"

    def key_path(self, dev: str) -> Path:
        return self._path(dev, ".key")

    def has(self, dev: str) -> bool:
        return self.key_path(dev).is_file()

    def save(self, dev: str, key: bytes) -> Path:
        """Store ``key`` for ``dev`` (mode 0600; the counter file is kept: counters only grow)."""
        if len(key) != KEY_BYTES:
            raise KeyStoreError(f"a pump key is {KEY_BYTES} bytes, not {len(key)}")
        path = self.key_path(dev)
        _write_private(path, key)
        return path

    def load(self, dev: str) -> bytes:
        """The key of ``dev``; refuses a file others can read (chmod 600 it)."""
        path = self.key_path(dev)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise KeyStoreError(f"no key for device {dev} in {self.dir} "
                            f"(flash it with `infusekit firmware flash`, or set {ENV_KEYS})") from None
        if st.st_mode & 0o077:
            raise KeyStoreError(f"key file {path} is readable by others; run chmod 600 on it")
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise KeyStoreError(f"key file {path} holds {len(key)} bytes, expected {KEY_BYTES}")
        return key

    def counter(self, dev: str) -> int:
        """The last counter used for ``dev`` (0 when none)."""
        try:
            return int(self._path(dev, ".ctr").read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def set_counter(self, dev: str, value: int) -> None:
        with self._lock:
            if value > self.counter(dev):
                _write_private(self._path(dev, ".ctr"), b"%d\n" % value)


class Signer:
    """Adds ``ctr`` and ``mac`` to requests for one pump.

    The counter starts above both the one this host last used (persisted in the key store,
    when there is one) and the last one the pump accepted (HELLO's ``ctr``), and is saved
    before each signed frame is sent, so a crash never makes the host reuse a counter.
    """

    def __init__(self, key: bytes, store: KeyStore | None = None, dev: str | None = None) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise KeyStoreError(f"a pump key is {KEY_BYTES} bytes")
        self._key = bytes(key)
        self.store = store
        self.dev = dev
        self._lock = threading.Lock()
        self._ctr = store.counter(dev) if store is not None and dev else 0

    def __repr__(self) -> str:            # never show the key
        return f"Signer(dev={self.dev!r}, ctr={self._ctr})"

    @property
    def counter(self) -> int:
        return self._ctr

    def sync(self, pump_ctr: int, *, force: bool = False) -> bool:
        """Never go below the pump's last accepted counter (HELLO ``ctr``).

        HELLO is not signed, so a counter far above this host's own (more than the pump's
        window, CTR_WINDOW) is not adopted unless ``force``: a spoofed HELLO must not make
        the host burn its counter. Returns whether the counter was adopted. A host with no
        counter yet (0) adopts the pump's."""
        pump_ctr = int(pump_ctr)
        with self._lock:
            if pump_ctr <= self._ctr:
                return True
            if self._ctr > 0 and pump_ctr - self._ctr > CTR_WINDOW and not force:
                log.warning("pump %s reports counter %d, more than %d above this host's %d: "
                            "not adopted (a HELLO is not signed); sync(force=True) after "
                            "checking the link", self.dev, pump_ctr, CTR_WINDOW, self._ctr)
                return False
            self._ctr = pump_ctr
            return True

    def next_counter(self) -> int:
        with self._lock:
            if self._ctr >= CTR_MAX:
                raise KeyStoreError("authentication counter exhausted; re-provision the pump key")
            self._ctr += 1
            ctr = self._ctr
        if self.store is not None and self.dev:
            self.store.set_counter(self.dev, ctr)
        return ctr

    def mac(self, body: bytes) -> str:
        return mac_hex(self._key, body)

    def verify(self, body: bytes, mac: str) -> bool:
        """For fakes and tests: does ``mac`` sign ``body``?"""
        return hmac.compare_digest(self.mac(body), mac)
