# %% [markdown]
# # Poisoning a classifier from a notebook
#
# The `sweep` Python API, cell by cell (`# %%` cells run in VS Code, Jupyter
# via jupytext, or as a plain script: `python examples/notebook.py`).
# It trains SimpleCNN replicas on the CIFAR-10 sample embedded in the package,
# flipping 100 and 300 of its cat labels to dog, with 4 seeds, and looks at
# what the poison did. `SWEEP_EXAMPLE_QUICK=1` shrinks it to seconds (CI).

# %%
import os
import sys

import sweep

quick = os.environ.get("SWEEP_EXAMPLE_QUICK") == "1"
settings = (
    dict(train_size=400, counts=[5, 20], seeds=2, epochs=1)
    if quick
    else dict(train_size=5000, counts=[100, 300], seeds=4, epochs=2)
)
out = sys.argv[1] if len(sys.argv) > 1 else None  # default: results/<name>

# %% Train (a second run of this cell continues or reuses the same folder)
res = sweep.run(data="sample", out=out, progress=not quick, **settings)
res

# %% The per-class effect of the poison, paired with each seed's clean twin
summary = res.summary
cat_dog = summary[summary["class_name"].isin(["cat", "dog"])]
print(cat_dog[["count", "class_name", "n_seeds", "delta_mean", "ci_low", "ci_high",
               "p_value"]].to_string(index=False))

# %% Per-replica, per-epoch numbers: one tidy row per replica x epoch x class
last = res.metrics[res.metrics["epoch"] == res.metrics["epoch"].max()]
print(last.groupby("count")["test_accuracy"].mean())

# %% Figures are matplotlib Figures: a notebook shows them inline
fig = res.plot_dose_response()
fig.savefig(res.path / "example_dose_response.png")
figures = res.figures()
print(sorted(figures))

# %% The full report (HTML with every figure), and reading the folder back later
print(res.report())
again = sweep.load(res.path)
assert again.summary.equals(sweep.load(res.path).summary)
print(again.manifest["config"]["counts"], again.manifest["data_hash"])
