"""A sweep's progress bar: replica-epochs done, replica-images per second, time left.

Through `tqdm.auto`: a redrawn bar on a terminal, a widget in Jupyter (where
`sweep.run` is called), and in a log (CI, a file) one line per update at most
every `log_every_s` seconds. Units may come in fractions: the engine ticks
inside an epoch, and a Ray run advances a whole chunk at once. The speed is
tqdm's smoothed rate, so the first epoch's compile fades out of it.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

BAR_FORMAT = ("{l_bar}{bar}| {n:.1f}/{total_fmt} replica-epochs "
              "[{elapsed}<{remaining}{postfix}]")


class _Lines:
    """A log stream for tqdm: its in-place redraws ("\\r...") become lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Counts replica-epochs; shows replica-images per second and time left."""

    def __init__(self, stream=None, log_every_s: float = 30.0):
        self.stream = sys.stderr if stream is None else stream
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every_s = log_every_s
        self.bar = None

    def start(self, total_units: int, *, unit_images: int, done: float = 0) -> None:
        """`done` replica-epochs were trained before (a resumed sweep)."""
        self.unit_images = unit_images
        self.t0 = time.perf_counter()
        self.bar = tqdm(
            total=total_units, initial=done, unit="replica-epoch",
            bar_format=BAR_FORMAT, smoothing=0.3, dynamic_ncols=True,
            file=self.stream if self.tty else _Lines(self.stream),
            mininterval=0.5 if self.tty else self.log_every_s,
            maxinterval=max(10.0, self.log_every_s), ascii=not self.tty,
            # In a log the last update is already a line; closing would repeat it.
            leave=self.tty,
        )

    def advance(self, units: float, *, partial: bool = False) -> None:
        """Add finished units; `partial` ones (mid-epoch) may wait for a redraw."""
        rate = self.bar.format_dict.get("rate")
        if rate:
            self.bar.set_postfix_str(f"{rate * self.unit_images:,.0f} replica-img/s",
                                     refresh=False)
        # Fractional ticks add up to a hair over the total in floating point;
        # tqdm would warn and show a negative time left.
        units = min(units, self.bar.total - self.bar.n)
        shown = self.bar.update(units)
        if not partial and not shown:  # a whole epoch or chunk always shows
            self.bar.refresh()

    def close(self) -> None:
        done = self.bar.n
        self.bar.close()
        self.stream.write(f"trained {done:.0f} replica-epochs in "
                          f"{format_seconds(time.perf_counter() - self.t0)}\n")
        self.stream.flush()
