"""Grades exercises/warmup.py: counting trainable parameters."""

import pytest
import torch
from torch import nn


@pytest.fixture
def warmup(load):
    return load("warmup")


def check(got: int, expected: int, what: str) -> None:
    assert got == expected, f"{what}: expected {expected:,} trainable parameters, got {got:,}"


@pytest.mark.parametrize("d_in,d_out,bias", [(3, 5, True), (768, 2, False), (1024, 512, True)])
def test_linear_layer(warmup, d_in, d_out, bias):
    layer = nn.Linear(d_in, d_out, bias=bias)
    check(
        warmup.count_trainable_parameters(layer),
        d_in * d_out + (d_out if bias else 0),
        f"nn.Linear({d_in}, {d_out}, bias={bias})",
    )


def test_frozen_parameters_do_not_count(warmup):
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 2))
    for p in model[0].parameters():
        p.requires_grad = False
    check(warmup.count_trainable_parameters(model), 20 * 2 + 2, "first layer frozen")


def test_bias_only(warmup):
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 1))
    for name, p in model.named_parameters():
        p.requires_grad = name.endswith("bias")
    check(warmup.count_trainable_parameters(model), 4 + 1, "BitFit (biases only)")


def test_shared_weight_counts_once(warmup):
    embedding = nn.Embedding(50, 16)
    head = nn.Linear(16, 50, bias=False)
    head.weight = embedding.weight  # tied, as in GPT-2
    model = nn.ModuleDict({"embedding": embedding, "head": head})
    check(warmup.count_trainable_parameters(model), 50 * 16, "tied input/output embedding")


def test_returns_an_int(warmup, returns):
    returns(warmup.count_trainable_parameters(nn.Linear(3, 5)), int, "count_trainable_parameters")
    returns(
        warmup.count_trainable_parameters(nn.Linear(3, 5).requires_grad_(False)),
        int,
        "count_trainable_parameters of a frozen layer",
    )


def test_random_models(warmup):
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        widths = torch.randint(1, 40, (4,), generator=generator).tolist()
        model = nn.Sequential(*[nn.Linear(a, b) for a, b in zip(widths, widths[1:])])
        expected = sum(a * b + b for a, b in zip(widths, widths[1:]))
        check(warmup.count_trainable_parameters(model), expected, f"MLP with widths {widths}")
