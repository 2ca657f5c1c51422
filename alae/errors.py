"""Errors a user can fix: stages print them as one line and exit non-zero."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar


class UserError(Exception):
    """Bad input (a file, a key, a value). The message names it in one line."""


class DataError(UserError):
    """A missing, unreadable or invalid dataset, shard or manifest."""


class CheckpointError(UserError):
    """A model file that is missing, unreadable or not written by this project."""


F = TypeVar("F", bound=Callable)


def exits_cleanly(fn: F) -> F:
    """Turn a UserError into `error: <message>` on stderr and exit status 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
