"""Board support: one module per board. Each exposes `Board()` implementing the board
interface documented in `pumpcore.app`."""
