"""The progress bar as a log shows it (CI, a file): one line per update."""

from __future__ import annotations

import io

from sweep.experiment.running.progress import Progress


def test_fractional_ticks_end_at_the_total_once_and_without_warning():
    # Ten ticks of 0.1 sum to a hair over 1.0 in floating point; tqdm warned
    # ("clamping frac") and showed a negative time left. Warnings are errors here.
    stream = io.StringIO()
    bar = Progress(stream=stream, log_every_s=0)
    bar.start(3, unit_images=10)
    for _ in range(30):
        bar.advance(0.1, partial=True)
    bar.advance(1e-7)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "trained 3 replica-epochs in 0s"
    finals = [line for line in lines if line.startswith("100%")]
    assert len(finals) == 1, lines
    assert "3.0/3 replica-epochs" in finals[0]
    assert "<-" not in stream.getvalue()
