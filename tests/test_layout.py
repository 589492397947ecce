"""The layering the package promises, checked on its source and its types.

The layers and the absence of import cycles (lazy imports included) are
import-linter contracts in pyproject.toml; the tests here run the real tool on
the tree, and on a copy with one bad import planted, so a contract that could
never fail would show. What import-linter cannot say is checked directly: one
name per module, modules that fit one sitting, and the engine's Recipe taking
its fields from the Config by name.
"""

import ast
import dataclasses
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sweep import engine
from sweep.experiment import config as config_lib
from sweep.experiment import prepare as prepare_lib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (ROOT / "sweep", ROOT / "kernels")
LINT = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter over the packages under `root`, with pyproject's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in pkg.rglob("*.py"))


def test_import_contracts_hold():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.parametrize(("module", "planted"), [
    # An upward import hidden in a function: data must not know the experiment.
    ("sweep/data/subset.py", "from sweep.experiment import config"),
    # A cycle inside one layer: summary imports design, so design may not
    # import summary back.
    ("sweep/stats/design.py", "from sweep.stats import summary"),
], ids=["upward", "cycle"])
def test_contracts_catch_a_planted_import(tmp_path, module, planted):
    for name in ("sweep", "kernels"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.parquet"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / module, "a") as f:
        f.write(f"\n\ndef _planted():\n    {planted}  # noqa\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0 and "broken" in run.stdout.lower(), run.stdout


# Imported inside functions: only the optional extras, so that a missing one
# is a one-line error naming its `pip install` and the core install stays small.
OPTIONAL = {"tensorflow_datasets", "cleanlab", "ray", "keras", "mlflow", "sklearn",
            "torch", "art"}


def test_only_optional_extras_are_imported_inside_functions():
    found = set()
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Import):
                        found |= {(path.name, a.name) for a in sub.names}
                    elif isinstance(sub, ast.ImportFrom):
                        found.add((path.name, sub.module or ""))
    assert {(f, m) for f, m in found if m.split(".")[0] not in OPTIONAL} == set()


def test_no_two_modules_share_a_name():
    names = Counter(p.stem for p in modules() if p.stem not in ("__init__", "__main__"))
    assert [n for n, k in names.items() if k > 1] == []


def test_modules_fit_one_sitting():
    long = {str(p.relative_to(ROOT)): n for p in modules()
            if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


def test_recipe_takes_every_shared_field_from_the_config():
    recipe_fields = {f.name for f in dataclasses.fields(engine.Recipe)}
    config_fields = {f.name for f in dataclasses.fields(config_lib.Config)}
    # Everything the engine is built with, besides the data's sizes, is a
    # config field; a new Recipe field without one fails here.
    assert recipe_fields - config_fields == {"n_train", "n_classes"}
    changed = config_lib.Config(batch_size=64, lr=3e-4, dropout=0.25,
                                kernel="vmap", compute_dtype="bfloat16",
                                eval_batch_size=500)
    recipe = prepare_lib.recipe_for(changed, n_train=1000, n_classes=10, n_test=800)
    for name in recipe_fields & config_fields:
        assert getattr(recipe, name) == getattr(changed, name), name
    assert (recipe.n_train, recipe.n_classes) == (1000, 10)


def test_recipe_batches_are_clamped_to_the_data():
    recipe = prepare_lib.recipe_for(config_lib.Config(), n_train=100, n_classes=10,
                                    n_test=50)
    assert (recipe.batch_size, recipe.eval_batch_size) == (100, 50)


def test_recipe_defaults_are_the_config_defaults():
    # The engine is usable on its own (tests, bench) with the reference recipe;
    # it must be the same recipe a default sweep runs.
    default = engine.Recipe(n_train=50_000, n_classes=10)
    built = prepare_lib.recipe_for(config_lib.Config(), n_train=50_000,
                                   n_classes=10, n_test=10_000)
    assert default == built
