"""Errors a user can fix: stages print them as one line and exit non-zero."""
from __future__ import annotations

import functools
import os
import sys
import traceback
from typing import Callable, TypeVar


class UserError(Exception):
    """Bad input (a file, a key, a value). The message names it in one line."""


class DataError(UserError):
    """A missing, unreadable or invalid dataset, shard or manifest."""


class CheckpointError(UserError):
    """A model file that is missing, unreadable or not written by this project."""


class Stopped(UserError):
    """Asked to stop by a signal, with the state saved; exits 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


F = TypeVar("F", bound=Callable)


def exits_cleanly(fn: F) -> F:
    """Turn a UserError into `error: <message>` on stderr and exit status 1 (no traceback; set
    ALAE_DEBUG=1 to see it); a `Stopped` exits 128 + its signal, as shells expect."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if os.environ.get("ALAE_DEBUG"):
                traceback.print_exc()
            print(f"{'stopped' if isinstance(e, Stopped) else 'error'}: {e}", file=sys.stderr)
            sys.exit(getattr(e, "exit_code", 1))

    return wrapper  # type: ignore[return-value]
