"""argparse types of the numeric options of both commands, `watchtower` and `pmta-sim`, and what both do with a
stdout whose reader went away.

A number the process cannot use (0, a negative, nan, inf, or a speed that would write gigabytes of logs) is a
usage error naming the option, exit 2, never a traceback deep in httpx or asyncio.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

MAX_SPEED = 3600.0
"""Fastest `--speed` (`watchtower demo`, `pmta-sim run`): an hour of simulated traffic per real second."""
MAX_DURATION = 30 * 86400.0
"""Longest `--duration` (real seconds) of `watchtower demo` and `pmta-sim run`."""


def positive_float(text: str) -> float:
    """A finite number > 0 (a timeout of 0, -1, nan or inf is a usage error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number greater than 0, got {text!r}")
    return value


def at_most(most: float) -> Callable[[str], float]:
    """A positive_float with an upper bound (`healthcheck --timeout 1e10` was an OverflowError where the timeout
    became a deadline; `demo --speed 1e300` wrote gigabytes of logs)."""
    def bounded(text: str) -> float:
        value = positive_float(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"expected a number greater than 0 and at most {most:.0f}, got {text!r}")
        return value
    return bounded


def abandon_stdout(command_line: bool) -> None:
    """After a failed write (the reader of `| head` gone) the buffer still holds the text, and the interpreter's exit
    would try it again (`Exception ignored ... BrokenPipeError`): from the command line, stdout becomes /dev/null (the
    recipe of Python's signal docs); in-process (tests) it is left alone."""
    if not command_line or sys.stdout is None:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
