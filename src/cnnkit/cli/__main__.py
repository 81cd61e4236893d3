"""The ``cnnkit`` command line.

Each subcommand lives in its own module with ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> exit code``. Errors become one line on stderr:
exit code 2 for usage and bad input, 1 for failures while running; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import signal
import sys
import warnings
from collections.abc import Iterator

from .. import __version__
from ..errors import CnnkitError, TrainingError

# Module names under cnnkit.cli, in the order `cnnkit --help` lists them.
COMMANDS = [
    "models",
    "summary",
    "shape",
    "train",
    "finetune",
    "evaluate",
    "predict",
    "detect",
    "viz",
    "report",
    "segment",
    "export",
    "studio",
]

# Commands that show class names (figures, reports, predictions) and take --lang.
LANG_COMMANDS = ("viz", "report", "predict", "evaluate", "studio")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        # No abbreviations: `train detect --head unet` (a segment flag) must be refused, not
        # read as detect's --head-width.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# Commands that run without torch (pure arithmetic): they answer in a fraction of a second.
TORCH_FREE = frozenset({"shape"})


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnnkit", description="Convolutional neural networks, the way the course teaches them."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"{__package__}.{name}")
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__.replace("``", "`"),  # reST literals read as the help's `code`
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(func=module.run)
    for name, command in sub.choices.items():  # `cnnkit CMD ... --debug` too; SUPPRESS keeps a leading one
        if name != "train":  # train's tasks take it with their common options
            command.add_argument(
                "--debug",
                action="store_true",
                default=argparse.SUPPRESS,
                help="show full tracebacks on errors",
            )
        if name in LANG_COMMANDS:
            command.add_argument(
                "--lang",
                choices=("en", "ko"),
                default=argparse.SUPPRESS,
                help="language of class names (default: $CNNKIT_LANG, else en); ko needs a Korean font "
                "for figures (fonts-nanum), else they stay in English",
            )
    return parser


def parse_command_line(argv: list[str], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The parsed command line; ``train --task X`` is read as ``train X``, and a flag this command
    (or this task) does not read is a usage error (SystemExit 2), not ignored."""
    from .train import task_first

    parser = parser or build_parser()
    args, unknown = parser.parse_known_args(task_first(list(argv)))
    if unknown:
        where = " ".join(x for x in ("cnnkit", args.command, getattr(args, "task", None)) if x)
        flags = [u for u in unknown if u.startswith("-")] or unknown
        hint = f"see `{where} --help`"
        if not flags[0].startswith("-") and hasattr(args, "image"):  # `cnnkit viz gradcam RUN cat.jpg`
            hint = f"an image file goes after --image, e.g. `--image {flags[0]}`; {hint}"
        parser.exit(2, f"cnnkit: error: `{where}` does not take {', '.join(flags)} ({hint})\n")
    return args


def process_main() -> int:
    """The ``cnnkit`` process (the console script, ``python -m cnnkit``): :func:`main` with the
    objects that stay for the whole process taken out of the cyclic garbage collector.

    torch, its compiler and matplotlib make millions of objects as they are imported; each full
    collection walked them all (eight in a 20 s ``train --preset fast``, 1.1 s together) and the
    interpreter's exit walked them again (1.2 s). ``gc.freeze`` after the imports and before the
    exit leaves out what exists then; later garbage is still collected, and atexit handlers and
    open files are closed as before. In-process callers (notebooks, tests) use :func:`main`.
    """
    warnings.formatwarning = _format_warning
    try:
        code = main(freeze_imports=True)
        sys.stdout.flush()  # a pipe's buffered output goes now, not in the exit where it cannot fail cleanly
        return code
    except BrokenPipeError:
        # The reader of our output left (`cnnkit evaluate RUN | head -3`): stop quietly, as Unix
        # tools do on SIGPIPE; stdout goes to /dev/null so that the exit's flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:
        gc.freeze()


def _format_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> str:
    """A warning in the ``cnnkit`` process, as its errors read: ``cnnkit: warning: ...``, without
    the file and line of the console script (in-process callers keep Python's format)."""
    return f"cnnkit: warning: {message}\n"


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has left (Linux and macOS report POLLERR then)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or no usable stdout
        return False


def main(argv: list[str] | None = None, *, freeze_imports: bool = False) -> int:
    parser = build_parser()  # without torch: --help and usage errors answer at once
    try:
        args = parse_command_line(sys.argv[1:] if argv is None else argv, parser)
    except SystemExit as exc:  # argparse's usage errors: one line on stderr, exit code 2
        return int(exc.code or 0)
    if freeze_imports:
        if args.command not in TORCH_FREE:
            # the command runs torch: imported now, its objects frozen with the rest (a machine
            # with ONNX Runtime alone still predicts with .onnx files)
            with contextlib.suppress(ImportError):
                import torch  # noqa: F401
        gc.freeze()
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` passes it on to workers
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with _language(getattr(args, "lang", None)):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or (isinstance(exc, BrokenPipeError) and _stdout_gone()):
            raise
        code = exit_code(exc)
        if code is None:
            raise
        print(f"cnnkit: error: {error_line(exc, code)}", file=sys.stderr)
        return code


@contextlib.contextmanager
def _language(lang: str | None) -> Iterator[None]:
    """``--lang`` as the setting figures, reports and predictions read (CNNKIT_LANG), for one command."""
    before = os.environ.get("CNNKIT_LANG")
    if lang:
        os.environ["CNNKIT_LANG"] = lang
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CNNKIT_LANG", None)
        else:
            os.environ["CNNKIT_LANG"] = before


# Bad input that the readers should have named; these codes are the last line of defence.
_BAD_INPUT = (
    CnnkitError,
    ValueError,  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
    KeyError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    RecursionError,  # deeply nested JSON
    OverflowError,  # impossible sizes
)


def exit_code(exc: BaseException) -> int | None:
    """2 for usage errors and bad input, 1 for failures while running, None for bugs."""
    from PIL import Image

    if isinstance(exc, TrainingError):
        return 1
    if isinstance(exc, (*_BAD_INPUT, Image.DecompressionBombError)):
        return 2
    if isinstance(exc, RuntimeError | OSError | MemoryError):
        return 1
    return None


def error_line(exc: BaseException, code: int) -> str:
    """The one line printed for ``exc``: cnnkit's own message, else the type, the file (when the
    exception names one) and the reason."""
    if isinstance(exc, CnnkitError):
        return str(exc)
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read (RecursionError); check the JSON or config file"
    if isinstance(exc, MemoryError):
        return "not enough memory (MemoryError); use a smaller batch, input or model"
    # A plain ValueError / FileNotFoundError carries a message written for people; for the
    # rest (JSONDecodeError, UnicodeDecodeError, OverflowError, ...) the type says what happened.
    plain = type(exc) in (ValueError, FileNotFoundError) or (code == 2 and type(exc).__module__ != "builtins")
    prefix = "" if plain and not isinstance(exc, json.JSONDecodeError) else f"{type(exc).__name__}: "
    return f"{prefix}{exc}"


if __name__ == "__main__":
    sys.exit(process_main())
