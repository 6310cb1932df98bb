"""A command loads only what it uses: what an import pulls in, read from `sys.modules`.

peft takes seconds to import (bitsandbytes with it), trl, matplotlib and sympy a second or so
each; `peft-course count` and `info` are meant to start in seconds (the measured times are in
the commit that made the imports lazy; timing is not tested here, only what is imported).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("trl", "peft", "bitsandbytes", "matplotlib", "sympy")
# one fresh interpreter: what the command line and its handlers load, then what a count adds,
# then what the training loop adds
PROBE = f"""
import json, sys
def heavy():
    return [m for m in {HEAVY!r} if m in sys.modules]
import peft_course.cli, peft_course.commands
print(json.dumps(heavy()))
from peft_course.counting import count_method
result = count_method("bitfit")  # what `peft-course count --method bitfit` runs
assert result.trainable == result.formula_value, result
print(json.dumps(heavy()))
import peft_course.finetune, peft_course.training  # head and full fine-tuning's loop
print(json.dumps(heavy()))
"""


@pytest.fixture(scope="module")
def loaded() -> list[list[str]]:
    """The heavy libraries loaded after importing the command line, after a count, and after
    importing the training loop."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    )
    return [json.loads(line) for line in result.stdout.strip().splitlines()[-3:]]


def test_the_command_line_and_its_handlers_load_no_heavy_library(loaded):
    assert loaded[0] == []


def test_counting_loads_sympy_but_not_peft(loaded):
    """GPT-2 small built, counted, and the formula's count: sympy (the formula), no peft."""
    assert loaded[1] == ["sympy"]


def test_the_training_loop_loads_neither_peft_nor_trl(loaded):
    """Head and full fine-tuning apply no adapter: the loop, `finetune` and the demo's first
    phases must not pull in peft or bitsandbytes (transformers' `set_seed` once did, through
    its trainer utilities) nor trl."""
    assert not {"peft", "bitsandbytes", "trl"} & set(loaded[2])
