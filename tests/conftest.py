"""Shared fixtures: the embedded model and data, built once per test session, never the hub."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch

from peft_course.data import load_classification_data
from peft_course.models import load_model


# The models under test are tiny: a second thread costs more in coordination than it saves,
# and on a busy 2-core machine it can make a step many times slower.
torch.set_num_threads(1)

# pytest-xdist hands out whole files in this order (`--no-loadscope-reorder` in the Makefile), so
# the two files whose subprocesses take longest start first, one on each process: begun last,
# the demo's 131 s left one process idle at the end (the run took 282 s; 234 s in this order).
SLOW_FIRST = ("test_demo.py", "test_mistakes.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the slow files first; the rest keep their order (the sort is stable)."""
    rank = {name: k for k, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))


@pytest.fixture(scope="session")
def sentiment():
    """The generated sentiment set (2,000 / 400 / 400 rows)."""
    return load_classification_data("synthetic-sentiment")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return load_model("tiny-gpt2")[1]


@pytest.fixture
def tiny_classifier():
    """A fresh tiny-gpt2 classifier (2 labels) and its tokenizer."""
    return load_model("tiny-gpt2", "classification", num_labels=2)


@pytest.fixture
def stop_training_after_one_epoch(monkeypatch):
    """`stop(module)` makes `module.train` raise KeyboardInterrupt after its first epoch (as Ctrl-C
    would, once that epoch's checkpoint is saved) and returns the real `train`, to put back."""

    def stop(module):
        real_train = module.train

        def interrupted(*args, **kwargs):
            def interrupt(epoch, _):
                raise KeyboardInterrupt

            return real_train(*args, on_epoch_end=interrupt, **kwargs)

        monkeypatch.setattr(module, "train", interrupted)
        return real_train

    return stop
