"""The host library speaks protocol v1: it adds `boot` to guarded requests (and signs exactly
the guarded ones), recovers from ER BOOT by re-reading the pump without re-sending, and does
not let a spoofed HELLO counter burn its own."""
import pytest

from host import Pump
from host.auth import CTR_WINDOW, KeyStore, Signer, generate_key
from host.errors import PumpRefused
from host_fake import FakePump


@pytest.mark.req("REQ-COM-08")
def test_guarded_requests_carry_the_boot_and_er_boot_rereads_without_resending():
    fake = FakePump()
    try:
        with Pump.open(fake.path, timeout=0.3) as p:
            assert p.info.boot == fake.boots
            p.program(rate=10, vtbi=5)
            prog = fake.lines_with("PROG")[0]
            assert b" boot=%d" % fake.boots in prog
            assert b"boot=" not in fake.lines_with("STATUS")[-1]
            fake.reboot()                       # the pump rebooted behind the host's back
            n_start = len(fake.lines_with("START"))
            with pytest.raises(PumpRefused) as e:
                p.start()
            assert e.value.code == "BOOT"
            assert len(fake.lines_with("START")) == n_start + 1      # sent once, not again
            assert p.info.boot == fake.boots                          # re-read: HELLO
            assert fake.lines_with("STATUS") and p.state == "IDLE"    # and STATUS
            p.program(rate=10, vtbi=5)                                 # the host decides again
            assert p.start() == "RUNNING"
    finally:
        fake.close()


@pytest.mark.req("REQ-SEC-06")
def test_the_host_signs_exactly_the_guarded_commands():
    key = generate_key()
    fake = FakePump(key=key, auth=True)
    try:
        with Pump.open(fake.path, timeout=0.3, key=key) as p:
            p.program(rate=10, vtbi=5)
            p.start()
            p.pause()
            p.silence()
            p.stop()
        assert b" mac=" in fake.lines_with("PROG")[0] and b" mac=" in fake.lines_with("SILENCE")[0]
        assert b" mac=" not in fake.lines_with("PAUSE")[0]
        assert b" mac=" not in fake.lines_with("STOP")[0]
    finally:
        fake.close()


@pytest.mark.req("REQ-SEC-08")
def test_a_spoofed_hello_counter_does_not_burn_the_hosts(tmp_path):
    store = KeyStore(tmp_path)
    key = generate_key()
    store.save("P1", key)
    s = Signer(key, store, "P1")
    assert s.sync(41) and s.next_counter() == 42           # a fresh host adopts the pump's
    assert not s.sync(999_999_999)                         # a spoofed HELLO: not adopted
    assert s.next_counter() == 43 and store.counter("P1") == 43
    assert s.sync(43 + CTR_WINDOW)                         # within the window: adopted
    assert s.sync(10**9 - 1, force=True)                   # a person checked the link
