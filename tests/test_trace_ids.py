"""tools/trace.py: every requirement ID is defined once (a second row with the same ID
silently replaced the first in the traceability matrix: REQ-HOST-09, session 5)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _trace():
    spec = importlib.util.spec_from_file_location("infusekit_trace", ROOT / "tools" / "trace.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_requirement_ids_are_unique():
    assert _trace().duplicate_ids() == []


def test_a_duplicated_id_is_reported(tmp_path, monkeypatch):
    t = _trace()
    text = (ROOT / "docs" / "safety" / "requirements.md").read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| REQ-"))
    (tmp_path / "requirements.md").write_text(text + "\n" + row + "\n")
    monkeypatch.setattr(t, "SAFETY", tmp_path)
    assert t.duplicate_ids() == [f"{row.split('|')[1].strip()} is defined 2 times in requirements.md"]
