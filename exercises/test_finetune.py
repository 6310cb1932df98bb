"""Grades exercises/finetune.py: freezing, the LoRA config for classification, the best
checkpoint."""

import random

import pytest
import torch
from peft import get_peft_model
from torch import nn
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel


@pytest.fixture
def finetune(load):
    return load("finetune")


def tiny_classifier(seed: int, n_embd: int = 16, n_layer: int = 2, labels: int = 2):
    torch.manual_seed(seed)
    config = GPT2Config(
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        vocab_size=50,
        n_positions=32,
        num_labels=labels,
        pad_token_id=0,
    )
    return GPT2ForSequenceClassification(config)


@pytest.mark.parametrize(
    "names", [["score.weight"], ["transformer.h.0.attn.c_attn.bias", "score.weight"], []]
)
def test_freeze_all_but(finetune, names):
    model = tiny_classifier(0)
    returned = finetune.freeze_all_but(model, names)
    assert returned is model, "freeze_all_but must return the model it was given (changed in place)"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(names), f"expected exactly {names} to train, got {trainable}"


@pytest.mark.parametrize("seed", range(3))
def test_freeze_all_but_from_a_mixed_state(finetune, seed):
    """Whatever trained before (a random half here), afterwards exactly `trainable` does."""
    model = tiny_classifier(seed)
    rng = random.Random(seed)
    all_names = [n for n, _ in model.named_parameters()]
    for parameter in model.parameters():
        parameter.requires_grad = rng.random() < 0.5
    names = rng.sample(all_names, 3)
    finetune.freeze_all_but(model, names)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted(names), f"expected exactly {sorted(names)} to train, got {trainable}"


def test_freeze_all_but_unfreezes_too(finetune):
    model = tiny_classifier(0)
    for p in model.parameters():
        p.requires_grad = False
    finetune.freeze_all_but(model, ["score.weight"])
    assert model.score.weight.requires_grad, (
        "a frozen parameter named in `trainable` must train again"
    )


def test_freeze_all_but_rejects_unknown_names(finetune):
    with pytest.raises(ValueError, match="scor.weight"):
        finetune.freeze_all_but(tiny_classifier(0), ["scor.weight"])


@pytest.mark.parametrize("seed", range(3))
def test_lora_config_trains_adapters_and_head(finetune, seed):
    rng = random.Random(seed)
    r, n_embd, n_layer, labels = (
        rng.choice([1, 2, 4, 8]),
        rng.choice([16, 32]),
        rng.randint(1, 3),
        rng.randint(2, 5),
    )
    targets = rng.choice([["c_attn"], ["c_attn", "c_fc"], ["attn.c_proj"]])
    widths = {
        "c_attn": (n_embd, 3 * n_embd),
        "c_fc": (n_embd, 4 * n_embd),
        "attn.c_proj": (n_embd, n_embd),
    }
    alpha = rng.choice([1.0, 8.0, 32.0])
    config = finetune.lora_classification_config(r, alpha, targets)
    model = get_peft_model(tiny_classifier(seed, n_embd, n_layer, labels), config)
    trainable, _ = model.get_nb_trainable_parameters()
    expected = n_layer * sum(r * sum(widths[t]) for t in targets) + n_embd * labels
    assert trainable == expected, (
        f"r={r}, targets={targets}: expected {expected:,} trainable "
        f"(adapters + the {n_embd}x{labels} head), "
        f"got {trainable:,}. Is the head trained (task_type)?"
    )
    assert (config.r, config.lora_alpha) == (r, alpha), (
        f"expected r={r}, lora_alpha={alpha}; got r={config.r}, lora_alpha={config.lora_alpha}"
    )
    assert sorted(config.target_modules) == sorted(targets), f"expected target_modules {targets}"


def test_best_evaluation(finetune):
    history = [
        {"step": 10, "val_accuracy": 0.6},
        {"step": 20, "val_accuracy": 0.8},
        {"step": 30, "val_accuracy": 0.8},
        {"step": 40, "val_accuracy": 0.7},
    ]
    assert finetune.best_evaluation(history)["step"] == 20, (
        "expected the earliest of the tied best (step 20)"
    )
    shuffled = [history[3], history[2], history[0], history[1]]
    got = finetune.best_evaluation(shuffled)
    assert got["step"] == 20, (
        f"history not in step order {[h['step'] for h in shuffled]}: "
        "on a tie the earliest is the lowest "
        f"step (20), not the first in the list; got step {got['step']}"
    )
    assert got is history[1], "return the history entry itself (the same dict), not a copy"
    rng = random.Random(0)
    for _ in range(20):
        history = [{"step": s, "val_accuracy": round(rng.random(), 1)} for s in range(1, 8)]
        rng.shuffle(history)
        best = max(h["val_accuracy"] for h in history)
        expected = min(h["step"] for h in history if h["val_accuracy"] == best)
        assert finetune.best_evaluation(history)["step"] == expected, (
            f"history {history}: expected step {expected}"
        )
    single = {"step": 5, "val_accuracy": 0.0}
    assert finetune.best_evaluation([single]) is single, "a one-entry history: that entry"
    with pytest.raises(ValueError) as error:
        finetune.best_evaluation([])
    assert error.value.args and error.value.args[0], (
        "the ValueError should carry a message saying what is wrong (an empty history)"
    )


class Tree(nn.Module):
    """A parameter name that ends another one ("norm.weight", "block.norm.weight"), two layers
    of the same shape, and a BatchNorm whose running statistics are buffers, not parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.block = nn.ModuleDict({"norm": nn.LayerNorm(4), "proj": nn.Linear(4, 4)})
        self.proj = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)


def tied_lm():
    """GPT-2 with its head tied to the input embedding: one tensor, two names."""
    torch.manual_seed(0)
    config = GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=32)
    return GPT2LMHeadModel(config)


@pytest.mark.parametrize(
    "names", [["norm.weight"], ["proj.bias", "norm.bias"], ["block.norm.weight", "bn.weight"]]
)
def test_freeze_all_but_compares_whole_names(finetune, names):
    model = Tree()
    finetune.freeze_all_but(model, names)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    extra = [n for n in trainable if n not in names]
    assert trainable == sorted(names), (
        f"trainable={names}: exactly those train, got {trainable}"
        + (
            f": {extra} only end like a name given; compare whole names"
            if extra and all(any(e.endswith(n) for n in names) for e in extra)
            else ""
        )
    )


def test_freeze_all_but_random_subsets_of_a_tree_with_namesakes(finetune):
    rng = random.Random(0)
    all_names = [n for n, _ in Tree().named_parameters()]
    for _ in range(10):
        model = Tree()
        for parameter in model.parameters():
            parameter.requires_grad = rng.random() < 0.5
        names = rng.sample(all_names, rng.randint(0, 4))
        finetune.freeze_all_but(model, names)
        trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        assert trainable == sorted(names), (
            f"trainable={names}: exactly those train (whole names, whatever trained before), "
            f"got {trainable}"
        )


@pytest.mark.parametrize(
    "make, name, what",
    [
        (Tree, "bn.running_mean", "a buffer: state_dict() lists it, named_parameters() does not"),
        (Tree, "block.norm", "a module: name its parameters ('block.norm.weight')"),
        (
            tied_lm,
            "lm_head.weight",
            "the second name of a tied tensor: named_parameters() lists the tensor once, as "
            "'transformer.wte.weight'",
        ),
    ],
    ids=["buffer", "module", "tied alias"],
)
def test_freeze_all_but_refuses_what_is_no_parameter(finetune, make, name, what):
    """ "A name that is not a parameter of model is an error": the names are those of
    `model.named_parameters()`."""
    try:
        finetune.freeze_all_but(make(), [name])
    except ValueError as error:
        assert name in str(error), f"the ValueError should name {name!r}, got: {error}"
    else:
        pytest.fail(
            f"freeze_all_but(model, [{name!r}]) was accepted: {name!r} is {what}. It is not a "
            "parameter of the model, so it would train nothing: raise ValueError naming it",
            pytrace=False,
        )


def test_freeze_all_but_trains_a_tied_tensor_by_its_name(finetune):
    """named_parameters() yields a tied tensor once, under its first name: naming that trains
    the tensor (which is also the head), and nothing else trains."""
    model = tied_lm()
    finetune.freeze_all_but(model, ["transformer.wte.weight"])
    assert model.transformer.wte.weight.requires_grad, (
        "freeze_all_but(tied LM, ['transformer.wte.weight']) left the embedding frozen: it is "
        "the same tensor as lm_head.weight, so visiting it again under that second name froze "
        "it; go over model.named_parameters(), which yields each tensor once"
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["transformer.wte.weight"], (
        f"expected only the tied embedding to train, got {trainable}"
    )
