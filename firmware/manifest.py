"""Frozen-module manifest: builds InfuseKit's code into a MicroPython RP2040 firmware image.

    make -C ports/rp2 BOARD=RPI_PICO FROZEN_MANIFEST=/path/to/infusekit/firmware/manifest.py

Frozen code runs from flash as ROMFS code does, and its qstrs and constant objects are in
flash too, so only module dictionaries, function objects and the controller's runtime data
take heap (docs/hardware.md, "Frozen build"). main.py and druglib.json (+ .sha256) still go
to littlefs. Read by MicroPython's build (tools/makemanifest.py); never deployed to a board.
"""
include("$(PORT_DIR)/boards/manifest.py")     # the port's own frozen modules (asyncio, ...)
package("pumpcore")
package("boards", files=["__init__.py", "rp2_pico.py"])    # the simulated board stays out
