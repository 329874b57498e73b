"""pumpcore — the InfuseKit pump controller: a pure step function of time, inputs and bytes.

Runs unchanged on a board (MicroPython), under the unix `micropython` interpreter and
under CPython. It never touches hardware, the clock or a serial port: boards/ does that.
"""
VERSION = "0.1.0"
