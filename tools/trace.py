"""`make trace`: hazard → requirement → test → result, from a real pytest run.

Reads docs/safety/hazards.md (`### H-…` headings) and docs/safety/requirements.md (table rows
`| REQ-… | requirement | hazards | verified by |`), runs the whole test suite with
`--req-report` (tests carry `@pytest.mark.req("REQ-…")`; firmware checks declare
`REQS = {...}` in tests/fw/check_*.py), and writes docs/safety/traceability.md.

Exit status 1 (after writing the file) when:
* a requirement has no test, or none of its tests passed;
* a test names a requirement that docs/safety/requirements.md does not define;
* a `REQS` entry names a check function that does not exist (a stale tag);
* a requirement names a hazard that docs/safety/hazards.md does not define;
* a traced test failed.

usage: python tools/trace.py [--report FILE (reuse a report instead of running pytest)]
                             [--out docs/safety/traceability.md] [-- extra pytest args]
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAFETY = ROOT / "docs" / "safety"
REQ_RE = re.compile(r"^\|\s*(REQ-[A-Z0-9]+-\d+)\s*\|(.*?)\|(.*?)\|", re.M)
HAZ_RE = re.compile(r"^###\s+(H-[A-Z0-9-]+)\s+(.*)$", re.M)


def hazards() -> dict[str, str]:
    return {m.group(1): m.group(2).strip() for m in HAZ_RE.finditer((SAFETY / "hazards.md").read_text())}


def duplicate_ids() -> list[str]:
    """Requirement IDs defined more than once in requirements.md (the second silently
    replaced the first in the trace)."""
    seen: dict[str, int] = {}
    for m in REQ_RE.finditer((SAFETY / "requirements.md").read_text()):
        seen[m.group(1)] = seen.get(m.group(1), 0) + 1
    return [f"{r} is defined {n} times in requirements.md" for r, n in sorted(seen.items()) if n > 1]


def requirements() -> dict[str, tuple[str, list[str]]]:
    out = {}
    for m in REQ_RE.finditer((SAFETY / "requirements.md").read_text()):
        hz = re.findall(r"H-[A-Z0-9-]+", m.group(3))
        out[m.group(1)] = (m.group(2).strip(), hz)
    return out


def stale_check_tags() -> list[str]:
    problems = []
    for path in sorted((ROOT / "tests" / "fw").glob("check_*.py")):
        src = path.read_text()
        tree = ast.parse(src)
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "REQS" for t in node.targets):
                for name in ast.literal_eval(node.value):
                    if name not in defined:
                        problems.append(f"{path.relative_to(ROOT)}: REQS names {name}, which does not exist")
    return problems


def run_pytest(extra: list[str]) -> tuple[dict, int, float]:
    with tempfile.TemporaryDirectory() as d:
        rep = Path(d) / "req.json"
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"--req-report={rep}", *extra], cwd=ROOT)
        wall = time.perf_counter() - t
        if not rep.exists():
            sys.exit(f"pytest wrote no requirement report (exit {p.returncode})")
        return json.loads(rep.read_text()), p.returncode, wall


def short(nodeid: str) -> str:
    return nodeid.replace("tests/", "", 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", help="use this --req-report JSON instead of running pytest")
    ap.add_argument("--out", default=str(SAFETY / "traceability.md"))
    ap.add_argument("pytest_args", nargs="*")
    a = ap.parse_args(argv)
    haz = hazards()
    reqs = requirements()
    if a.report:
        report, rc, wall = json.loads(Path(a.report).read_text()), 0, 0.0
    else:
        report, rc, wall = run_pytest(a.pytest_args)
    by_req: dict[str, list[tuple[str, str]]] = {r: [] for r in reqs}
    problems = stale_check_tags() + duplicate_ids()
    for nodeid, info in sorted(report.items()):
        for r in info["reqs"]:
            if r not in reqs:
                problems.append(f"{short(nodeid)} names {r}, which requirements.md does not define")
                continue
            by_req[r].append((nodeid, info["outcome"]))
    for r, (_, hz) in reqs.items():
        if not hz:
            problems.append(f"{r} names no hazard")
        for h in hz:
            if h not in haz:
                problems.append(f"{r} names {h}, which hazards.md does not define")
        tests = by_req[r]
        if not tests:
            problems.append(f"{r} has no test")
        elif not any(o == "passed" for _, o in tests):
            problems.append(f"{r}: none of its {len(tests)} tests passed")
        for nodeid, o in tests:
            if o not in ("passed", "xfail"):
                problems.append(f"{r}: {short(nodeid)} {o}")
    # ---- write the matrix
    icon = {"passed": "pass", "failed": "**FAIL**", "skipped": "skip", "not run": "not run",
            "xfail": "xfail (known)", "xpass": "**XPASS**"}
    lines = ["# Traceability: hazard → requirement → test → result", "",
             f"Generated by `make trace` (tools/trace.py) from a pytest run on "
             f"{time.strftime('%Y-%m-%d %H:%M')} ({len(report)} traced tests"
             + (f", suite wall time {wall:.0f} s" if wall else "") + "). Do not edit by hand.", "",
             f"- Hazards: {len(haz)}; requirements: {len(reqs)}; "
             f"requirements with a passing test: {sum(1 for r in reqs if any(o == 'passed' for _, o in by_req[r]))}.",
             f"- Status: {'**PASS** — every requirement is traced to passing tests' if not problems else '**FAIL**'}.", ""]
    if problems:
        lines += ["## Problems", ""] + [f"- {p}" for p in problems] + [""]
    lines += ["## By hazard", ""]
    for h, title in haz.items():
        rs = [r for r, (_, hz) in reqs.items() if h in hz]
        lines.append(f"### {h} {title}")
        lines.append("")
        if not rs:
            lines.append("_No requirement names this hazard._")
        for r in rs:
            ok = sum(1 for _, o in by_req[r] if o == "passed")
            lines.append(f"- **{r}** {reqs[r][0]} — {ok}/{len(by_req[r])} tests pass")
        lines.append("")
    lines += ["## By requirement", "", "| requirement | hazards | test | result |", "|---|---|---|---|"]
    for r, (_, hz) in reqs.items():
        tests = by_req[r] or [("(none)", "not run")]
        for i, (nodeid, o) in enumerate(tests):
            lines.append(f"| {r if i == 0 else ''} | {', '.join(hz) if i == 0 else ''} | "
                         f"`{short(nodeid)}` | {icon.get(o, o)} |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {Path(a.out).relative_to(ROOT) if Path(a.out).is_relative_to(ROOT) else a.out}: "
          f"{len(haz)} hazards, {len(reqs)} requirements, {len(report)} traced tests")
    if problems:
        print("TRACE FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if rc not in (0,):
        print(f"note: the test suite exited with {rc} (failures outside the traced tests)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
