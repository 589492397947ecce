"""The layering the package promises, checked on its source and its types.

Lower layers import nothing from higher ones (`kernels/` knows nothing of
`sweep`, the engine nothing of configs or poisoning), and the engine's Recipe
takes its training fields from the Config by name, so the two cannot drift.
"""

import ast
import dataclasses
from pathlib import Path

import pytest

import kernels
from sweep import config as config_lib
from sweep import engine
from sweep import pipeline

SWEEP = Path(pipeline.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(Path(kernels.__file__).parent.glob("*.py")),
                         ids=lambda p: p.name)
def test_kernels_import_nothing_from_sweep(path):
    found = {n for n in imported_modules(path) if n.split(".")[0] == "sweep"}
    assert not found, f"{path.name} imports {found}"


def test_engine_knows_no_config_and_no_poisoning():
    found = imported_modules(SWEEP / "engine.py")
    assert not found & {"sweep.config", "sweep.poison", "sweep.pipeline", "sweep.data"}


def test_recipe_takes_every_shared_field_from_the_config():
    recipe_fields = {f.name for f in dataclasses.fields(engine.Recipe)}
    config_fields = {f.name for f in dataclasses.fields(config_lib.Config)}
    # Everything the engine is built with, besides the data's sizes, is a
    # config field; a new Recipe field without one fails here.
    assert recipe_fields - config_fields == {"n_train", "n_classes"}
    changed = config_lib.Config(batch_size=64, lr=3e-4, dropout=0.25,
                                kernel="vmap", compute_dtype="bfloat16",
                                eval_batch_size=500)
    recipe = pipeline.recipe_for(changed, n_train=1000, n_classes=10, n_test=800)
    for name in recipe_fields & config_fields:
        assert getattr(recipe, name) == getattr(changed, name), name
    assert (recipe.n_train, recipe.n_classes) == (1000, 10)


def test_recipe_batches_are_clamped_to_the_data():
    recipe = pipeline.recipe_for(config_lib.Config(), n_train=100, n_classes=10,
                                n_test=50)
    assert (recipe.batch_size, recipe.eval_batch_size) == (100, 50)


def test_recipe_defaults_are_the_config_defaults():
    # The engine is usable on its own (tests, bench) with the reference recipe;
    # it must be the same recipe a default sweep runs.
    default = engine.Recipe(n_train=50_000, n_classes=10)
    built = pipeline.recipe_for(config_lib.Config(), n_train=50_000, n_classes=10,
                               n_test=10_000)
    assert default == built
