"""Time on a clock that wraps at 2**30 (the RP2040's ticks_ms), without leaving small ints."""
try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

TICK_MS = const(50)           # the control period: one rate-loop update per tick
_HALF = const(0x20000000)     # half the 2**30 tick period
_TMAX = const(0x3FFFFFFF)     # largest clock value
del const   # compile-time only (each module global is a slot of heap on the board)


def ticks_diff(new, old):
    """new - old for a clock that wraps at 2**30, without leaving small-int range."""
    d = new - old
    if d >= _HALF:
        d = d - _HALF - _HALF
    elif d < -_HALF:
        d = d + _HALF + _HALF
    return d


def ticks_add(t, d):
    """t + d on the 2**30 clock (0 <= d < 2**29), without leaving small-int range."""
    if t > _TMAX - d:
        return t - _HALF - _HALF + d
    return t + d


def ticks_back(t, d):
    """t - d on the 2**30 clock (0 <= d < 2**29), without leaving small-int range."""
    t = t - d
    if t < 0:
        return t + _HALF + _HALF
    return t
