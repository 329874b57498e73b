"""Pictures and reports (issue 14): the demo plot shows the patient and the pump, scenario
reports mark what happened, the HTML leads with key figures against the goals, `make clean`
keeps tracked files."""
from __future__ import annotations

import re
import shlex
import subprocess
from types import SimpleNamespace

import matplotlib
import pytest

from conftest import ROOT

matplotlib.use("Agg")
pytestmark = pytest.mark.req("REQ-HOST-10")


@pytest.fixture
def figures(monkeypatch):
    """Every matplotlib figure saved during the test, kept for inspection."""
    from matplotlib.figure import Figure
    saved = []
    real = Figure.savefig

    def keep(self, *a, **kw):
        saved.append(self)
        return real(self, *a, **kw)
    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def test_demo_plot_shows_the_patient_and_the_pump(tmp_path, figures):
    """The demo plot showed volume and line pressure only."""
    from hil_sim.demo import run_demo
    res = run_demo("cpython", plot=str(tmp_path / "demo.png"), progress=False)
    assert (tmp_path / "demo.png").stat().st_size > 20_000
    fig = figures[-1]
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[:4] == ["plasma (ng/mL)", "mmHg, /min", "rate (mL/h)", "pressure (mmHg)"]
    cp, vit = fig.axes[0], fig.axes[1]
    cp_line = cp.get_lines()[0].get_ydata()
    assert 100 < max(cp_line) < 250                      # reaches the measured range
    assert any(p.get_label().startswith("measured range 100-250") for p in cp.patches)
    limits = {ln.get_label() for ln in vit.get_lines()}
    assert {"interlock SBP > 180", "interlock DBP > 110", "interlock HR > 130"} <= limits
    assert any("VTBI" in t.get_text() for t in cp.texts)             # alarms marked
    assert res.final_state == "COMPLETE"


def test_occlusion_report_marks_the_fault_the_limit_and_keeps_its_scale(tmp_path, figures):
    from hil_sim.report import fault_windows, key_figures, write_report
    from hil_sim.scenario import run_scenario
    res = run_scenario("occlusion_25mlh", "cpython")
    files = write_report(res, tmp_path)
    assert fault_windows(res) == [("occlusion", 60.0, 180.0)]
    run_fig = next(f for f in figures if f.axes[0].get_ylabel() == "volume (mL)")
    vol, pres = run_fig.axes[:2]
    assert vol.get_ylim()[1] < 1.0                        # 0.4 mL delivered, not a 20 mL axis
    assert pres.patches and vol.patches                   # the fault window is shaded
    assert any(ln.get_label().startswith("occlusion alarm limit 300 mmHg")
               for ln in pres.get_lines())
    rows = {r[0]: r for r in key_figures(res)}
    occ = next(r for k, r in rows.items() if k.startswith("occlusion at 60 s"))
    assert occ[2] == "≤ 15" and occ[3] == "meets"
    html = open(files["html"]).read()
    assert html.index("<h2>Key figures") < html.index("<h2>Plots") < html.index("<details>")
    assert re.search(r"<details><summary>All figures \(JSON\)</summary><pre>", html)


def test_trumpet_has_its_2_percent_lines(tmp_path, figures):
    from hil_sim.report import plot_trumpet
    tr = {"rate_ml_h": 1.0, "overall_pct": 0.1,
          "windows": {str(p): {"ep_min_pct": -1.0 / p, "ep_max_pct": 1.5 / p}
                      for p in (2, 5, 11, 19, 31)}}
    plot_trumpet(SimpleNamespace(metrics={"trumpet": tr}), tmp_path / "t.png")
    ys = {round(ln.get_ydata()[0], 3) for ln in figures[-1].axes[0].get_lines()
          if len(set(ln.get_ydata())) == 1}
    assert {2.0, -2.0} <= ys


def test_hypertensive_interlock_has_a_blood_pressure_plot(tmp_path, figures):
    from hil_sim.report import write_report
    from hil_sim.scenario import run_scenario
    files = write_report(run_scenario("hypertensive_interlock", "cpython"), tmp_path)
    assert "patient" in files
    fig = figures[-1]
    assert [ax.get_ylabel() for ax in fig.axes] == ["plasma (ng/mL)", "mmHg, /min"]
    sbp = next(ln for ln in fig.axes[1].get_lines() if ln.get_label() == "SBP")
    assert max(sbp.get_ydata()) > 160                     # the responder's rise
    assert "interlock SBP > 180" in {ln.get_label() for ln in fig.axes[1].get_lines()}


def test_make_clean_keeps_tracked_files():
    """`make clean` deleted the tracked bench/results.json."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^clean:.*\n((?:\t.*\n)+)", text, re.M).group(1)
    removed = [w for ln in recipe.splitlines() for w in shlex.split(ln)[2:]
               if ln.strip().startswith("rm")]
    assert removed
    for path in removed:
        tracked = subprocess.run(["git", "ls-files", path], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip()
        assert not tracked, f"make clean removes tracked {tracked}"


def test_docs_show_generated_images():
    readme = (ROOT / "README.md").read_text()
    assert "](docs/img/demo.png)" in readme
    script = (ROOT / "tools" / "docs_images.py").read_text()
    for name in ("demo.png", "occlusion_25mlh", "hypertensive_interlock"):
        assert name in script
    assert "tools/docs_images.py" in (ROOT / "Makefile").read_text()
