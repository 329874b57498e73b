"""Boot entry for a real board: wire the board module to the controller and run forever."""
from boards import rp2_pico
from pumpcore.app import run

run(rp2_pico.Board())
