"""DPO: the loss by hand equals TRL's, training through TRL works, bad input is refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from trl.trainer.dpo_trainer import DataCollatorForPreference

from peft_course.dpo import (
    METRIC_KEYS,
    DPORunConfig,
    PreferenceDataError,
    check_pairs,
    collate_pairs,
    dpo_loss,
    film_preferences,
    frozen_weights,
    load_preference_jsonl,
    perturbed_copy,
    preference_metrics,
    save_dpo_run,
    sequence_logprobs,
    split_pairs,
    tokenize_pair,
    train_dpo,
    trl_metrics,
)
from peft_course.models import load_model
from peft_course.tolerances import RERUN_ATOL, ROUNDING_ATOL, TRL_ATOL

# Our metrics against TRL's allow TRL_ATOL: both sides run the same float32 model on the same
# tokens and differ only in how the log-softmax is evaluated (peft_course.tolerances says more).


@pytest.fixture(scope="module")
def causal():
    return load_model("tiny-gpt2", task="causal-lm")


def test_sequence_logprobs_sums_completion_tokens_only():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=generator)
    input_ids = torch.randint(0, 11, (3, 7), generator=generator)
    completion_mask = torch.tensor(
        [[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 0]]
    )
    expected = torch.zeros(3)
    for row in range(3):
        for t in range(1, 7):  # the token at t is predicted by the logits at t - 1
            if completion_mask[row, t]:
                expected[row] += torch.log_softmax(logits[row, t - 1], -1)[input_ids[row, t]]
    got = sequence_logprobs(logits, input_ids, completion_mask)
    torch.testing.assert_close(got, expected)
    # logits at the last position, and wherever only prompt or padding follows, must not matter
    changed = logits.clone()
    changed[:, -1] += 100.0
    changed[0, 5] += 100.0  # row 0: position 6 is padding
    torch.testing.assert_close(sequence_logprobs(changed, input_ids, completion_mask), expected)


def test_dpo_loss_formula_and_gradient():
    generator = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (-20 * torch.rand(5, generator=generator) for _ in range(4))
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    beta = 0.3
    result = dpo_loss(pc, pr, rc, rr, beta)
    chosen_reward, rejected_reward = beta * (pc - rc), beta * (pr - rr)
    expected = -torch.log(torch.sigmoid(chosen_reward - rejected_reward)).mean()
    torch.testing.assert_close(result.loss, expected)
    torch.testing.assert_close(result.chosen_rewards, chosen_reward.detach())
    torch.testing.assert_close(result.rejected_rewards, rejected_reward.detach())
    result.loss.backward()
    # derivation step 4: d loss / d log pi(y_w) = -beta sigmoid(r_l - r_w) (per pair, / pairs for
    # the mean)
    weight = beta * torch.sigmoid(rejected_reward - chosen_reward).detach() / 5
    torch.testing.assert_close(pc.grad, -weight)
    torch.testing.assert_close(pr.grad, weight)
    same = dpo_loss(rc, rr, rc, rr, beta)
    assert same.loss.item() == pytest.approx(math.log(2)), "policy = reference must give ln 2"


def test_collate_matches_trl_collator(causal):
    _, tokenizer = causal
    examples = [tokenize_pair(tokenizer, pair) for pair in film_preferences(5, 1)["train"]]
    ours = collate_pairs(examples, tokenizer.pad_token_id)
    theirs = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(examples)
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(ours[key], theirs[key]), key
    assert all(e["chosen_ids"][-1] == tokenizer.eos_token_id for e in examples), (
        "eos ends each completion"
    )


def test_loss_and_rewards_equal_trl(causal):
    """A perturbed policy against the unperturbed reference: every logged number agrees."""
    reference, tokenizer = causal
    policy = perturbed_copy(reference, scale=0.05, seed=3)
    pairs = list(film_preferences(6, 1, seed=2)["train"])
    ours = preference_metrics(policy, tokenizer, pairs, beta=0.5, reference=reference)
    theirs = trl_metrics(policy, reference, tokenizer, pairs, beta=0.5)
    assert abs(ours["loss"] - math.log(2)) > 1e-3, "the policy must differ from the reference"
    for key in (
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
    ):
        assert ours[key] == pytest.approx(theirs[key], abs=TRL_ATOL), key
    # TRL 1.x: label_smoothing is read by the robust/EXO/AOT losses, not by the sigmoid loss
    smoothed = trl_metrics(policy, reference, tokenizer, pairs, beta=0.5, label_smoothing=0.3)
    assert smoothed["loss"] == pytest.approx(theirs["loss"], abs=RERUN_ATOL)


def test_the_policy_as_its_own_reference_is_scored_once(causal):
    """Before training `train_dpo` measures the policy against itself: one forward pass a batch
    of pairs, not two, and rewards, margins and loss exactly those of a policy equal to its
    reference (0, 0 and ln 2)."""
    model, tokenizer = causal
    pairs = list(film_preferences(6, 1, seed=2)["train"])
    passes = []
    hook = model.register_forward_hook(lambda *_: passes.append(1))
    try:
        metrics = preference_metrics(model, tokenizer, pairs, beta=0.5, reference=model)
    finally:
        hook.remove()
    assert len(passes) == 1, f"{len(passes)} forward passes for one batch of {len(pairs)} pairs"
    assert metrics["rewards/margins"] == 0 and metrics["rewards/chosen"] == 0
    assert metrics["loss"] == pytest.approx(math.log(2), abs=1e-7)


def test_trl_loss_is_ln2_when_policy_is_reference(causal):
    reference, tokenizer = causal
    policy = perturbed_copy(reference, scale=0.0)
    metrics = trl_metrics(
        policy, reference, tokenizer, list(film_preferences(4, 1)["train"]), beta=0.1
    )
    assert metrics["loss"] == pytest.approx(math.log(2), abs=ROUNDING_ATOL)
    assert metrics["rewards/margins"] == 0.0


def test_lora_dpo_reverses_the_ranking_and_keeps_the_reference(tmp_path):
    """The pretrained model prefers praise; DPO on pairs that prefer panning must reverse that."""
    pairs = film_preferences(96, 48, seed=0, prefer="negative")
    run = train_dpo(
        pairs, config=DPORunConfig(lora=True, learning_rate=1e-2, epochs=2, batch_size=16)
    )
    before, after = run.before, run.after
    assert (
        before["loss"] == pytest.approx(math.log(2), abs=ROUNDING_ATOL)
        and before["rewards/margins"] == 0
    )
    assert before["likelihood_accuracy"] < 0.2, before
    assert after["likelihood_accuracy"] > 0.8, (before, after)
    assert after["rewards/accuracies"] > 0.8 and after["rewards/margins"] > 0.3, after
    assert after["likelihood_margin"] > before["likelihood_margin"] + 4, (before, after)
    assert run.reference_unchanged, "LoRA must leave the base (the reference) untouched"
    assert len(run.history) >= 4 and all(key in run.history[0] for key in METRIC_KEYS)
    assert run.history[-1]["rewards/margins"] > run.history[0]["rewards/margins"]
    metrics, plot = save_dpo_run(run, tmp_path)
    saved = json.loads(metrics.read_text())
    assert (
        saved["after"]["rewards/accuracies"] == after["rewards/accuracies"]
        and saved["config"]["lora"]
    )
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_full_dpo_with_explicit_reference():
    run = train_dpo(
        film_preferences(48, 32, prefer="negative"),
        config=DPORunConfig(lora=False, learning_rate=1e-3, epochs=1, batch_size=16),
    )
    assert run.reference_unchanged
    fresh = frozen_weights(load_model("tiny-gpt2", task="causal-lm")[0])
    assert all(torch.equal(fresh[k], v) for k, v in frozen_weights(run.reference).items()), (
        "reference moved"
    )
    assert not all(torch.equal(fresh[k], v) for k, v in frozen_weights(run.model).items()), (
        "policy did not train"
    )
    assert run.after["rewards/margins"] > 0.1


def test_film_preferences_are_fixed_distinct_and_disjoint():
    first, again = film_preferences(40, 10, seed=4), film_preferences(40, 10, seed=4)
    assert list(first["train"]) == list(again["train"])
    rows = [tuple(r.values()) for split in ("train", "test") for r in first[split]]
    assert len(set(rows)) == 50
    assert all(row["chosen"] != row["rejected"] for row in first["train"])
    negative = film_preferences(40, 10, seed=4, prefer="negative")
    assert negative["train"][0]["chosen"] == first["train"][0]["rejected"]


def test_jsonl_round_trip_and_split(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = list(film_preferences(10, 1)["train"])
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    loaded = load_preference_jsonl(path)
    assert list(loaded) == rows
    split = split_pairs(loaded, 0.2)
    assert (len(split["train"]), len(split["test"])) == (8, 2)


@pytest.mark.parametrize(
    "row,message",
    [
        ({"prompt": "a", "chosen": " b"}, "'rejected'"),
        ({"chosen": " b", "rejected": " c"}, "'prompt'"),
        ({"prompt": "a", "chosen": "  ", "rejected": " c"}, "'chosen' completion is empty"),
        ({"prompt": "a", "chosen": " b", "rejected": ""}, "'rejected' completion is empty"),
        ({"prompt": "a", "chosen": [{"role": "assistant"}], "rejected": " c"}, "must be text"),
    ],
)
def test_bad_pairs_are_refused(row, message):
    with pytest.raises(PreferenceDataError, match=message):
        check_pairs([row])


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(PreferenceDataError, match="no such file"):
        load_preference_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(PreferenceDataError, match="is a directory, not a file"):
        load_preference_jsonl(tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(PreferenceDataError, match="no preference pairs"):
        load_preference_jsonl(tmp_path / "empty.jsonl")
    (tmp_path / "array.jsonl").write_text('[{"prompt": "a", "chosen": " b", "rejected": " c"}]\n')
    with pytest.raises(PreferenceDataError, match="array.jsonl: line 1 is .* not an object"):
        load_preference_jsonl(tmp_path / "array.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "chosen": " b", "rejected": " c"}\nnot json\n')
    with pytest.raises(PreferenceDataError, match="line 2 is not JSON"):
        load_preference_jsonl(broken)
    missing = tmp_path / "missing_field.jsonl"
    missing.write_text('{"prompt": "a", "chosen": " b"}\n')
    with pytest.raises(PreferenceDataError, match="missing_field.jsonl: line 1 has no 'rejected'"):
        load_preference_jsonl(missing)


@pytest.mark.parametrize("beta", [0, -0.1, float("nan")])
def test_bad_beta_is_refused(beta, causal):
    with pytest.raises(ValueError, match="beta must be a positive number"):
        DPORunConfig(beta=beta)
    with pytest.raises(ValueError, match="beta must be a positive number"):
        dpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), beta)
    model, tokenizer = causal
    with pytest.raises(ValueError, match="beta must be a positive number"):
        preference_metrics(model, tokenizer, list(film_preferences(2, 1)["train"]), beta, model)


def test_check_pairs_keeps_only_the_three_fields():
    assert check_pairs([{"prompt": "", "chosen": " a", "rejected": " b", "score": 3}]) == [
        {"prompt": "", "chosen": " a", "rejected": " b"}
    ]
    with pytest.raises(PreferenceDataError, match="no preference pairs"):
        check_pairs([])
    assert F.logsigmoid(torch.tensor(-200.0)).isfinite()  # why dpo_loss uses logsigmoid


def test_unsaved_model_needs_an_explicit_reference(causal, tmp_path):
    """The library fact `train_dpo` works around: TRL loads the reference from the model's path."""
    import copy

    from transformers import GPT2Config, GPT2LMHeadModel
    from trl import DPOTrainer

    from peft_course.dpo import make_dpo_config

    _, tokenizer = causal
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_layer=1,
        n_embd=16,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    assert model.config._name_or_path == ""
    pairs = film_preferences(4, 1)["train"]
    args = make_dpo_config(DPORunConfig(), tmp_path)
    with pytest.raises((OSError, ValueError), match="''"):
        DPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    reference = copy.deepcopy(model)
    trainer = DPOTrainer(
        model=model, ref_model=reference, args=args, train_dataset=pairs, processing_class=tokenizer
    )
    assert trainer.ref_model is reference


@pytest.mark.parametrize("progress", [True, False])
def test_the_progress_option_reaches_trl(tmp_path, progress):
    """`--no-progress` hides TRL's bar, and the default shows it (DPO on SmolLM2 takes minutes)."""
    from peft_course.dpo import make_dpo_config
    from peft_course.preference import trainer_arguments

    config = DPORunConfig(progress=progress)
    assert make_dpo_config(config, tmp_path).disable_tqdm is not progress
    assert trainer_arguments(config, tmp_path)["disable_tqdm"] is not progress
