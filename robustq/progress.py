"""Progress of a training epoch (or any loop over batches), drawn by tqdm.

On a terminal: one tqdm bar per epoch with batches done, running loss/accuracy, images per
second and the time left in the epoch (tqdm's ETA), then a second, transient bar while the
epoch is validated; the finished epoch stays as one line. Elsewhere (CI, a log file, a pipe):
no bar and no control characters at all, only that final line per epoch, so logs stay
readable. Evaluation loops use the same class (``Progress(total, "eval fgsm")``).

``fields`` callables (which may synchronise a GPU) are called only when the line is about to
be redrawn, at most every ``interval`` seconds, never once per batch.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

from tqdm import tqdm

BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}"


def _clock(seconds: float) -> str:
    return tqdm.format_interval(seconds)


class Progress:
    """``update(images, fields)`` once per batch, ``close(**more_fields)`` once at the end."""

    def __init__(self, total: int, desc: str, stream: TextIO = sys.stderr, enabled: bool = True,
                 interval: float = 0.5) -> None:
        self.total, self.desc, self.stream, self.enabled = total, desc, stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.interval = interval
        self.start = self.last_update = time.perf_counter()
        self.done = self.images = 0
        self.fields: dict[str, float] = {}
        self._fields_fn: Optional[Callable[[], dict]] = None
        self._last_fields = 0.0
        self._bar = tqdm(total=total, desc=desc, file=stream, bar_format=BAR_FORMAT,
                         mininterval=interval, dynamic_ncols=True, leave=True) if self.tty else None
        self._val: Optional[tqdm] = None
        self._val_seconds = 0.0

    @property
    def rate(self) -> float:
        return self.images / max(self.last_update - self.start, 1e-9)

    def _postfix(self) -> str:
        stats = " ".join(f"{k} {v:.4g}" for k, v in self.fields.items())
        return f"{stats} {self.rate:.1f} img/s".strip()

    def update(self, images: int, fields: Optional[Callable[[], dict]] = None) -> None:
        """One batch of ``images`` done; ``fields()`` gives the running statistics."""
        self.done += 1
        self.images += images
        self._fields_fn = fields
        now = self.last_update = time.perf_counter()
        if self._bar is not None:
            if fields is not None and (now - self._last_fields > self.interval or self.done == self.total):
                self._last_fields = now
                self.fields.update(fields())
                self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.update(1)

    def validation(self, total: int, desc: str = "validating") -> Callable[[int], None]:
        """A callback to count ``total`` validation batches, drawn as a transient second bar
        on a terminal (its time goes into the epoch's final line everywhere)."""
        if self.tty:
            self._val = tqdm(total=total, desc=f"  {desc}", file=self.stream, leave=False,
                             bar_format=BAR_FORMAT, mininterval=self.interval, dynamic_ncols=True)
        started = time.perf_counter()

        def step(n: int = 1) -> None:
            if self._val is not None:
                self._val.update(n)
            self._val_seconds = time.perf_counter() - started
        return step

    def line(self) -> str:
        """The finished loop as one plain line (what a log file gets)."""
        val = f", validation {_clock(self._val_seconds)}" if self._val_seconds else ""
        return (f"{self.desc}: {self.done}/{self.total} batches in "
                f"{_clock(self.last_update - self.start)}{val}, {self._postfix()}")

    def close(self, **fields: float) -> None:
        if self._fields_fn is not None:
            self.fields.update(self._fields_fn())
            self._fields_fn = None
        self.fields.update(fields)
        if self._val is not None:
            self._val.close()
            self._val = None
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.close()
            self._bar = None
        elif self.enabled:
            self.stream.write(self.line() + "\n")
            self.stream.flush()


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
