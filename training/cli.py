"""How the training commands fail: one line on stderr naming what is wrong and the fix, a non-zero exit code, and
the traceback only when asked for (``--debug`` or ``COGNIEDIT_DEBUG=1``).

Every ``python -m training...`` command builds its parser with ``parser()`` and runs its body under ``run``.
"""

from __future__ import annotations

import argparse
import os
import sys

DEBUG_ENV = "COGNIEDIT_DEBUG"
MAX_MESSAGE = 600  # characters: a message is a line a person reads, not a dump


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (the usage text stays in --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message}; see {self.prog} --help\n")


def parser(prog: str, **kwargs) -> OneLineParser:
    p = OneLineParser(prog=prog, **kwargs)
    p.add_argument("--debug", action="store_true", help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")
    return p


def debug_requested(argv) -> bool:
    return "--debug" in (argv or ()) or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def _input_errors() -> tuple:
    """The errors that mean "your input is wrong" (their messages name the fix); imported late so that a
    command's usage errors do not wait for torch."""
    from cogniedit.shapes.editor.weights import EditorWeightsError

    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .image_records import RecordError
    from .lora import LoRAFileError
    from .models import ModelLoadError
    from .rewards.vlm_http import RewardServerError

    return (ConfigError, CheckpointError, RecordError, ModelLoadError, EditorWeightsError, RewardServerError,
            LoRAFileError)


def one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


def describe(exc: BaseException) -> tuple[str, int]:
    """(the line to print, the exit code) for an error that ends a command."""
    if isinstance(exc, _input_errors()):
        return one_line(f"error: {exc}"), 2
    if isinstance(exc, OSError):  # a path, a permission, a full disk: the environment, not a bug
        if exc.filename and exc.strerror:
            return one_line(f"error: {exc.filename}: {exc.strerror}; check the path and its permissions"), 2
        return one_line(f"error: {exc}"), 2
    return one_line(f"error: {type(exc).__name__}: {exc} (unexpected; rerun with --debug or {DEBUG_ENV}=1 for the "
                    f"traceback)"), 1


def run(body, argv=None) -> int:
    """``body()``'s exit code; an error becomes one line on stderr (or, when debugging, its traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return body()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error ends here, as one line
        if debug_requested(argv):
            raise
        line, code = describe(exc)
        print(line, file=sys.stderr)
        return code
