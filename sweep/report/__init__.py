"""The report: figures, report.md and a self-contained report.html beside the results.

`facts` holds the numbers the report states and the tables it draws;
`figures` draws them (pure functions, tables in, matplotlib `Figure` out);
`rendering` turns facts into words and lays out Markdown and HTML;
`training_set` reloads the training images for the figures that show them;
`write` puts it together: `write_report(results_dir)`.
"""

from sweep.report.facts import Facts, facts_of
from sweep.report.write import write_report

__all__ = ["Facts", "facts_of", "write_report"]
