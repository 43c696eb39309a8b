"""Fixtures shared by the compression tests: the digits data set and small trained models.

Session-scoped, so each is trained once per test process; tests that change a model work on
``copy.deepcopy`` of it. ``trained(factory, seed)`` trains (and caches) any other model.
"""

from __future__ import annotations

import copy

import pytest
import torch

from zeroskip.sw.data import load_digits
from zeroskip.sw.models import digits_cnn, digits_mlp
from zeroskip.sw.prune import magnitude_prune
from zeroskip.sw.train import train

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def trained(digits):
    """``trained(name, factory, seed)``: ``factory()`` trained on the digits (15 epochs, lr
    3e-3) after ``torch.manual_seed(seed)``; cached by ``(name, seed)``."""
    cache: dict = {}

    def get(name, factory, seed=0):
        if (name, seed) not in cache:
            torch.manual_seed(seed)
            cache[name, seed] = train(factory(), digits.x_train, digits.y_train, epochs=15,
                                      lr=3e-3)
        return cache[name, seed]
    return get


@pytest.fixture(scope="session")
def mlp(trained):
    """A 64-64-32-10 MLP (seed 0)."""
    return trained("mlp", lambda: digits_mlp((64, 32)), 0)


@pytest.fixture(scope="session")
def cnn(trained):
    """The digits CNN with BatchNorm (seed 0)."""
    return trained("cnn", digits_cnn, 0)


@pytest.fixture(scope="session")
def pruned(digits, mlp):
    """``mlp`` pruned to 80% (per layer), fine-tuned, masks made permanent (plain layers)."""
    m = copy.deepcopy(mlp)
    masks = magnitude_prune(m, 0.8)
    train(m, digits.x_train, digits.y_train, epochs=5, lr=1e-3)
    return masks.remove()
