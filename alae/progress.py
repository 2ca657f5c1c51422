"""Progress bars for long work: live on a terminal, a line every 30 s in logs (dvc repro, CI)."""
from __future__ import annotations

import sys
from typing import Iterable, Optional

from tqdm import tqdm


def progress_bar(iterable: Optional[Iterable] = None, *, total: Optional[int] = None,
                 desc: str = "", unit: str = "img", enabled: bool = True) -> tqdm:
    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit == "img",
                disable=not enabled, dynamic_ncols=True, file=sys.stderr,
                mininterval=0.5 if interactive else 30.0)
