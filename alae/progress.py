"""Progress bars for long work: live on a terminal, a line every 30 s in logs (dvc repro, CI)."""
from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, unit: str = "img", enabled: bool = True) -> tqdm:
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not enabled,
                dynamic_ncols=True, mininterval=0.5 if interactive else 30.0, file=sys.stderr)
