"""Grades exercises/warmup.py: counting trainable parameters."""

import random

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


def test_tensors_of_the_same_shape_each_count(warmup):
    """Only *one* tensor used twice counts once: two layers of the same shape are two tensors."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4, bias=False))
    check(
        warmup.count_trainable_parameters(model),
        3 * 16 + 2 * 4,
        "three nn.Linear(4, 4) layers (distinct tensors of equal shapes and sizes, each counted)",
    )


def random_tree(rng: random.Random):
    """A module tree of layers drawn from three shapes (so shapes repeat), a BatchNorm (its
    running statistics are buffers, not parameters), some layers frozen and some weights tied
    to an earlier layer's of the same shape; and the expected count, tallied while building."""
    shapes = [(3, 5), (5, 3), (4, 4)]
    tree, counted, weights = nn.ModuleDict(), {}, {}
    for k in range(rng.randint(3, 8)):
        d_in, d_out = rng.choice(shapes)
        layer = nn.Linear(d_in, d_out, bias=rng.random() < 0.7)
        if (d_in, d_out) in weights and rng.random() < 0.4:
            layer.weight = weights[(d_in, d_out)]  # tied: one tensor in two layers
        weights.setdefault((d_in, d_out), layer.weight)
        if rng.random() < 0.3:
            layer.requires_grad_(False)  # a tied tensor frozen here is frozen everywhere
        tree[f"layer{k}"] = layer
    tree["norm"] = nn.BatchNorm1d(4)
    for parameter in tree.parameters():
        counted[id(parameter)] = parameter.numel() if parameter.requires_grad else 0
    return tree, sum(counted.values())


def test_random_trees_with_repeated_shapes_ties_and_buffers(warmup):
    rng = random.Random(0)
    for _ in range(20):
        tree, expected = random_tree(rng)
        check(
            warmup.count_trainable_parameters(tree),
            expected,
            "layers of repeated shapes, some frozen, some weights tied, beside a BatchNorm's "
            "buffers (each distinct trainable tensor counts once; buffers are not parameters)",
        )
