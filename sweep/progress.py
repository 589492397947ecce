"""A dependency-free progress line: done/total, throughput and time left."""

from __future__ import annotations

import sys
import time


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Counts replica-epochs; reports replica-images per second.

    The first update includes compilation, so the rate is measured from it on.
    On a terminal the line redraws in place; elsewhere (CI logs) each update is
    its own line.
    """

    def __init__(self, stream=sys.stderr, width: int = 24):
        self.stream = stream
        self.width = width
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def start(self, total_units: int, *, unit_images: int) -> None:
        self.total = total_units
        self.unit_images = unit_images
        self.done = 0
        self.t0 = time.perf_counter()
        self.t_first = None
        self.done_first = 0
        self._draw()

    def advance(self, units: int) -> None:
        self.done += units
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first, self.done_first = now, self.done
        self._draw(now)

    def _draw(self, now: float | None = None) -> None:
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        text = f"[{bar}] {self.done}/{self.total} replica-epochs"
        if now is not None and self.t_first is not None and self.done > self.done_first:
            rate = (self.done - self.done_first) / (now - self.t_first)
            left = (self.total - self.done) / rate
            text += (f" | {rate * self.unit_images:,.0f} replica-img/s"
                     f" | {format_seconds(left)} left")
        elif now is not None:
            text += f" | first epoch (incl. compile) {format_seconds(now - self.t0)}"
        end = "\r" if self.tty else "\n"
        self.stream.write(text + end)
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
        total = time.perf_counter() - self.t0
        self.stream.write(f"trained {self.done} replica-epochs in {format_seconds(total)}\n")
        self.stream.flush()
