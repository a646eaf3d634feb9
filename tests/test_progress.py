"""The progress bar: clean redraws with an ETA on a terminal, one plain line per epoch elsewhere."""
from __future__ import annotations

import io
import re

from robustq.progress import Progress

class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(text: str) -> list[str]:
    """What a terminal shows: ``\r`` returns to column 0 and overwrites in place, ``\n``
    moves down, ``ESC[A`` up (how tqdm places a second bar)."""
    rows: list[list[str]] = [[]]
    r = c = 0
    for tok in re.findall(r"\x1b\[[0-9;]*[A-Za-z]|.|\n", text):
        if tok == "\n":
            r, c = r + 1, 0
            rows += [[] for _ in range(r + 1 - len(rows))]
        elif tok == "\r":
            c = 0
        elif tok.startswith("\x1b"):
            if tok.endswith("A"):
                r = max(0, r - int(tok[2:-1] or 1))
        else:
            row = rows[r]
            row += [" "] * (c + 1 - len(row))
            row[c], c = tok, c + 1
    return [ln for ln in ("".join(row).rstrip() for row in rows) if ln]


def run(stream, batches=30, validate=0, interval=0.0):
    bar = Progress(batches, "epoch 1/2 BR", stream=stream, interval=interval)
    for i in range(batches):
        # the rate shrinks from 5 to 4 digits: a bar that does not clear leaves a tail
        bar.update(8, lambda: {"loss": 10.0 / (i + 1), "acc": 0.5})
    if validate:
        step = bar.validation(validate)
        for _ in range(validate):
            step(1)
    bar.close(val_acc=0.75, val_rob=0.25)
    return stream.getvalue()


def test_terminal_redraws_cleanly_with_an_eta():
    out = run(Terminal())
    shown = screen(out)
    assert len(shown) == 1, shown               # one line left per epoch
    line = shown[0]
    assert "30/30" in line and "<" in line and "img/s" in line and "val_rob 0.25" in line
    assert not re.search(r"img/s\S", line)      # no "img/sss" left from a longer draw
    assert "\r" in out                          # it did redraw in place


def test_validation_bar_is_transient_on_a_terminal():
    shown = screen(run(Terminal(), validate=4))
    assert len(shown) == 1 and "val_acc 0.75" in shown[0]


def test_a_log_file_gets_one_plain_line_per_epoch():
    out = run(io.StringIO(), validate=3)
    assert out.count("\n") == 1 and "\r" not in out and "\x1b" not in out
    assert out.startswith("epoch 1/2 BR: 30/30 batches in ") and "validation " in out
    assert "loss " in out and "val_rob 0.25" in out and "img/s" in out


def test_disabled_prints_nothing():
    s = io.StringIO()
    bar = Progress(3, "x", stream=s, enabled=False)
    for _ in range(3):
        bar.update(1, lambda: {"loss": 1.0})
    bar.close(val_acc=1.0)
    assert s.getvalue() == "" and bar.fields["loss"] == 1.0 and bar.rate > 0
