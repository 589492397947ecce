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

    Units may come in fractions (the engine ticks inside an epoch). The first
    update includes compilation, so the rate is measured from it on. On a
    terminal the line redraws in place, at most twice a second; elsewhere (CI
    logs) each update is its own line, at most one every `log_every_s`
    seconds plus one per whole epoch.
    """

    def __init__(self, stream=sys.stderr, width: int = 24, log_every_s: float = 30.0):
        self.stream = stream
        self.width = width
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.min_gap = 0.5 if self.tty else log_every_s

    def start(self, total_units: int, *, unit_images: int) -> None:
        self.total = total_units
        self.unit_images = unit_images
        self.done = 0.0
        self.t0 = time.perf_counter()
        self.t_first = None
        self.done_first = 0.0
        self.last_draw = float("-inf")
        self._draw()

    def advance(self, units: float, *, partial: bool = False) -> None:
        """Add finished units; `partial` ones (mid-epoch) redraw only now and then."""
        self.done += units
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first, self.done_first = now, self.done
        if not partial or now - self.last_draw >= self.min_gap:
            self._draw(now)

    def _draw(self, now: float | None = None) -> None:
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        shown = f"{self.done:.0f}" if abs(self.done - round(self.done)) < 1e-6 \
            else f"{self.done:.1f}"
        text = f"[{bar}] {shown}/{self.total} replica-epochs"
        if now is not None and self.t_first is not None and self.done > self.done_first:
            rate = (self.done - self.done_first) / (now - self.t_first)
            left = (self.total - self.done) / rate
            text += (f" | {rate * self.unit_images:,.0f} replica-img/s"
                     f" | {format_seconds(left)} left")
        elif now is not None:
            text += f" | first epoch (incl. compile) {format_seconds(now - self.t0)}"
        end = "\r" if self.tty else "\n"
        # Pad so a shorter line fully covers the previous one on a terminal.
        self.stream.write(text.ljust(78) + end if self.tty else text + end)
        self.stream.flush()
        self.last_draw = time.perf_counter()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
        total = time.perf_counter() - self.t0
        self.stream.write(f"trained {self.done:.0f} replica-epochs in "
                          f"{format_seconds(total)}\n")
        self.stream.flush()
