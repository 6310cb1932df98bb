"""The PEFT family (`peft_course.peft_family`): every method prepares tiny-gpt2 or is refused.

Each method is an entry of the registry and a `prepare` function. The tests check what each one
trains, that it starts out as the base model where it should, that the soft prompts read the head
at the right position, that the Llama-only methods are refused on GPT-2 in one line, and, over
every tuner type of peft, which wrap tiny-gpt2 and tiny-llama (so that a peft upgrade that
changes it is noticed). Training is checked on tiny sizes only; the accuracies per method are
measured by the command in the registry's comment.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft.utils import PeftType
from torch import nn

from peft_course import peft_family as pf
from peft_course import registry
from peft_course.cli import main
from peft_course.demo import DEMO_SETTINGS
from peft_course.errors import CourseError
from peft_course.models import count_parameters, load_model
from peft_course.tolerances import LOGITS_ATOL
from peft_course.training import TrainConfig, train

FAMILY = [name for name, method in registry.METHODS.items() if not method.in_demo]
LLAMA_ONLY = ["olora", "loha", "lokr", "oft", "boft"]
ON_GPT2 = [name for name in FAMILY if name not in LLAMA_ONLY]
SOFT_PROMPTS = ["prompt-tuning", "prefix-tuning", "p-tuning"]
FAST = ["--max-examples", "40", "--epochs", "1", "--no-progress"]
TEXTS = ["a wonderful, moving film with a fine cast", "dull"]


@pytest.fixture(scope="module")
def gpt2():
    """tiny-gpt2's classifier (2 labels) and tokenizer, copied by each test that changes it."""
    return load_model("tiny-gpt2", "classification", num_labels=2)


@pytest.fixture(scope="module")
def llama():
    """tiny-llama's classifier (2 labels) and tokenizer."""
    return load_model("tiny-llama", "classification", num_labels=2)


def prepared(base: nn.Module, name: str) -> nn.Module:
    """A copy of `base` prepared by method `name` with its defaults."""
    return registry.get_method(name).function("prepare")(copy.deepcopy(base))


def trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_the_family_is_registered_and_leaves_the_demo_as_it_was():
    assert FAMILY == [
        "bitfit",
        "houlsby",
        "pfeiffer",
        "ia3",
        "ln-tuning",
        "prompt-tuning",
        "prefix-tuning",
        "p-tuning",
        "rslora",
        "dora",
        "pissa",
        "vera",
        "adalora",
        "lora-plus",
        *LLAMA_ONLY,
    ]
    demo = ["head", "lora", "lora-scratch", "gpt2-scratch", "merged", "qlora", "full"]
    assert [setting.method for setting in DEMO_SETTINGS] == demo
    for name in FAMILY:
        assert callable(registry.get_method(name).function("prepare"))


@pytest.mark.parametrize("name", ON_GPT2)
def test_each_method_trains_the_head_and_the_base_stays_frozen(gpt2, name):
    """The head trains under every method (peft saves a copy of `score`); no base weight of the
    backbone trains except BitFit's biases."""
    model = prepared(gpt2[0], name)
    names = trainable_names(model)
    assert any("score" in n for n in names), names
    backbone = [n for n in names if ".transformer." in n or n.startswith("transformer.")]
    kinds = {"bitfit": ("bias",), "houlsby": ("adapter.",), "pfeiffer": ("adapter.",)}
    allowed = (
        "lora_",
        "ia3_",
        "vera_lambda",
        "ln_tuning_layers",
        "modules_to_save",
        *kinds.get(name, ()),
    )
    assert all(any(part in n for part in allowed) for n in backbone), backbone
    assert 0 < count_parameters(model)[0] < count_parameters(gpt2[0])[1] / 4  # P-tuning: 18%


@pytest.mark.parametrize("name", [n for n in ON_GPT2 if n not in SOFT_PROMPTS])
def test_each_method_starts_out_as_the_base_model(gpt2, name):
    """Adapters, scales and low-rank updates start at the identity (PiSSA splits the weight
    into a principal and a residual part that add up to it)."""
    base, tokenizer = gpt2
    inputs = tokenizer(TEXTS, return_tensors="pt", padding=True)
    model = prepared(base, name).eval()
    with torch.no_grad():
        expected, got = base.eval()(**inputs).logits, model(**inputs).logits
    assert torch.allclose(got, expected, atol=LOGITS_ATOL), (got - expected).abs().max()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("name", SOFT_PROMPTS)
def test_soft_prompts_read_the_head_at_the_last_real_token(gpt2, llama, kind, name):
    """A right-padded row scores what it scores alone: the head reads its last real token, not
    a pad (prompt tuning and P-tuning give the model embeddings, from which the classifier
    cannot find the padding)."""
    base, tokenizer = gpt2 if kind == "gpt2" else llama
    model = prepared(base, name).eval()
    with torch.no_grad():
        batch = model(**tokenizer(TEXTS, return_tensors="pt", padding=True)).logits
        alone = torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in TEXTS])
    assert torch.allclose(batch, alone, atol=LOGITS_ATOL), (batch - alone).abs().max()


def test_without_the_fix_a_padded_row_reads_a_pad(gpt2):
    """The comparison above can fail: peft's prompt tuning alone scores a pad position."""
    from peft import PromptTuningConfig, get_peft_model

    base, tokenizer = gpt2
    model = get_peft_model(
        copy.deepcopy(base), PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=8)
    ).eval()
    with torch.no_grad():
        batch = model(**tokenizer(TEXTS, return_tensors="pt", padding=True)).logits
        alone = model(**tokenizer(TEXTS[1:], return_tensors="pt")).logits
    assert (batch[1] - alone[0]).abs().max() > 1e-3


def test_houlsby_and_pfeiffer_place_adapters_after_attention_and_mlp(gpt2, llama):
    def adapted(model: nn.Module) -> list[str]:
        """The projections an adapter follows, block index dropped (`mlp.c_proj`)."""
        names = [n.split(".adapter.")[0] for n in trainable_names(model) if ".adapter." in n]
        return sorted({n.split(".", 3)[-1] for n in names})

    assert adapted(prepared(gpt2[0], "houlsby")) == ["attn.c_proj", "mlp.c_proj"]
    assert adapted(prepared(gpt2[0], "pfeiffer")) == ["mlp.c_proj"]
    assert adapted(prepared(llama[0], "houlsby")) == ["mlp.down_proj", "self_attn.o_proj"]
    assert adapted(prepared(llama[0], "pfeiffer")) == ["mlp.down_proj"]


def test_the_adapters_package_is_not_used():
    """AdapterHub's `adapters` 1.3 pins transformers 4.57; the adapters here are the course's."""
    import importlib.util

    assert importlib.util.find_spec("adapters") is None


@pytest.mark.parametrize("name", LLAMA_ONLY)
def test_llama_only_methods_are_refused_on_gpt2_in_one_line(gpt2, llama, name):
    with pytest.raises(CourseError) as refused:
        prepared(gpt2[0], name)
    message = str(refused.value)
    assert "\n" not in message and "Conv1D" in message and "tiny-llama" in message
    model = prepared(llama[0], name)  # and they wrap Llama's nn.Linear
    assert any("score" in n for n in trainable_names(model))


def test_a_refused_method_is_one_line_on_the_command_line(tmp_path, capsys):
    output = str(tmp_path / "run")
    assert main(["finetune", "--method", "loha", "--output", output, *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # after the loading bars
    assert [line for line in err if "Conv1D" in line] == err[-1:]
    assert "LoHa cannot adapt GPT-2's Conv1D" in err[-1]


def test_lora_plus_gives_b_ratio_times_the_learning_rate(gpt2):
    model = pf.prepare_lora_plus(copy.deepcopy(gpt2[0]), loraplus_ratio=8.0)
    optimizer = model.make_optimizer(TrainConfig(learning_rate=1e-3), 10)
    rates = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            rates[names[id(p)]] = group["lr"]
    b = [r for n, r in rates.items() if "lora_B" in n]
    a = [r for n, r in rates.items() if "lora_A" in n or "score" in n]
    assert b and a and set(b) == {8e-3} and set(a) == {1e-3}


def test_adalora_prunes_to_its_budget_over_the_run(gpt2):
    """The model brings its optimizer; after the run peft has recorded which ranks it kept."""
    from peft_course.data import load_classification_data, tokenize

    base, tokenizer = gpt2
    model = pf.prepare_adalora(copy.deepcopy(base), r=4, target_r=2)
    data = load_classification_data("synthetic-sentiment", max_examples=64, seed=0)
    train(model, tokenize(data, tokenizer, 64), tokenizer, TrainConfig(1, 8, progress=False))
    adalora = model.peft_config["default"]
    assert adalora.total_step == 8 and (adalora.tinit, adalora.tfinal) == (0, 1)
    kept = sum(sum(mask) for mask in adalora.rank_pattern.values())
    assert kept == 2 * len(adalora.rank_pattern)  # target_r per layer on average


def test_adalora_refuses_a_target_rank_above_its_rank(gpt2):
    with pytest.raises(CourseError, match="target_r"):
        pf.prepare_adalora(copy.deepcopy(gpt2[0]), r=4, target_r=8)


def test_prefix_tuning_learns_keys_and_values_of_every_layer(gpt2):
    model = prepared(gpt2[0], "prefix-tuning")
    config = gpt2[0].config
    (prefix,) = [p for n, p in model.named_parameters() if "prompt_encoder" in n]
    assert prefix.shape == (8, 2 * config.n_layer * config.n_embd)


@pytest.mark.parametrize("name", ["prompt-tuning", "houlsby", "lora-plus"])
def test_a_family_run_trains_saves_and_reloads(tmp_path, capsys, name):
    """Through the command line: the soft prompt's hooks, the adapters' modules and the
    optimizer factory all survive a save and a reload."""
    run = tmp_path / "run"
    assert main(["finetune", "--method", name, "--output", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["predict", "--run", str(run), *TEXTS]) == 0
    assert capsys.readouterr().out.count("\t") == 2 * len(TEXTS)


@pytest.fixture(scope="module")
def probe_inputs(gpt2):
    return gpt2[1](TEXTS, return_tensors="pt", padding=True)


@pytest.fixture(scope="module")
def tuner_support(gpt2, llama, probe_inputs):
    """Which of peft's tuner types wrap tiny-gpt2 and tiny-llama, probed now."""
    support = {}
    for peft_type in PeftType:
        support[peft_type.value] = tuple(
            kind
            for kind, (model, _) in (("gpt2", gpt2), ("llama", llama))
            if pf.probe_tuner(peft_type.value, model, probe_inputs)
        )
    return support


def test_every_peft_tuner_type_is_recorded():
    """A type that a peft upgrade adds is noticed: it has to be probed and recorded."""
    assert sorted(pf.PEFT_TUNER_SUPPORT) == sorted(t.value for t in PeftType)


@pytest.mark.parametrize("peft_type", sorted(pf.PEFT_TUNER_SUPPORT))
def test_which_peft_tuners_wrap_gpt2_and_llama(tuner_support, peft_type):
    """`PEFT_TUNER_SUPPORT` is what peft does now; a change fails here, naming the type."""
    assert tuner_support.get(peft_type) == pf.PEFT_TUNER_SUPPORT[peft_type]
