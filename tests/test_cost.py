"""The cost model: FLOPs a token by hand and by torch's FLOP counter, and a run's `cost.json`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from peft_course.cli import main
from peft_course.cost import flops_per_token, matmul_parameters


def small_model(frozen_first: bool) -> nn.Module:
    """Embedding(10, 4) -> Linear(4, 3) -> Linear(3, 2) -> a head tied to the embedding."""
    torch.manual_seed(0)
    embedding = nn.Embedding(10, 4)
    first, second = nn.Linear(4, 3), nn.Linear(3, 2)
    back, head = nn.Linear(2, 4, bias=False), nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight  # tied, as GPT-2's LM head is: one matrix, counted once
    first.requires_grad_(not frozen_first)
    return nn.Sequential(embedding, first, second, back, head)


def test_matmul_weights_and_flops_by_hand():
    # weights that multiply a token: 4x3 + 3x2 + 2x4 + 4x10 (tied head) = 12 + 6 + 8 + 40 = 66
    assert matmul_parameters(small_model(frozen_first=False)) == (66, 66)
    assert matmul_parameters(small_model(frozen_first=True)) == (66, 54)  # 4x3 frozen
    # 2*66 forward + 2*66 backward through the activations + 2*54 weight gradients
    assert flops_per_token(66, 54) == 132 + 132 + 108
    assert flops_per_token(66, 66) == 6 * 66  # full fine-tuning: the familiar 6N


@pytest.mark.parametrize("frozen_first", [False, True])
def test_flops_per_token_is_what_torch_counts(frozen_first):
    """torch's FLOP counter over a forward and backward pass gives the formula exactly, when a
    trainable layer below (here the embedding) makes every layer pass its gradient down."""
    model = small_model(frozen_first)
    tokens = torch.randint(0, 10, (3, 5))
    with FlopCounterMode(display=False) as counter:
        model(tokens).sum().backward()
    assert counter.get_total_flops() == flops_per_token(*matmul_parameters(model)) * tokens.numel()


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A short LoRA run on tiny-gpt2, its printed output and its directory."""
    output = tmp_path_factory.mktemp("cost") / "lora"
    command = ["finetune", "--method", "lora", "--output", str(output)]
    command += ["--max-examples", "40", "--epochs", "1", "--no-progress"]
    return main(command), output


def test_a_finished_run_records_its_cost(lora_run, capsys):
    status, output = lora_run
    assert status == 0
    cost = json.loads((output / "cost.json").read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    assert 0 < cost["utilisation"] < 1
    assert cost["padded_tokens_per_second"] >= cost["real_tokens_per_second"] > 0
    assert cost["flops_per_token"] == flops_per_token(
        cost["matmul_parameters"], cost["trainable_matmul_parameters"]
    )
    assert cost["trainable_matmul_parameters"] < cost["matmul_parameters"]  # the base is frozen
    # AdamW keeps two float32 moments per trainable weight, and a 4-byte step per tensor
    extra = cost["optimizer_state_bytes"] - 8 * metrics["trainable_params"]
    assert 0 < extra < 4 * 100 and extra % 4 == 0
    assert cost["peak_memory_bytes"] > 0
