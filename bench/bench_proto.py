"""Protocol figures (issue 11) under the real `micropython` interpreter, firmware compiled as
shipped: a refused signed frame's heap and time, the worst `LOG` request on a full log."""
from __future__ import annotations

import tempfile
from pathlib import Path

from benchlib import _mp_json, compiled_firmware


def bench_protocol() -> dict:
    with tempfile.TemporaryDirectory() as d:
        tree = compiled_firmware(Path(d) / "fw")
        r = _mp_json("fw_proto.py", tree)
        assert r is not None, "fw_proto.py failed under micropython"
    return {
        "fw.mac_refusal_alloc_bytes": r["mac_refusal_alloc_bytes"],
        "fw.mac_refusal_us_micropython": r["mac_refusal_us"],
        "fw.log_request_us": r["log_request_us"],
        "fw.log_full_scan_us": r["log_full_scan_us"],
        "fw.log_request_hashes": r["log_request_hashes"],
        "fw.log_full_scan_hashes": r["log_full_scan_hashes"],
        "fw.log_bench_records": r["log_records"],
        "fw.board_tick_us_micropython": r["board_tick_us"],
    }


BENCHMARKS = {"protocol": bench_protocol}
