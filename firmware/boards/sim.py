"""The simulated board: the pump's hardware seam driven by the HIL simulator in virtual time.

The simulator (hil_sim, CPython) owns the plant; this board only carries its readings in
and the controller's outputs back, in *slices* of virtual time. Under CPython the simulator
calls `Harness.slice()` directly; under the `micropython` interpreter it talks to
`serve_stdio()` over pipes with the same arguments, one text line per slice:

  -> S t0 step n press enc flags batt nrx      then nrx lines "k HEX"
  <- R enable alarm s0,s1,...,s(n-1) ntx        then ntx lines "k HEX" (or "k HEX d": sent
                                                at a telemetry wake-up d ms after call k)
  -> Q                                          exit

Calls are at t0 + k*step (virtual ms; the board wraps them at 2**30 like an RP2040's
ticks_ms). Sensor values are held over the slice. Bytes "k HEX" reach the UART before call k.

Non-volatile storage (the event log, `pumpcore.eventlog`): under `micropython` the board
mounts `os.VfsLfs2` on `Flash`, a simulated NOR flash block device that can lose power in
the middle of any program or erase; its bytes live in RAM, or in an image file named by the
environment variable INFUSEKIT_FLASH (or `serve_stdio(flash=...)`) so that they survive a
restart of the process, like a real pump's flash survives a power cut. Under CPython the
board keeps the same log in a `pumpcore.memstore.MemStore`; pass the same store object to a new
`Harness` to reboot the pump with its flash intact.
"""
import os
import sys

_vfs = os  # os.VfsLfs2/mount/umount exist on MicroPython ports with littlefs only

try:
    import binascii
except ImportError:
    import ubinascii as binascii  # type: ignore

from pumpcore.app import App
from pumpcore.memstore import MemStore
from pumpcore.store import FileStore, PowerCut
from pumpcore.ticks import ticks_diff

NL_PER_KSTEP = 217078          # nominal 50 mL syringe: 26.6 mm bore, 1.25 mm lead, 3200 µsteps/rev
_TMASK = 0x3FFFFFFF
FLAG_DOOR_OPEN = 1
FLAG_AIR = 2
FLAG_END_STOP = 4          # plunger at the end stop: syringe empty
FLAG_ON_BATTERY = 8        # mains lost, running on the battery
STDIO_COMMAND = "import sys; sys.path.insert(0, '.'); from boards import sim; sim.serve_stdio('druglib.json')"


class Flash:
    """Simulated NOR flash for `os.VfsLfs2` (the extended block-device interface).

    Erase sets a block to 0xFF; programming can only clear bits (new = old AND data), as on
    real NOR flash. `cut_after(ops, keep)` loses power at the ops-th program or erase from
    now: that operation is torn (only its first `keep` bytes, modulo its length + 1, land),
    `PowerCut` is raised, and the device is dead (writes do nothing) until `power_on()`. With `path`, the bytes
    are also kept in that image file (created erased when missing). After a cut, `reboot()`
    gives a new device on the same bytes; this one stays dead, so that nothing left over
    from before the cut (an open file being finalised) can reach the flash again."""

    def __init__(self, nblocks=64, block_size=4096, path=None, data=None):
        self.bs = block_size
        self.n = nblocks
        self.data = data if data is not None else bytearray(b"\xff" * (nblocks * block_size))
        self.ops = 0
        self._cut = -1
        self._keep = 0
        self.dead = False
        self._f = None
        if path:
            try:
                with open(path, "rb") as f:
                    img = f.read()
                if len(img) == len(self.data):
                    self.data[:] = img
                else:
                    img = None
            except OSError:
                img = None
            if img is None:
                with open(path, "wb") as f:
                    f.write(self.data)
            self._f = open(path, "r+b")

    def cut_after(self, ops, keep=0):
        self._cut = ops
        self._keep = keep

    def power_on(self):
        self._cut = -1
        self.dead = False

    def reboot(self):
        """The same flash after a power cycle: a new live device on these bytes."""
        self.dead = True
        f = Flash(self.n, self.bs, data=self.data)
        f._f = self._f
        self._f = None
        return f

    def _op(self, a, src, n):
        """Write src[:n] at a (src None: erase); tear it if the power is cut now."""
        if self.dead:
            return  # no power: nothing reaches the flash (and nothing to raise in a finaliser)
        self.ops += 1
        cut = False
        if self._cut >= 0:
            self._cut -= 1
            if self._cut < 0:
                cut = True
                n = self._keep % (n + 1)
        d = self.data
        if src is None:
            for i in range(a, a + n):
                d[i] = 0xFF
        else:
            for i in range(n):
                d[a + i] &= src[i]
        if self._f is not None and n:
            self._f.seek(a)
            self._f.write(memoryview(d)[a:a + n])
            self._f.flush()
        if cut:
            self.dead = True
            raise PowerCut()

    def readblocks(self, block, buf, off=0):
        # no allocation: littlefs may read while a file object is being finalised by the GC
        a = block * self.bs + off
        d = self.data
        for i in range(len(buf)):
            buf[i] = d[a + i]

    def writeblocks(self, block, buf, off=None):
        if off is None:          # simple interface: erase, then program whole blocks
            for k in range(len(buf) // self.bs):
                self._op((block + k) * self.bs, None, self.bs)
            off = 0
        self._op(block * self.bs + off, buf, len(buf))

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        if op == 6:
            self._op(arg * self.bs, None, self.bs)
            return 0
        return 0

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None


MOUNT = "/flash"


def mount_flash(flash, mount=MOUNT):
    """Mount littlefs on `flash` (formatting it when it holds no filesystem) and return a
    FileStore on it. Any filesystem already mounted there is unmounted first (a reboot)."""
    v = _vfs
    try:
        v.umount(mount)  # type: ignore[attr-defined]
    except OSError:
        pass
    try:
        fs = v.VfsLfs2(flash)  # type: ignore[attr-defined]
    except OSError:
        v.VfsLfs2.mkfs(flash)  # type: ignore[attr-defined]
        fs = v.VfsLfs2(flash)  # type: ignore[attr-defined]
    v.mount(fs, mount)  # type: ignore[attr-defined]
    st = FileStore(mount + "/log", in_place=True)      # littlefs, as on the Pico
    st.capacity = flash.n * flash.bs      # the log's byte budget follows the flash (app)
    return st


def default_store(flash_path=None):
    """The simulated pump's flash: littlefs on `Flash` under micropython, RAM under CPython."""
    if hasattr(os, "VfsLfs2"):
        if flash_path is None and hasattr(os, "getenv"):
            flash_path = os.getenv("INFUSEKIT_FLASH")
        return mount_flash(Flash(path=flash_path))
    return MemStore()


class Board:
    NL_PER_KSTEP = NL_PER_KSTEP
    DEVICE_ID = b"SIM-0001"

    def __init__(self, lib_path="druglib.json", store=None):
        self.LIB_PATH = lib_path
        self.store = store
        self.now = 0
        self.press = 0
        self.enc = 0
        self.flags = 0
        self.batt = 4000
        self._rx = b""
        self._rx_pos = 0
        self.tx = []            # bytes written during the current call
        self.steps = 0
        self.enable = 0
        self.alarm = 0

    # --- board interface
    def ticks_ms(self):
        return self.now

    def read_inputs(self, inp):
        inp.pressure_mmhg = self.press
        inp.encoder = self.enc
        inp.door_open = bool(self.flags & FLAG_DOOR_OPEN)
        inp.air = bool(self.flags & FLAG_AIR)
        inp.end_stop = bool(self.flags & FLAG_END_STOP)
        inp.on_battery = bool(self.flags & FLAG_ON_BATTERY)
        inp.battery_mv = self.batt

    def uart_read(self, buf):
        n = len(self._rx) - self._rx_pos
        if n <= 0:
            return 0
        if n > len(buf):
            n = len(buf)
        p = self._rx_pos
        for i in range(n):
            buf[i] = self._rx[p + i]
        self._rx_pos = p + n
        return n

    def uart_write(self, buf, n):
        self.tx.append(bytes(buf[:n]))

    def drive(self, out):
        self.steps = out.steps
        self.enable = 1 if out.enable else 0
        self.alarm = out.alarm_prio
        self.audio = 1 if out.audio else 0

    # --- non-volatile settings, key and replay counter (pumpcore.boot hooks). With a store
    # they live on the board's simulated flash as on a Pico (settings.txt, ctr.txt, key.bin),
    # so power cuts cover authentication too. A test or the simulator may set `settings_raw`,
    # `key`, `counter` before building the App. A key may also come from the environment
    # (INFUSEKIT_SIM_KEY, hex: how a test provisions the pump under the `micropython`
    # runtime). A provisioned key is written to key.bin (the flash keeps it from then on);
    # the counter is ctr.txt (it survives a reboot; missing 0, unreadable refuses).
    settings_raw = None
    key = None
    counter = 0

    def load_settings(self):
        if self.settings_raw is None and self.store is not None:
            return self.store.read("settings.txt")       # kept across reboots, like the Pico
        return self.settings_raw

    def store_settings(self, raw):
        self.settings_raw = raw
        if self.store is not None:
            self.store.write("settings.txt", raw)

    def _provisioned_key(self):
        if self.key is not None:
            return self.key
        if hasattr(os, "getenv"):
            hx = os.getenv("INFUSEKIT_SIM_KEY")
            if hx:
                return binascii.unhexlify(hx)
        return None

    def load_key(self):
        k = self._provisioned_key()
        st = self.store
        if st is None:
            return k
        have = st.read("key.bin")
        if k is not None and k != have:
            st.write("key.bin", k)        # provisioning (a flash) writes the key
            return k
        return have

    @property
    def log_key(self):
        """The event log's chain key: the device key, as on the Pico (pumpcore.app)."""
        return self.load_key()

    def load_counter(self):
        if self.store is not None and self.counter == 0:
            from pumpcore.auth import parse_counter, COUNTER_FILE
            return parse_counter(self.store.read(COUNTER_FILE))
        return self.counter

    def store_counter(self, n):
        self.counter = n
        if self.store is not None:
            from pumpcore.auth import COUNTER_FILE
            self.store.write(COUNTER_FILE, b"%d" % n)

    def feed_watchdog(self):
        pass

    def wait_next(self, deadline):
        pass


class Harness:
    """A simulated board plus the firmware app, stepped one slice at a time."""

    def __init__(self, lib_path="druglib.json", store=None):
        """`store`: the pump's flash (a pumpcore.store object); None = a fresh default one.
        Pass the previous harness's `store` to reboot the pump with its flash intact."""
        self.store = store if store is not None else default_store()
        self.board = Board(lib_path, self.store)
        self.app = App(self.board)

    def slice(self, t0, step, n, press, enc, flags, batt, rx):
        """Calls at t0 + k*step; returns (steps, enable, alarm, tx), tx = [(k, bytes)] sent
        during call k, or [(k + d/step, bytes)] for a telemetry frame the board woke for d ms
        after call k (`_run`)."""
        steps, en, al, tx = self._run(t0, step, n, press, enc, flags, batt, rx)
        return steps, en, al, [((k + d / step) if d else k, c) for k, d, c in tx]

    def _run(self, t0, step, n, press, enc, flags, batt, rx):
        b = self.board
        b.press = press
        b.enc = enc
        b.flags = flags
        b.batt = batt
        steps = [0] * n
        tx = []
        j = 0
        for k in range(n):
            while j < len(rx) and rx[j][0] == k:
                # pending bytes not yet read stay ahead of the new ones
                b._rx = b._rx[b._rx_pos:] + rx[j][1]
                b._rx_pos = 0
                j += 1
            b.now = (t0 + k * step) & _TMASK
            b.tx.clear()            # reused: the board makes no garbage list per tick
            self.app.tick()
            s = b.steps
            # a burst larger than one UART read drains at the same instant
            while len(b._rx) - b._rx_pos > 0:
                self.app.tick()
                s += b.steps
            for chunk in b.tx:
                tx.append((k, 0, chunk))
            # telemetry due before the next call: the board wakes for it (pumpcore.app.run,
            # Controller.wake_at), so its frames go out at their own times in virtual time
            t = b.now
            ctl = self.app.ctl
            while ctl.tlm_period:
                w = ctl.wake_at()
                d = ticks_diff(w, t)
                if d <= 0 or d >= step or ticks_diff(ctl._next_ctrl, w) <= 0:
                    break                   # not before the next call, or a control tick
                b.now = w
                b.tx.clear()
                self.app.tick()
                s += b.steps
                for chunk in b.tx:
                    tx.append((k, d, chunk))
            steps[k] = s
        return steps, b.enable, b.alarm, tx


def serve_stdio(lib_path="druglib.json", flash=None):
    """Serve the slice protocol on stdin/stdout (the `micropython` runtime of the simulator).
    `flash`: image file of the pump's flash (default: $INFUSEKIT_FLASH, else RAM)."""
    h = Harness(lib_path, default_store(flash))
    from pumpcore import VERSION
    out = sys.stdout
    inp = sys.stdin
    out.write("READY " + VERSION + "\n")
    while True:
        line = inp.readline()
        if not line or line[0] == "Q":
            return
        p = line.split()
        if p[0] != "S":
            out.write("E bad command\n")
            continue
        t0, step, n, press, enc, flags, batt, nrx = [int(x) for x in p[1:9]]
        rx = []
        for _ in range(nrx):
            k, hx = inp.readline().split()
            rx.append((int(k), binascii.unhexlify(hx)))
        steps, en, al, tx = h._run(t0, step, n, press, enc, flags, batt, rx)
        out.write("R %d %d %s %d\n" % (en, al, ",".join([str(s) for s in steps]), len(tx)))
        for k, d, chunk in tx:
            if d:
                out.write("%d %s %d\n" % (k, binascii.hexlify(chunk).decode(), d))
            else:
                out.write("%d %s\n" % (k, binascii.hexlify(chunk).decode()))
        if hasattr(out, "flush"):
            out.flush()
