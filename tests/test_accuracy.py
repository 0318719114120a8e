"""Accuracy floors on the real data, a couple of points under what the recipes measured (2026-11-23, this
machine, seed 42; default.yaml re-measured 2026-11-24): an accuracy regression fails here instead of passing the
suite."""

import re

import pytest

pytestmark = pytest.mark.slow


def accuracy(output: str) -> float:
    """The test accuracy `--test_after_fit` printed, in %."""
    return float(re.search(r"test accuracy: ([\d.]+) %", output).group(1))


def test_default_recipe_in_3_epochs_stays_above_86_percent(workspace):
    """configs/default.yaml shortened to 3 epochs (its OneCycle follows the run length) measured 88.14 %."""
    result = workspace.run(
        "fashion-mnist fit --config configs/default.yaml --trainer.max_epochs=3 --test_after_fit true", timeout=400
    )
    assert accuracy(result.output) >= 86.0


def test_the_seed_articles_one_epoch_stays_above_82_percent(workspace):
    """configs/seed.yaml (the article's network, batch, optimizer, one epoch) measured 83.72 %."""
    result = workspace.run("fashion-mnist fit --config configs/seed.yaml --test_after_fit true", timeout=300)
    assert accuracy(result.output) >= 82.0
