"""A small progress bar: batches done, running loss/accuracy and images per second.

On a terminal it redraws one line; elsewhere (CI logs, files) it prints only the epoch's
final line, so logs stay readable.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO


class Progress:
    def __init__(self, total: int, desc: str, stream: TextIO = sys.stderr, enabled: bool = True) -> None:
        self.total, self.desc, self.stream, self.enabled = total, desc, stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.start = time.perf_counter()
        self.done = 0
        self.images = 0
        self.last_draw = 0.0
        self.last_update = self.start
        self.fields: dict[str, float] = {}
        self._fields_fn: Optional[Callable[[], dict]] = None

    def update(self, images: int, fields: Optional[Callable[[], dict]] = None) -> None:
        """One batch of ``images`` done; ``fields()`` (which may sync a device) is called
        only when the line is redrawn."""
        self.done += 1
        self.images += images
        self._fields_fn = fields
        now = self.last_update = time.perf_counter()
        if self.tty and (now - self.last_draw > 0.2 or self.done == self.total):
            self.last_draw = now
            self._draw(end="")

    @property
    def rate(self) -> float:
        return self.images / max(self.last_update - self.start, 1e-9)

    def _draw(self, end: str) -> None:
        width = 20
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        if self._fields_fn is not None:
            self.fields.update(self._fields_fn())
        stats = " ".join(f"{k} {v:.4g}" for k, v in self.fields.items())
        self.stream.write(f"\r{self.desc} [{bar}] {self.done}/{self.total} {stats} "
                          f"{self.rate:.1f} img/s{end}")
        self.stream.flush()

    def close(self, **fields: float) -> None:
        if self._fields_fn is not None:
            self.fields.update(self._fields_fn())
            self._fields_fn = None
        self.fields.update(fields)
        if self.enabled:
            self._draw(end="\n")


class WorkBar:
    """A tqdm bar over units of work (evaluation: gradient and forward passes x examples),
    with the time left; lines logged meanwhile appear above it. Shown on a terminal only."""

    def __init__(self, total: float, desc: str, enabled: bool = True) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.bar = tqdm(total=max(total, 1e-9), desc=desc, leave=False, dynamic_ncols=True,
                        disable=None if enabled else True,   # None: only on a terminal
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")

    def update(self, work: float) -> None:
        self.bar.update(work)

    def set_description(self, desc: str) -> None:
        self.bar.set_description(desc, refresh=False)

    def write(self, line: str, log: Callable[[str], None] = print) -> None:
        with self._tqdm.external_write_mode():
            log(line)

    def close(self) -> None:
        self.bar.close()


def work_bar(total: float, desc: str, enabled: bool = True) -> WorkBar:
    return WorkBar(total, desc, enabled)
