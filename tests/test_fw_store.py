"""pumpcore.store.FileStore with keep_open (the Pico board): one open per log segment, every
append committed (flushed) before it returns, and the handle closed before anything else
touches the file. Regression for the 1,148-byte littlefs file object that every append
allocated on the RP2040 (the first allocation to fail in a small heap)."""
import builtins

import pytest

from pumpcore.store import FileStore


@pytest.mark.req("REQ-RP2-05")
def test_keep_open_appends_open_each_segment_once_and_commit_every_append(tmp_path, monkeypatch):
    opened = []
    real_open = builtins.open

    def counting_open(path, mode="r", *a, **k):
        opened.append((str(path).rsplit("/", 1)[-1], mode))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", counting_open)
    st = FileStore(str(tmp_path / "log"), keep_open=True)
    assert st.reserved() >= 1148 and st._seg_room is not None   # the rooms of the segment file and of a transient one, reserved while the heap is empty
    for i in range(50):
        st.append("s0", b"rec%d\n" % i)
        # committed at once: another reader sees it while the handle stays open
        with real_open(tmp_path / "log" / "s0", "rb") as f:
            assert f.read().endswith(b"rec%d\n" % i)
    # one open for the segment; the reserved room is taken again for the next transient open
    assert opened == [("s0", "ab")] and st.reserved() >= 1148 and st._seg_room is None
    st.append("s1", b"x")                    # next segment: the old handle is closed first
    assert st._fname == "s1" and opened[-1] == ("s1", "ab")
    assert st.read("s1") == b"x" and st._f is None     # read closes, then reads
    st.append("s1", b"y")
    st.remove("s1")
    assert st._f is None and "s1" not in st.names()
    st.append("s2", b"a")
    st.write("s2", b"whole")
    assert st.read("s2") == b"whole" and st.read("s0").count(b"\n") == 50


@pytest.mark.req("REQ-RP2-05")
def test_keep_open_store_frees_its_reserved_room_for_every_transient_open(tmp_path, monkeypatch):
    """Reads and replaces (the heartbeat, a program file) need a second file object while
    the segment is open: the reserved room is freed just before each such open (closing its
    BytesIO frees its buffer at once, no collection needed) and taken again after the close;
    the segment file has a room of its own, reserved at boot."""
    real_open = builtins.open
    st = FileStore(str(tmp_path / "log"), keep_open=True, in_place=True)
    held = []

    def watching_open(path, mode="r", *a, **k):
        held.append((str(path).rsplit("/", 1)[-1], mode, st._spare is not None,
                     st._seg_room is not None))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", watching_open)
    st.append("s0", b"rec\n")
    st.write("hb", b"one")           # new file: write-and-rename
    st.write("hb", b"two")           # existing: rewritten in place
    assert st.read("hb") == b"two" and st.read("nothing") is None
    assert st.read("s0") == b"rec\n"  # the segment itself: closed, then read
    assert [h[:2] for h in held] == [("s0", "ab"), ("hb.new", "wb"), ("hb", "wb"), ("hb", "rb"),
                                     ("nothing", "rb"), ("s0", "rb")]
    # the first segment opens in the segment's own room (reserved at boot, freed just before
    # and never taken again: the open segment holds it); the transient room stays held then
    assert held[0][2:] == (True, False)
    assert not any(h[2] or h[3] for h in held[1:])     # every transient open: its room freed
    assert st.reserved() >= 1148                       # and held again afterwards


def test_without_keep_open_nothing_stays_open(tmp_path):
    st = FileStore(str(tmp_path / "log"))
    st.append("s0", b"a")
    st.append("s0", b"b")
    assert st._f is None and st._spare is None and st.read("s0") == b"ab"


_ATOMIC = r"""
import sys
sys.path.insert(0, '.')
import vfs
from boards import sim
from pumpcore.store import FileStore, PowerCut
old = b'old heartbeat ' * 7
new = b'NEW ' * 30
cuts = 0
for k, keep in [(k, keep) for k in range(6) for keep in (0, 1, 37, 128, 255, 4095)]:
    f = sim.Flash(nblocks=16)
    vfs.VfsLfs2.mkfs(f, progsize=256)
    vfs.mount(vfs.VfsLfs2(f, progsize=256), '/fl')
    st = FileStore('/fl/log', in_place=True)
    st.write('hb', old)
    st.write('hb', old)         # the second write of an existing file: in place
    f.cut_after(k, keep=keep)
    done = False
    try:
        st.write('hb', new)
        done = True
    except (PowerCut, OSError):
        cuts += 1
    vfs.umount('/fl')
    g = f.reboot()
    vfs.mount(vfs.VfsLfs2(g, progsize=256), '/fl')
    got = FileStore('/fl/log').read('hb')
    vfs.umount('/fl')
    assert got in (old, new), (k, got)
    if done:
        assert got == new
print('cuts', cuts, 'names ok')
"""


@pytest.mark.micropython
@pytest.mark.req("REQ-LOG-05")
def test_in_place_replace_on_littlefs_is_whole_or_not_at_all_at_every_cut():
    """`FileStore(in_place=True)` rewrites an existing file (the heartbeat) instead of
    write-and-rename: a power cut at every flash program or erase of the rewrite leaves the
    old bytes or the new ones, never a mix or an empty file (real littlefs under
    `micropython`, on boards.sim's NOR flash)."""
    import subprocess
    from conftest import FIRMWARE, micropython_exe
    r = subprocess.run([micropython_exe(), "-X", "heapsize=4M", "-c", _ATOMIC], cwd=str(FIRMWARE),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert int(r.stdout.split()[1]) >= 1, r.stdout     # at least one write was cut
