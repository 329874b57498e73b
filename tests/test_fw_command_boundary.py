"""The command layer changes the controller only through its verbs (REQ-SW-06,
docs/firmware.md "Commands and the controller").

`pumpcore/commands.py` may write on the controller only the request/reply layer's own
fields: `refused`, `retried`, `last_rx`, the retry cache (`_last_reply`, `_last_req` and their
lengths), `auth_refused`, and the auth check's `pending` flag. Everything a request changes
(segments, rates, KVO, bolus, alarms, settings) goes through a `Controller` verb, which owns
the invariants of those writes. Two oracles: the source itself (every attribute, subscript
and augmented store, `setattr` and `delattr` on the controller, on anything reached from it,
on an alias of it or a helper's parameter bound to it), and a CPython run of every command
word with the controller's (and its parts') ``__setattr__`` recording each write made from a
frame of commands.py.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from conftest import FIRMWARE

pytestmark = pytest.mark.req("REQ-SW-06")

COMMANDS = FIRMWARE / "pumpcore" / "commands.py"

# the request/reply layer's own state, kept on the controller to save a heap object
ALLOWED = {
    "ctl.refused", "ctl.retried", "ctl.last_rx", "ctl.auth_refused",
    "ctl._last_reply[]", "ctl._last_reply_len", "ctl._last_req[]", "ctl._last_req_len",
    "ctl.auth.pending",             # a verified frame's counter, dropped unless it committed
}


# ------------------------------------------------------------------ the source
def _paths(node, env):
    """{'ctl.a.b[]', ...} for an expression rooted at the controller (through aliases and
    parameters bound to it), else an empty set."""
    parts = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append("." + node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript):
            parts.append("[]")
            node = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "getattr" and len(node.args) >= 2:
            name = node.args[1]
            parts.append("." + (name.value if isinstance(name, ast.Constant) else "?"))
            node = node.args[0]
        elif isinstance(node, ast.Name):
            tail = "".join(reversed(parts))
            return {root + tail for root in env.get(node.id, ())}
        else:
            return set()


def _bind(target, value, env):
    """Aliases: ``a = ctl.auth``, ``a, b = ctl.x, ctl.y`` (a rebinding to something else
    ends the alias)."""
    if isinstance(target, ast.Name):
        p = _paths(value, env) if value is not None else set()
        if p:
            env[target.id] = p
        else:
            env.pop(target.id, None)
    elif isinstance(target, (ast.Tuple, ast.List)):
        vals = value.elts if isinstance(value, (ast.Tuple, ast.List)) and \
            len(value.elts) == len(target.elts) else [None] * len(target.elts)
        for t, v in zip(target.elts, vals):
            _bind(t, v, env)


def controller_writes(source: str, ctl_param: str = "ctl") -> list[tuple[int, str, str]]:
    """Every write on the controller in ``source``: (line, 'ctl.field', how)."""
    tree = ast.parse(source)
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    # which parameters of which function are the controller or a part of it (a helper
    # called with ``ctl`` or ``ctl.alarms``): to a fixed point over the module's calls
    params: dict[str, dict[str, set[str]]] = {
        name: ({ctl_param: {"ctl"}} if ctl_param in [a.arg for a in f.args.args] else {})
        for name, f in funcs.items()}
    found: set[tuple[int, str, str]] = set()

    def add(line, paths, how):
        for p in paths:
            found.add((line, p, how))
    changed = True
    while changed:
        changed = False
        for name, f in funcs.items():
            env = {k: set(v) for k, v in params[name].items()}
            for node in sorted((n for n in ast.walk(f) if hasattr(n, "lineno")),
                               key=lambda n: (n.lineno, n.col_offset)):
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if not isinstance(t, (ast.Name, ast.Tuple, ast.List)):
                            add(node.lineno, _paths(t, env), "store")
                    for t in node.targets:
                        _bind(t, node.value, env)
                elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                    if not isinstance(node.target, ast.Name):
                        add(node.lineno, _paths(node.target, env), "augmented store")
                    elif isinstance(node, ast.AnnAssign):
                        _bind(node.target, node.value, env)
                elif isinstance(node, ast.Delete):
                    for t in node.targets:
                        add(node.lineno, _paths(t, env), "del")
                elif isinstance(node, ast.NamedExpr):
                    _bind(node.target, node.value, env)
                elif isinstance(node, ast.For) and isinstance(node.target, ast.Name):
                    p = _paths(node.iter, env)           # for s in ctl.segs: s is a part
                    if p:
                        env[node.target.id] = {x + "[]" for x in p}
                    else:
                        env.pop(node.target.id, None)
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                    fn = node.func.id
                    if fn in ("setattr", "delattr") and node.args:
                        attr = node.args[1] if len(node.args) > 1 else None
                        field = attr.value if isinstance(attr, ast.Constant) else "?"
                        add(node.lineno, {p + "." + field for p in _paths(node.args[0], env)},
                            fn)
                    elif fn in funcs:
                        callee = funcs[fn].args.args
                        for i, a in enumerate(node.args[:len(callee)]):
                            known = params[fn].setdefault(callee[i].arg, set())
                            new = _paths(a, env) - known
                            if new:
                                known |= new
                                changed = True
    return sorted(found)


def _unexpected(writes, allowed):
    return [w for w in writes if w[1] not in allowed]


def test_commands_py_writes_only_the_request_layers_own_fields():
    writes = controller_writes(COMMANDS.read_text())
    bad = _unexpected(writes, ALLOWED)
    assert not bad, ("commands.py writes controller state a verb should own (line, field, "
                     "how): %s" % bad)
    # the allowed set is what the file writes, not a wish list: a field no longer written
    # leaves the list (a stale entry would let a later write in unseen)
    gone = ALLOWED - {w[1] for w in writes}
    assert not gone, f"no longer written by commands.py: remove {sorted(gone)} from ALLOWED*"


@pytest.mark.parametrize("handler, field", [
    ("    ctl.rate = v\n", "ctl.rate"),
    ("    ctl.seg_rate[0] = v\n", "ctl.seg_rate[]"),
    ("    ctl.kvo_ul_h += v\n", "ctl.kvo_ul_h"),
    ("    setattr(ctl, 'vtbi_nl', v)\n", "ctl.vtbi_nl"),
    ("    o = ctl.occ\n    o.limit = v\n", "ctl.occ.limit"),
    ("    _helper(ctl.alarms, v)\n", "ctl.alarms.act"),
    ("    a, b = ctl.loop, 0\n    a.rate = v\n", "ctl.loop.rate"),
])
def test_the_source_oracle_finds_a_handler_writing_controller_state(handler, field):
    """A handler that writes ``ctl.rate = …`` (or through an alias, a helper, setattr) is
    found; a rebound name is not a false alarm."""
    src = COMMANDS.read_text() + (
        "\n\ndef _helper(al, v):\n    al.act = v\n"
        "\n\ndef _titrate_bad(ctl, f, rid):\n    v = 5\n" + handler +
        "    a = 0\n    a.x = 1\n")
    bad = _unexpected(controller_writes(src), ALLOWED)
    assert [w[1] for w in bad] == [field], bad


# ------------------------------------------------------------------ a run under CPython
def _sequence(r):
    """Every command word, accepted and refused, through a door alarm and its ACK, a bolus,
    a titration, vitals, settings, a retried frame and a bad CRC."""
    from fwkit import crc_frame
    r.cmd("HELLO")
    r.cmd("STATUS")
    r.cmd("CFG", "hb_ms=0")
    r.cmd("SETTINGS")
    r.cmd("LIB")
    r.cmd("DRUG", "i=0")
    r.cmd("TLM", "period_ms=1000")
    r.cmd("TLM", "period_ms=0")
    r.cmd("STEP", "i=0 rate_ul_h=5000 vol_nl=1000")
    r.cmd("PROG", "rate_ul_h=2000000")                       # refused: out of range
    assert b" OK" in r.cmd("PROG", "rate_ul_h=600000 vtbi_nl=9000000 kvo_ul_h=1000")
    assert b" OK" in r.cmd("START")
    r.run(500)
    r.cmd("TITRATE", "rate_ul_h=300000")
    r.cmd("BOLUS", "vol_nl=100000 rate_ul_h=600000")
    r.run(500)
    r.cmd("VITALS", "sbp=120 dbp=80 hr=70 spo2=98")
    r.cmd("PAUSE")
    r.cmd("RESUME")
    r.run(200)
    r.inp.door_open = True
    r.run(500)
    r.cmd("SILENCE")
    r.cmd("ACK")                                              # refused: the door is open
    r.inp.door_open = False
    r.run(200)
    r.cmd("ACK")
    r.cmd("STANDBY")
    r.cmd("LOG", "n=3")
    r.cmd("HB")
    again = crc_frame("900 STATUS")
    r.send(again, crc=False)
    r.send(again, crc=False)                                  # a retry: the cached reply
    r.send(b"901 STATUS*0000\n", crc=False)                   # a bad CRC
    r.send("902 NOSUCH")
    r.cmd("STOP")


def _record_writes(monkeypatch, r):
    """Patch ``__setattr__`` of the controller's class and of the classes of its parts
    (pumpcore objects it holds) to record (class, field) for every write from commands.py."""
    writes: list[tuple[str, str]] = []
    here = str(COMMANDS)
    owners = {id(r.ctl): "ctl"}
    for k, v in vars(r.ctl).items():
        if type(v).__module__.startswith("pumpcore"):
            owners.setdefault(id(v), f"ctl.{k}")
    classes = {type(r.ctl)} | {type(v) for v in vars(r.ctl).values()
                                if type(v).__module__.startswith("pumpcore")}
    for cls in classes:
        base = cls.__setattr__

        def spy(self, name, value, _base=base):
            if sys._getframe(1).f_code.co_filename == here and id(self) in owners:
                writes.append(f"{owners[id(self)]}.{name}")
            _base(self, name, value)
        monkeypatch.setattr(cls, "__setattr__", spy)
    return writes


def test_a_run_of_every_command_writes_only_the_request_layers_fields(monkeypatch):
    sys.path.insert(0, str(Path(__file__).parent / "fw"))
    from fwkit import Rig
    r = Rig()
    writes = _record_writes(monkeypatch, r)
    _sequence(r)
    seen = set(writes)
    assert seen - ALLOWED == set(), seen
    # the spy sees what it should: the fields every request writes (ACK's alarm conditions are
    # the controller's `acknowledge()` now: not a write from commands.py)
    assert {"ctl.refused", "ctl.last_rx", "ctl.retried", "ctl._last_reply_len"} <= seen, seen
    assert "ctl.alarms.cond" not in seen, seen


def test_signed_requests_write_only_the_auth_fields(monkeypatch):
    """Authentication required: a signed PROG and START (committed), a replayed counter and a
    wrong MAC (refused: auth_refused, the pending counter dropped)."""
    sys.path.insert(0, str(Path(__file__).parent / "fw"))
    from fwkit import Rig, crc_frame
    from pumpcore.auth import Auth, mac16
    from pumpcore.settings import Settings
    key = b"0123456789abcdef0123456789abcdef"
    settings = Settings()
    settings.auth = 1
    r = Rig(settings=settings, auth=Auth(key, 0))
    assert r.ctl.auth.required
    writes = _record_writes(monkeypatch, r)

    def signed(n, word, ctr, good=True):
        b = ("%d %s boot=%d" % (n, word, r.ctl.boot) + " ctr=%d" % ctr).encode()
        mac = mac16(key, b) if good else b"0" * 16
        return r.send(crc_frame(b + b" mac=" + mac), crc=False)
    assert b"1 OK" in signed(1, "PROG rate_ul_h=600000 vtbi_nl=9000000", 1)
    assert b"2 OK" in signed(2, "START", 2)
    assert b"3 ER AUTH" in signed(3, "PAUSE", 2)           # PAUSE needs none; a replay is refused
    assert b"4 ER AUTH" in signed(4, "TITRATE rate_ul_h=300000", 5, good=False)
    assert r.ctl.auth.counter == 2 and r.ctl.auth_refused == 2
    seen = set(writes)
    assert seen - ALLOWED == set(), seen
    assert {"ctl.auth_refused", "ctl.auth.pending"} <= seen, seen


def test_the_run_oracle_sees_a_handler_writing_controller_state(monkeypatch):
    """A reply helper of commands.py that also writes ``ctl.rate`` (PAUSE's reply) is
    caught at run time."""
    sys.path.insert(0, str(Path(__file__).parent / "fw"))
    from fwkit import Rig
    from pumpcore import commands
    real = commands._reply_state
    # compiled as if it were in commands.py: the spy judges by the writing frame's file
    code = compile("def _reply_state(ctl, rid):\n    ctl.rate = 0\n    real(ctl, rid)\n",
                   str(COMMANDS), "exec")
    ns = {"real": real}
    exec(code, ns)
    monkeypatch.setattr(commands, "_reply_state", ns["_reply_state"])
    r = Rig()
    writes = _record_writes(monkeypatch, r)
    r.cmd("PROG", "rate_ul_h=600000 vtbi_nl=9000000")
    r.cmd("START")
    assert b" OK" in r.cmd("PAUSE")
    assert "ctl.rate" in set(writes) - ALLOWED, writes
