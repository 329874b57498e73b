"""The ``infusekit`` CLI's contract, in one place: exit codes, ``--json``, the shared options,
error-to-exit-code mapping, and the ``command`` decorator every subcommand is declared with.

Exit codes (every command, documented in ``--help`` and docs/host.md):

    0  ok
    1  expectations not met (a scenario FAIL, the demo out of tolerance, a flashed board
       reporting the wrong firmware)
    2  usage: bad or missing arguments, a missing or unknown unit, a bad port URL, a broken
       scenario file
    3  refused by the pump, or by the host's own pre-checks (nothing changed)
    4  link error or timeout (the command may or may not have been carried out: ask status)

Adding a command (the whole pattern; the logic lives in your own module)::

    import click
    from host.clikit import EXIT_OK, UsageError, command, emit, open_pump

    def register(cli: click.Group) -> None:          # host/cli.py calls it, or add the
        @command(cli, "vitals-bridge", pump=True)    # decorator next to the others there
        @click.option("--listen", metavar="HOST:PORT", required=True, help="where to listen")
        def cmd_vitals_bridge(args) -> int:
            '''Relay HL7 vitals to the pump (first line is the command's help).'''
            from mything import run                  # a plain function, testable alone
            with open_pump(args) as pump:
                n = run(pump, args.listen)
            emit(args, {"ok": True, "relayed": n}, f"{n} readings relayed")
            return EXIT_OK

``args`` carries the command's own options (``args.listen``) plus ``args.json`` and, with
``pump=True``, ``args.port``/``timeout``/``retries``/``key_store`` (given before or after the
subcommand; ``pump=("port", "timeout")`` picks a subset). Subgroups: ``group(cli, "sim")``,
or ``cli.commands["sim"]`` to add to one that exists. Raise ``UsageError`` (exit 2),
``host.errors.Refused`` (3), ``host.errors.LinkError`` (4); return ``EXIT_FAIL`` (1) when the
command ran but its expectations were not met. ``--json`` then prints exactly one JSON object
on stdout (errors too: ``{"ok": false, "error": …}``); human messages and errors go to stderr
as one line saying what to do. A closed stdout pipe (``| head``) ends the output quietly.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterable

import click
from click.core import ParameterSource

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_REFUSED, EXIT_LINK = 0, 1, 2, 3, 4
ENV_PORT = "INFUSEKIT_PORT"
DEFAULT_TIMEOUT = 2.0
DEFAULT_RETRIES = 2

EXIT_CODES_HELP = ("Exit codes: 0 ok; 1 expectations not met (scenario FAIL, demo out of "
                   "tolerance); 2 usage error (bad arguments, unit, port or scenario file); "
                   "3 refused by the pump or the host's pre-checks (nothing changed); 4 link "
                   "error or timeout.")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

HINTS = {
    "SOFT": "re-run with --confirm to override the soft limit",
    "LIMIT": "the program exceeds a hard limit of the drug library; it cannot be overridden",
    "STATE": "check the pump's state with `infusekit status`",
    "DRUG": "see `infusekit drugs list`",
    "RANGE": "the value is outside what the pump can do",
    "AUTH": "this host has no valid key for the pump; see `infusekit firmware flash` and "
            "--key-store",
    "UNKNOWN": "the pump's firmware does not know this command; update it "
               "(`infusekit firmware flash`)",
    "ARG": "the pump did not accept the arguments; see `infusekit COMMAND --help`",
}


class UsageError(Exception):
    """Bad or missing arguments detected after parsing (exit 2)."""


class ExpectationFailed(Exception):
    """The command ran but what it checks did not hold (exit 1)."""


# ------------------------------------------------------------------------- shared options

PUMP_OPTIONS = ("port", "timeout", "retries", "key_store")


def _pump_params(names: Iterable[str], group_level: bool) -> list[click.Parameter]:
    """--port/--timeout/--retries/--key-store. On the group they carry the defaults (and
    $INFUSEKIT_PORT); on a command they default to None and win over the group's."""
    g = group_level
    made = {
        "port": click.Option(
            ["--port"], metavar="URL", envvar=ENV_PORT if g else None,
            help="pyserial URL of the pump or gateway: /dev/ttyACM0, /dev/pts/N, "
                 f"socket://HOST:PORT, rfc2217://HOST:PORT (default ${ENV_PORT})"),
        "timeout": click.Option(
            ["--timeout"], type=click.FloatRange(min=0, min_open=True), metavar="S",
            default=DEFAULT_TIMEOUT if g else None,
            help=f"seconds to wait for each reply attempt (default {DEFAULT_TIMEOUT:g})"),
        "retries": click.Option(
            ["--retries"], type=click.IntRange(min=0), metavar="N",
            default=DEFAULT_RETRIES if g else None,
            help=f"retransmissions of a request before giving up (default {DEFAULT_RETRIES})"),
        "key_store": click.Option(
            ["--key-store"], metavar="DIR",
            help="pump keys for signed commands (default $INFUSEKIT_KEYS or "
                 "~/.config/infusekit/keys)"),
    }
    return [made[n] for n in names]


def _json_param() -> click.Option:
    return click.Option(["--json", "json_"], is_flag=True, default=False,
                        help="print one JSON object (errors too) instead of text")


@dataclass
class _GroupOptions:
    values: dict[str, Any]
    explicit: set[str]


def root_group(name: str, help: str) -> click.Group:
    """The top-level group: the shared options may also come before the subcommand."""
    def callback(**opts: Any) -> None:
        ctx = click.get_current_context()
        explicit = {k for k in opts
                    if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE,)}
        ctx.obj = _GroupOptions(opts, explicit)
    return click.Group(name, callback=callback, help=help, epilog=EXIT_CODES_HELP,
                       params=[*_pump_params(PUMP_OPTIONS, True), _json_param()],
                       context_settings=CONTEXT, no_args_is_help=True)


def group(parent: click.Group, name: str, help: str) -> click.Group:
    """A subgroup (``drugs``, ``firmware``, ``sim``): commands are added with ``command``."""
    g = click.Group(name, help=help, epilog=EXIT_CODES_HELP, context_settings=CONTEXT,
                    no_args_is_help=True)
    parent.add_command(g)
    return g


def _root_options(ctx: click.Context) -> _GroupOptions:
    while ctx.parent is not None:
        ctx = ctx.parent
    obj = ctx.obj
    if isinstance(obj, _GroupOptions):
        return obj
    return _GroupOptions({"port": os.environ.get(ENV_PORT), "timeout": DEFAULT_TIMEOUT,
                          "retries": DEFAULT_RETRIES, "key_store": None, "json_": False},
                         set())


def _build_args(ctx: click.Context, opts: dict[str, Any], pump: tuple[str, ...]) -> SimpleNamespace:
    root = _root_options(ctx)
    stray = [n for n in PUMP_OPTIONS if n in root.explicit and n not in pump]
    if stray:
        flags = ", ".join("--" + n.replace("_", "-") for n in stray)
        raise UsageError(f"{flags} does not apply to `{ctx.command_path}`")
    args = SimpleNamespace(**{k: v for k, v in opts.items() if k != "json_"})
    args.json = bool(opts.get("json_")) or bool(root.values.get("json_"))
    for n in pump:
        mine = opts.get(n)
        setattr(args, n, mine if mine is not None else root.values.get(n))
    args.command_path = ctx.command_path
    return args


def command(parent: click.Group, name: str | None = None, *, pump: bool | Iterable[str] = False,
            **attrs: Any) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Declare ``f(args) -> int`` as the subcommand ``name`` of ``parent`` (see the module
    docstring). ``@click.option``/``@click.argument`` decorators below it add its own
    parameters; ``--json`` (and with ``pump`` the pump options) are added here. Returns ``f``
    unchanged, so it stays a plain function; the click command is ``f.click_command``."""
    names = PUMP_OPTIONS if pump is True else tuple(pump or ())

    def deco(f: Callable[..., int]) -> Callable[..., int]:
        own = list(reversed(getattr(f, "__click_params__", [])))

        def callback(**opts: Any) -> int:
            ctx = click.get_current_context()
            want_json = bool(opts.get("json_")) or bool(_root_options(ctx).values.get("json_"))
            try:
                args = _build_args(ctx, opts, names)
                return int(f(args) or 0)
            except Exception as e:        # mapped to an exit code (or re-raised)
                return handle_error(e, want_json, opts.get("drug"))
            except KeyboardInterrupt:
                return 130

        text = attrs.pop("help", None) or (f.__doc__ or "").strip()
        cmd = click.Command(
            name or f.__name__.removeprefix("cmd_").replace("_", "-"), callback=callback,
            params=[*own, *_pump_params(names, False), _json_param()],
            help=text, short_help=attrs.pop("short_help", None)
            or (text.splitlines()[0] if text else None),
            epilog=attrs.pop("epilog", EXIT_CODES_HELP), context_settings=CONTEXT, **attrs)
        parent.add_command(cmd)
        f.click_command = cmd        # type: ignore[attr-defined]
        return f
    return deco


# ------------------------------------------------------------------------- output

def emit(args: Any, obj: dict[str, Any], text: str | Callable[[], None]) -> None:
    """Print ``obj`` as one JSON line with --json, else ``text`` (or call it)."""
    if getattr(args, "json", False):
        print(json.dumps(obj, sort_keys=False, default=str), flush=True)
    elif callable(text):
        text()
    else:
        print(text, flush=True)


def _quiet_stdout() -> None:
    """After EPIPE on stdout: point it at /dev/null so the exit flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def error(want_json: bool, exit_code: int, kind: str, msg: str, **extra: Any) -> int:
    """One line on stderr, and with --json one object on stdout; returns ``exit_code``."""
    print(f"infusekit: {msg}", file=sys.stderr, flush=True)
    if want_json:
        try:
            print(json.dumps({"ok": False, "error": kind, "exit": exit_code, "message": msg,
                              **extra}, default=str), flush=True)
        except BrokenPipeError:
            _quiet_stdout()
    return exit_code


def handle_error(e: BaseException, want_json: bool, drug: str | None = None) -> int:
    """Map an exception to its exit code (printing it), or re-raise what is a bug."""
    from host.errors import KeyStoreError, LinkError, ProtocolError, Refused
    if isinstance(e, BrokenPipeError):
        _quiet_stdout()
        return EXIT_OK
    if isinstance(e, (UsageError, click.UsageError)):
        return error(want_json, EXIT_USAGE, "usage", str(e))
    if isinstance(e, ExpectationFailed):
        return error(want_json, EXIT_FAIL, "failed", str(e))
    if isinstance(e, Refused):
        from host import messages
        text = messages.refusal(e, drug)
        hint = HINTS.get(e.code, "")
        return error(want_json, EXIT_REFUSED, "refused",
                     f"refused: {e.code} {text}" + (f" — {hint}" if hint else ""),
                     code=e.code, reason=e.reason)
    if isinstance(e, KeyStoreError):
        return error(want_json, EXIT_USAGE, "key", str(e))
    if isinstance(e, (LinkError, ProtocolError)):
        s = str(e)
        return error(want_json, EXIT_LINK, "link",
                     f"link error: {s}" if "check" in s
                     else f"link error: {s} — check --port and that the pump is on")
    from host.firmware_tools import FirmwareToolError
    if isinstance(e, FirmwareToolError):
        return error(want_json, getattr(e, "exit_code", EXIT_FAIL), "firmware", str(e))
    if isinstance(e, ValueError):          # unit parsing and argument values
        return error(want_json, EXIT_USAGE, "usage", str(e))
    raise e


def parse(cli: click.Group, argv: list[str], prog: str = "infusekit") -> click.Context:
    """Parse ``argv`` down to the subcommand without running anything (click.UsageError on a
    bad line); returns the subcommand's context (``ctx.params`` are its options)."""
    ctx = cli.make_context(prog, list(argv))
    while isinstance(ctx.command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        name, sub, rest = ctx.command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
    return ctx


def run(cli: click.Group, argv: list[str] | None, prog: str = "infusekit") -> int:
    """Parse and run; every outcome is an exit code (click usage errors -> 2, JSON too)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
    try:
        rv = cli.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        if want_json:
            return error(True, EXIT_USAGE, "usage", f"missing command; see `{prog} --help`")
        click.echo(e.ctx.get_help() if e.ctx else "", err=True)
        return EXIT_USAGE
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx else prog
        return error(want_json, EXIT_USAGE, "usage",
                     f"{e.format_message()} (see `{where} --help`)")
    except click.ClickException as e:
        return error(want_json, e.exit_code or EXIT_USAGE, "usage", e.format_message())
    except click.exceptions.Abort:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    if isinstance(rv, int):
        return rv
    return EXIT_OK
