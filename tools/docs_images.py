"""`make docs`: the pictures README.md and docs/ show, generated from real runs.

    python tools/docs_images.py docs/img

* ``demo.png`` — `infusekit demo`'s plot (ketamine 0.5 mg/kg over 40 min, 70 kg; the firmware
  in-process for speed): plasma level against the measured range, SBP/DBP/HR against the
  drug's interlock limits, the motor rate and delivered volume, line pressure, alarms.
* ``occlusion_25mlh.run.png`` — a scenario report: an occlusion at 25 mL/h, its fault window,
  the pump's alarm limit and the alarm.
* ``hypertensive_interlock.patient.png`` — a hypertensive responder's blood pressure
  reaching the interlock and the pump pausing.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs/img")
    out.mkdir(parents=True, exist_ok=True)
    from hil_sim.demo import run_demo
    res = run_demo("cpython", plot=str(out / "demo.png"), progress=False)
    print(f"{out / 'demo.png'}: delivered {res.delivered_ml:.3f} of {res.programmed_ml:.3f} mL")
    from hil_sim.report import write_report
    from hil_sim.scenario import run_scenario
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind in (("occlusion_25mlh", "run"), ("hypertensive_interlock", "patient")):
            files = write_report(run_scenario(name, "cpython"), tmp)
            dest = out / f"{name}.{kind}.png"
            shutil.copyfile(files[kind], dest)
            print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
