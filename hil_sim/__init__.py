"""hil_sim — the InfuseKit hardware-in-the-loop simulator (CPython).

Modules, one job each: `plant` (syringe pump physics and sensors), `link` (the paced serial
line and host endpoints), `runtime` (where the firmware runs: in-process or a `micropython`
process), `cosim` (the lock-step virtual clock), `serve` (wall-clock pacing against a real
host), `cli` (the ``infusekit sim`` commands).
"""
from hil_sim.cosim import Simulation
from hil_sim.link import MemoryEndpoint, PtyEndpoint, SerialLink, TcpEndpoint
from hil_sim.plant import Plant, PlantParams, Record

__all__ = ["Simulation", "Plant", "PlantParams", "Record", "SerialLink", "PtyEndpoint",
           "TcpEndpoint", "MemoryEndpoint"]
