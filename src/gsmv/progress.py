"""Progress for people: a live tqdm bar on a terminal; in a log file, a plain line now and then.

tqdm redraws its bar with carriage returns even when stderr is a file or a pipe (`gsmv run > log 2>&1` wrote
200 KB of redraws in seven minutes), so every gsmv progress bar is made here:

    bar = progress.bar(total=n, desc="finetune", unit="step", disable=not is_main)
    for x in progress.bar(items, desc="score test", unit="shard"): ...

On a terminal this is tqdm itself. Elsewhere it is a LineBar: one line on stdout (where the stages' start and
end lines go, so they stay in order) each time another tenth of the work is done, at most one line per
LINE_GAP_S and at least one per QUIET_MAX_S. Whether stderr is a terminal decides, since that is where a live
bar would draw.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

LINE_STEP = 0.10  # a line each time another tenth of the total is done ...
LINE_GAP_S = 30.0  # ... but never two lines closer than this (a fast stage writes none: its end line says it all)
QUIET_MAX_S = 300.0  # a slow stage still shows it is alive this often


def live(stream: TextIO | None = None) -> bool:
    """True when progress can be drawn as live bars: the stream bars draw on (stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream (pytest's capture) is no terminal
        return False


def bar(iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str = "", unit: str = "item",
        initial: float = 0, disable: bool | None = False) -> Any:
    """A tqdm bar on a terminal, a LineBar elsewhere; same calls (update, set_postfix, close, iteration).

    disable=None follows tqdm: no bar at all off a terminal (for steps too short to report)."""
    if live():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable,
                    dynamic_ncols=True)
    return LineBar(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=bool(disable is None or disable))


def quiet_library_bars() -> None:
    """Off a terminal, turn off the bars transformers and huggingface_hub draw themselves ("Loading weights",
    "Writing model shards", downloads): they would be redraw noise in the log. The environment variable reaches
    a library imported later (and processes started from this one); the calls, one already imported."""
    if live():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def duration(secs: float) -> str:
    """42 s, 3 min 05 s, 2 h 07 min: short enough for a log line, exact enough to plan by."""
    secs = max(0.0, secs)
    if secs < 60:
        return f"{secs:.0f} s"
    if secs < 3600:
        return f"{int(secs // 60)} min {int(secs % 60):02d} s"
    return f"{int(secs // 3600)} h {int(secs % 3600 // 60):02d} min"


class LineBar:
    """A progress bar for a log: `desc: 21 of 42 steps (50%), 12 s elapsed, about 12 s left, loss=3.2`."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str = "",
                 unit: str = "item", initial: float = 0, disable: bool = False, file: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit, self.disable = iterable, total, desc, unit, disable
        self.n = self.start_n = initial
        self.file, self.clock = file, clock
        self.t0 = self.last_t = clock()
        self.last_n = initial
        self.postfix = ""

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LineBar: nothing to iterate (made with total= only)")
        try:
            for x in self.iterable:
                yield x
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.disable:
            return
        now = self.clock()
        gap = now - self.last_t
        if self.total and self.n >= self.total:
            return  # finished: the stage's end line says so
        step_done = bool(self.total) and (self.n - self.last_n) >= LINE_STEP * self.total  # type: ignore[operator]
        if (step_done and gap >= LINE_GAP_S) or gap >= QUIET_MAX_S:
            self.last_t, self.last_n = now, self.n
            print(self.line(now), file=self.file or sys.stdout, flush=True)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def line(self, now: float) -> str:
        elapsed = now - self.t0
        unit = self.unit + ("es" if self.unit.endswith(("s", "sh", "ch", "x")) else "s")
        done = f"{self.n:g} of {self.total:g} {unit}" if self.total else f"{self.n:g} {unit}"
        parts = [f"  {self.desc}: {done}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else ""),
                 f"{duration(elapsed)} elapsed"]
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        if self.total and rate > 0:
            parts.append(f"about {duration((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def close(self) -> None:
        """Silent: the stage's end line (gsmv.pipeline) reports how it ended."""
        self.disable = True
