"""hil_sim — the InfuseKit hardware-in-the-loop simulator (CPython).

Modules, one job each: `plant` (syringe pump physics and sensors), `patient` (ketamine PK
and vitals), `link` (the paced serial line and host endpoints), `runtime` (where the firmware
runs: in-process or a `micropython` process), `baseline` (the open-loop reference
controller), `cosim` (the lock-step virtual clock and fault injection), `serve` (wall-clock
pacing against a real host), `control` (fault injection while serving), `scenario` (scenario
files and their runner), `analysis` and `report` (IEC 60601-2-24 figures, plots, HTML), `cli`
(the ``infusekit sim`` commands). docs/simulator.md describes the model and its sources.
"""
from hil_sim.cosim import Simulation
from hil_sim.link import MemoryEndpoint, PtyEndpoint, SerialLink, TcpEndpoint
from hil_sim.patient import Patient, PatientParams
from hil_sim.plant import Plant, PlantParams, Record

__all__ = ["Simulation", "Plant", "PlantParams", "Record", "Patient", "PatientParams", "SerialLink", "PtyEndpoint",
           "TcpEndpoint", "MemoryEndpoint"]
