"""Peak memory of a process and its children, sampled: the sum of each one's proportional set
size (Pss in /proc/<pid>/smaps_rollup, so pages shared after a fork are counted once in all).
Linux only; used by the shard, loader and evaluate benchmarks."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional

SAMPLE_S = 0.2


class TreeMemory(threading.Thread):
    """The peak over time of the summed Pss (MiB) of process `root` (default: this one) and its
    direct children (shard or loader workers), sampled every SAMPLE_S seconds."""

    def __init__(self, root: Optional[int] = None):
        super().__init__(daemon=True)
        self.root = root or os.getpid()
        self.peak_mib = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while True:  # a first sample at once: a short run still gets one
            self.peak_mib = max(self.peak_mib, sum(map(pss_kib, tree(self.root))) / 1024)
            if self.done.wait(SAMPLE_S):
                return

    def __enter__(self) -> "TreeMemory":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()


def tree(root: int) -> list[int]:
    """Process `root` and its direct children, by scanning /proc."""
    pids = [root]
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == root:  # field 4, after the (comm)
                pids.append(int(entry.name))
    return pids


def pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")),
                0)
