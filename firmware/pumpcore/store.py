"""Non-volatile storage for the event log and therapy record: a tiny file-store interface.

The event log (`pumpcore.eventlog`) needs five operations on named byte files, and nothing
else: `names()`, `read(name)`, `append(name, data)` (durable when it returns), `remove(name)`
and `write(name, data)` (atomic replace). Two implementations, both portable MicroPython /
CPython:

* `FileStore(root)` — a folder of any VFS. On a Pico that is the internal flash, which
  MicroPython formats as littlefs (copy-on-write: an append or a rename is committed whole
  or not at all when the file is closed). Under the `micropython` simulator it is
  `os.VfsLfs2` mounted on the simulated flash block device of `boards.sim` (`Flash`),
  which can lose power in the middle of any block program or erase. Under CPython it is a
  plain directory (fsync on every append).
* `MemStore()` (`pumpcore.memstore`: the in-process simulator and tests only, so a board
  never loads its class into the heap) — files in RAM. It can cut power after a given
  number of bytes (`cut_after`): the append in progress is *torn* (a prefix reaches the
  store, then `PowerCut` is raised). That is harsher than littlefs, which never tears an
  append; the log format survives both.

Nothing here allocates in the control tick: the log writes at most once per tick in which
something happened, and never from inside `Controller.step`.

`FileStore(root, keep_open=True)` (the Pico board) keeps the segment being appended to open
and commits each append with `flush()` (littlefs `lfs_file_sync`: durable, and atomic like a
close). Opening a littlefs file allocates its object and a 1 KB cache (1,148 B on the rp2
port) — per append, that was the largest block the pump needed once running, and the first
allocation to fail in a small or fragmented heap (measured on the emulated RP2040,
docs/performance.md). Kept open, it is allocated once per segment. Every other open of the
store (a read, a replace: the heartbeat every 10 s, a program file at PROG) needs a second
such object for a moment, and in a fragmented heap the free bytes may be there but not
1,148 of them in one piece. So the store reserves, at boot while the heap is empty, the room
of the segment's file (`_seg_room`, freed just before the first segment opens) and the room
of one transient file (`_spare`), each the buffer of an `io.BytesIO` of the file object's
size and 32 B (open()'s path str): `close()` frees that buffer at once, not at a collection (a
`bytes` spare did, and on the emulated RP2040 a stale pointer to its data in a stack slot
kept it allocated through the collection: the open failed beside it). Each transient open
collects first (so open()'s own small allocations, the path as a new str, find the holes
below, not the freed room), frees the spare, opens; after the close a collection frees the
file object and the spare is taken again (where the file was, or lower); when there was no
room then, the app asks again once boot is over (`reserve()`). Measured on the emulated
RP2040 (docs/performance.md, issue 13): without the segment's own room the first segment
took the transient room for good and no second 1,148-B hole was found for the rest of the run.
Reads are one allocation of the file's exact size (`f.read()` grows its buffer 256 bytes at
a time). Only where a power cut ends the whole interpreter: a simulated cut that leaves the
process alive would leave the handle's finaliser to write after the cut.

`FileStore(root, in_place=True)` (littlefs only: the Pico board and the simulated flash)
replaces an existing file by rewriting it (`open(name, "wb")`): littlefs applies the
truncation and the new bytes together when the file is closed, or not at all, so the
replace is as atomic as the write-and-rename a host filesystem needs, with one metadata
commit instead of two. The heartbeat is replaced every 10 s while infusing: by
write-and-rename that cost 3.6 page programs a replace and a metadata compaction (a 4 KB
erase, 45 ms of stalled CPU on the chip, and the compaction's own work) every 5th replace;
rewritten, 1 program and a compaction every 15th (measured with littlefs under
`micropython`, 4 KB blocks, 256-byte programs). A file that does not exist yet is still
created by write-and-rename (a cut then leaves no half-made file).
"""
import gc
import io
import os

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

_FILE_OBJ = const(1152)     # a littlefs file object with its 1 KB cache on the rp2 port, rounded
_ROOM = const(_FILE_OBJ + 32)  # + the path str open() makes first (2 blocks), if it lands in the room
del const   # compile-time only (each module global is a slot of heap on the board)


def _room():
    """A buffer of _ROOM bytes whose close() frees it at once, or None (no room now)."""
    try:
        # MicroPython: an empty stream of that capacity (the rp2 stubs know only CPython's form)
        return io.BytesIO(_ROOM)  # pyright: ignore[reportArgumentType]
    except TypeError:                       # CPython's BytesIO takes the initial bytes
        return io.BytesIO(bytes(_ROOM))
    except MemoryError:
        return None


class PowerCut(Exception):
    """Raised by a simulated store or flash device when the power fails mid-write."""


class FileStore:
    """Files in one folder of a mounted filesystem (littlefs on flash, or a host directory)."""

    def __init__(self, root, keep_open=False, in_place=False):
        self.root = root
        try:
            os.mkdir(root)
        except OSError:
            pass  # exists
        self._sync = hasattr(os, "fsync")
        self._keep = keep_open
        self._in_place = in_place   # littlefs: replace an existing file by rewriting it
        self._f = None              # keep_open: the file being appended to, and its name
        self._fname = None
        self._spare = None          # keep_open: room for a transient file object, reserved
        self.capacity = None        # bytes of the filesystem, when the board knows it
        self._seg_room = None       # keep_open: the room of the segment file, until it opens
        if keep_open:
            self._seg_room = _room()
        self.reserve()

    def reserve(self):
        """Take the room of one transient file object (keep_open) if it is not held and
        there is room now: after each open, and from the app once boot is over and its
        garbage collected (the boot's last opens may have left no room). The room
        is the buffer of an `io.BytesIO` of the file object's size: closing it frees that
        buffer at once (`vstr_free`), so an open never depends on a collection to find it.
        A `bytes` spare could only be collected, and a stale pointer to its data left in a
        stack slot kept it alive through the collection (seen on the emulated RP2040: the
        spare still allocated at the open's MemoryError)."""
        if self._keep and self._spare is None:
            self._spare = _room()   # None when there is no room now: the next close tries again

    def reserved(self):
        """Bytes of room held for the next file object (0: none held)."""
        return _ROOM if self._spare is not None else 0

    def _open(self, path, mode, seg=False):
        s = self._seg_room if seg else None
        if s is not None:
            self._seg_room = None   # the first segment's room: taken for good
        else:
            s = self._spare
            self._spare = None
        if s is not None:
            gc.collect()            # the garbage below it goes first: open()'s own small
            s.close()               # allocations land there, not in the freed room
        return open(path, mode)

    def _io(self, path, mode, data):
        # one transient file: read whole (data None) or written; closed on return
        f = self._open(path, mode)
        try:
            if data is None:
                n = f.seek(0, 2)
                f.seek(0)
                return f.read(n)    # one allocation of the file's size
            f.write(data)
            if self._sync:          # CPython on a host filesystem
                f.flush()
                os.fsync(f.fileno())
        finally:
            f.close()

    def _transient(self, path, mode, data=None):
        try:
            return self._io(path, mode, data)
        finally:
            # here the closed file is referenced by no frame: a collection frees its room
            if self._keep:
                gc.collect()
            self.reserve()

    def _close(self):
        f = self._f
        if f is not None:
            self._f = self._fname = None
            f.close()

    def _p(self, name):
        return self.root + "/" + name

    def names(self):
        return sorted(os.listdir(self.root))

    def read(self, name):
        if name == self._fname:
            self._close()
        try:
            return self._transient(self._p(name), "rb")
        except OSError:
            return None

    def append(self, name, data):
        if self._keep:
            if self._f is None or name != self._fname:
                self._close()       # (no local keeps the closed one: a collection frees it)
                try:
                    self._f = self._open(self._p(name), "ab", True)
                finally:
                    self.reserve()
                self._fname = name
            f = self._f
            try:
                f.write(data)
                f.flush()           # littlefs: lfs_file_sync, the append is committed
            except OSError:
                self._close()
                raise
            return
        with open(self._p(name), "ab") as f:
            f.write(data)
            if self._sync:  # CPython on a host filesystem; littlefs commits on close
                f.flush()
                os.fsync(f.fileno())

    def write(self, name, data):
        if name == self._fname:
            self._close()
        if self._in_place:
            p = self._p(name)
            try:
                os.stat(p)
            except OSError:
                p = None            # a new file: write-and-rename below
            if p is not None:
                self._transient(p, "wb", data)  # littlefs commits truncation + data on close
                return
        tmp = self._p(name + ".new")
        self._transient(tmp, "wb", data)
        os.rename(tmp, self._p(name))

    def remove(self, name):
        if name == self._fname:
            self._close()
        try:
            os.remove(self._p(name))
        except OSError:
            pass
