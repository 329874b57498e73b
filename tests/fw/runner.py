"""Runs the check_* functions of one firmware check module; portable MicroPython/CPython.

usage: runner.py MODULE   (cwd = firmware/, tests/fw on sys.path)
Prints "PASS name" or "FAIL name: error" per check and "DONE passed failed".
"""
import sys


def main(modname):
    mod = __import__(modname)
    names = sorted([n for n in dir(mod) if n.startswith("check_")])
    passed = failed = 0
    for n in names:
        try:
            getattr(mod, n)()
            print("PASS", n)
            passed += 1
        except Exception as e:  # report every failure, keep going
            sys.print_exception(e) if hasattr(sys, "print_exception") else None
            print("FAIL", n + ":", repr(e))
            failed += 1
    print("DONE", passed, failed)
    return failed


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1]) else 0)
