"""`MemStore`: the event log's file store in RAM, for the in-process simulator and tests
(the interface and the power-cut model are described in `pumpcore.store`). Apart from
`pumpcore.store` so that a board, which stores on flash, never imports it."""
from pumpcore.store import PowerCut


class MemStore:
    """Files in RAM. `cut_after = n` makes the store lose power after n more bytes:
    the write in progress keeps only its first bytes and `PowerCut` is raised; from then on
    the store is dead (every write raises) until `power_on()`. `nbytes` counts bytes written."""

    def __init__(self):
        self.files = {}
        self.cut_after = -1
        self.dead = False
        self.nbytes = 0
        self.nwrites = 0

    def power_on(self):
        self.cut_after = -1
        self.dead = False

    def names(self):
        return sorted(self.files)

    def read(self, name):
        f = self.files.get(name)
        return bytes(f) if f is not None else None

    def _take(self, n):
        """Bytes of an n-byte write that reach the store before the power fails (n = all)."""
        if self.dead:
            raise PowerCut()
        self.nwrites += 1
        if self.cut_after < 0 or n < self.cut_after:
            if self.cut_after >= 0:
                self.cut_after -= n
            self.nbytes += n
            return n
        k = self.cut_after
        self.nbytes += k
        return k

    def _cut(self):
        self.dead = True
        self.cut_after = -1
        raise PowerCut()

    def append(self, name, data):
        k = self._take(len(data))
        f = self.files.get(name)
        if f is None:
            f = self.files[name] = bytearray()
        if k < len(data):
            f.extend(data[:k])
            self._cut()
        f.extend(data)

    def write(self, name, data):
        # write a temporary file, then an atomic rename (as FileStore does)
        k = self._take(len(data))
        if k < len(data):
            self.files[name + ".new"] = bytearray(data[:k])
            self._cut()
        self.files[name] = bytearray(data)
        self.files.pop(name + ".new", None)

    def remove(self, name):
        if self.dead:
            raise PowerCut()
        self.files.pop(name, None)
