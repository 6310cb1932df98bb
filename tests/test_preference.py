"""DPO's relatives: each loss is its derivation's formula, equals TRL's, trains; `align` refuses
bad input in one line."""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import sys
from pathlib import Path

import pytest
import sympy as sp
import torch

from peft_course import preference_derivations as pd
from peft_course.cli import main
from peft_course.command_options import ALIGN_LOSSES, Align
from peft_course.configs import DPORunConfig
from peft_course.dpo import dpo_loss, film_preferences, perturbed_copy
from peft_course.errors import CourseError
from peft_course.models import load_model
from peft_course.preference import (
    COMPARED,
    LOSSES,
    TRAINERS,
    AlignRun,
    RewardModelRun,
    LossSettings,
    apo_zero_loss,
    cdpo_loss,
    check_loss_name,
    held_out_metrics,
    hinge_loss,
    ipo_loss,
    kl_rows,
    kto_loss,
    loss_metrics,
    metrics_of_scores,
    orpo_loss,
    plot_histories,
    sampled_kl,
    reward_model_rows,
    robust_loss,
    score_pairs,
    side_by_side_rows,
    simpo_loss,
    starting_point,
    train_preference,
    train_reward_model,
    trl_loss_metrics,
    unpaired,
    with_bos,
)
from peft_course.preference import BOS_LOSSES, score_rows, tokenize_completion
from peft_course.tolerances import PREFERENCE_LOSS_ATOL, ROUNDING_ATOL, TRL_ATOL

BETA, EPS, GAMMA = 0.3, 0.2, 0.4


def batch(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """Sequence log-probabilities of a policy and a reference, and completion lengths."""
    generator = torch.Generator().manual_seed(seed)
    logps = {k: -30 * torch.rand(n, generator=generator, dtype=torch.float64) for k in "pPrR"}
    lengths = torch.randint(1, 12, (2, n), generator=generator).to(torch.float64)
    return {
        "pc": logps["p"].requires_grad_(True),
        "pr": logps["P"].requires_grad_(True),
        "rc": logps["r"],
        "rr": logps["R"],
        "lc": lengths[0],
        "lr": lengths[1],
    }


def formula(expression: sp.Expr, values: dict) -> float:
    """A sympy margin loss or gradient evaluated at one point, as a float."""
    return float(expression.subs(values))


# The course's loss of a batch, and the margin its derivation writes the loss in, per pair.
CASES = {
    "IPO": (
        lambda b: ipo_loss(b["pc"], b["pr"], b["rc"], b["rr"], BETA, b["lc"], b["lr"]),
        lambda b: (b["pc"] - b["rc"]) / b["lc"] - (b["pr"] - b["rr"]) / b["lr"],
        {pd.BETA: BETA},
    ),
    "hinge": (
        lambda b: hinge_loss(b["pc"], b["pr"], b["rc"], b["rr"], BETA),
        lambda b: (b["pc"] - b["rc"]) - (b["pr"] - b["rr"]),
        {pd.BETA: BETA},
    ),
    "robust": (
        lambda b: robust_loss(b["pc"], b["pr"], b["rc"], b["rr"], BETA, EPS),
        lambda b: (b["pc"] - b["rc"]) - (b["pr"] - b["rr"]),
        {pd.BETA: BETA, pd.EPS: EPS},
    ),
    "cDPO": (
        lambda b: cdpo_loss(b["pc"], b["pr"], b["rc"], b["rr"], BETA, EPS),
        lambda b: (b["pc"] - b["rc"]) - (b["pr"] - b["rr"]),
        {pd.BETA: BETA, pd.EPS: EPS},
    ),
    "SimPO": (
        lambda b: simpo_loss(b["pc"], b["pr"], b["lc"], b["lr"], BETA, GAMMA),
        lambda b: b["pc"] / b["lc"] - b["pr"] / b["lr"],
        {pd.BETA: BETA, pd.GAMMA: GAMMA},
    ),
    "DPO": (
        lambda b: dpo_loss(b["pc"], b["pr"], b["rc"], b["rr"], BETA),
        lambda b: (b["pc"] - b["rc"]) - (b["pr"] - b["rr"]),
        {pd.BETA: BETA},
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_loss_is_its_derivations_formula_with_its_gradient(name):
    """Loss and d loss / d log pi(y_w) per pair, against the sympy loss and gradient of the
    margin (d h / d log pi(y_w) = 1, or 1/|y_w| for the per-token margins)."""
    loss_of, margin_of, values = CASES[name]
    b = batch()
    result = loss_of(b)
    margins = margin_of(b).detach()
    sym_loss, sym_gradient, parameters = pd.MARGIN_LOSSES[name]
    expected = [formula(sym_loss(pd.H, *parameters), {**values, pd.H: float(m)}) for m in margins]
    assert result.loss.item() == pytest.approx(sum(expected) / len(expected), abs=ROUNDING_ATOL)
    result.loss.backward()
    per_token = name in ("IPO", "SimPO")
    slopes = torch.tensor(
        [formula(sym_gradient(pd.H, *parameters), {**values, pd.H: float(m)}) for m in margins],
        dtype=torch.float64,
    )
    expected_grad = slopes / len(margins) / (b["lc"] if per_token else 1)
    torch.testing.assert_close(b["pc"].grad, expected_grad)


def test_orpo_is_the_sft_loss_plus_the_odds_ratio_term():
    generator = torch.Generator().manual_seed(4)
    chosen = -3 * torch.rand(5, generator=generator, dtype=torch.float64) - 0.01
    rejected = -3 * torch.rand(5, generator=generator, dtype=torch.float64) - 0.01
    nll = torch.tensor(1.7, dtype=torch.float64)
    result = orpo_loss(chosen, rejected, nll, BETA)
    o = (chosen - torch.log1p(-chosen.exp())) - (rejected - torch.log1p(-rejected.exp()))
    term = sum(
        formula(pd.orpo_margin_loss(pd.H, pd.LAMBDA), {pd.H: float(x), pd.LAMBDA: BETA}) for x in o
    )
    assert result.loss.item() == pytest.approx(1.7 + term / 5, abs=ROUNDING_ATOL)
    torch.testing.assert_close(result.chosen_rewards, BETA * chosen)
    # near log p = 0 the odds blow up; log1mexp keeps the term finite
    close = orpo_loss(torch.tensor([-1e-9]), torch.tensor([-5.0]), torch.tensor(0.0), BETA)
    assert math.isfinite(close.loss.item())


def test_kto_is_its_derivations_formula_with_the_kl_reference_point():
    generator = torch.Generator().manual_seed(5)
    policy, reference = (-20 * torch.rand(6, generator=generator) for _ in range(2))
    kl_policy, kl_reference = (-20 * torch.rand(6, generator=generator) for _ in range(2))
    desirable = torch.tensor([True, False, True, True, False, False])
    result = kto_loss(policy, reference, desirable, kl_policy, kl_reference, BETA, 1.5, 0.5)
    z = max((kl_policy - kl_reference).mean().item(), 0.0)
    expected = []
    for r, good in zip((policy - reference).tolist(), desirable.tolist()):
        if good:
            expected.append(1.5 * formula(pd.kto_desirable_loss(r, pd.BETA, z), {pd.BETA: BETA}))
        else:
            expected.append(0.5 * formula(pd.kto_undesirable_loss(r, pd.BETA, z), {pd.BETA: BETA}))
    assert result.loss.item() == pytest.approx(sum(expected) / 6, abs=ROUNDING_ATOL)
    assert result.chosen_rewards.shape == (3,) and result.rejected_rewards.shape == (3,)
    # z is clamped at 0: a policy less likely than the reference on the mismatched pairs
    below = kto_loss(policy, reference, desirable, kl_reference - 5, kl_reference, BETA)
    at_zero = kto_loss(policy, reference, desirable, kl_reference, kl_reference, BETA)
    assert below.loss.item() == pytest.approx(at_zero.loss.item(), abs=ROUNDING_ATOL)


def test_apo_zero_is_kto_at_zero_and_moves_with_both_rewards():
    b = batch(seed=6)
    apo = apo_zero_loss(b["pc"], b["pr"], b["rc"], b["rr"], BETA)
    r_w, r_l = (b["pc"] - b["rc"]).detach(), (b["pr"] - b["rr"]).detach()
    expected = [
        formula(pd.apo_zero_pair_loss(w, l_, pd.BETA), {pd.BETA: BETA})
        for w, l_ in zip(r_w.tolist(), r_l.tolist())
    ]
    assert apo.loss.item() == pytest.approx(sum(expected) / len(expected), abs=ROUNDING_ATOL)
    shifted = apo_zero_loss(b["pc"] + 3, b["pr"] + 3, b["rc"], b["rr"], BETA)
    dpo_now, dpo_shifted = (
        dpo_loss(b["pc"] + s, b["pr"] + s, b["rc"], b["rr"], BETA).loss.item() for s in (0, 3)
    )
    assert dpo_now == pytest.approx(dpo_shifted, abs=ROUNDING_ATOL)
    assert abs(shifted.loss.item() - apo.loss.item()) > 1e-3, "APO-zero must see a common shift"


def test_bad_loss_parameters_are_refused():
    b = batch()
    with pytest.raises(CourseError, match="label_smoothing"):
        robust_loss(b["pc"], b["pr"], b["rc"], b["rr"], BETA, 0.5)
    with pytest.raises(CourseError, match="gamma"):
        simpo_loss(b["pc"], b["pr"], b["lc"], b["lr"], BETA, -1.0)
    with pytest.raises(CourseError, match="beta"):
        hinge_loss(b["pc"], b["pr"], b["rc"], b["rr"], 0.0)
    with pytest.raises(CourseError, match="unknown preference loss 'dop'.*apo-zero"):
        check_loss_name("dop")
    assert check_loss_name("apo_zero") == "apo-zero"


# ---- each loss equals TRL's ------------------------------------------------------------------


@pytest.fixture(scope="module")
def causal():
    return load_model("tiny-gpt2", task="causal-lm")


@pytest.fixture(scope="module")
def perturbed(causal):
    reference, tokenizer = causal
    return perturbed_copy(reference, scale=0.05, seed=3), reference, tokenizer


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_and_rewards_equal_trl(perturbed, name):
    """One batch, the same policy and reference: the course's numbers are the trainer's."""
    policy, reference, tokenizer = perturbed
    pairs = list(film_preferences(6, 1, seed=2)["train"])
    settings = LossSettings(gamma=0.3, label_smoothing=0.2)
    ours = loss_metrics(name, policy, reference, tokenizer, pairs, 0.5, settings)
    theirs = trl_loss_metrics(name, policy, reference, tokenizer, pairs, 0.5, settings)
    assert ours["loss"] == pytest.approx(theirs["loss"], abs=PREFERENCE_LOSS_ATOL)
    for key in COMPARED[1:]:
        assert ours[key] == pytest.approx(theirs[key], abs=TRL_ATOL), key
    # the numbers compared are not the step-0 ones: the policy differs from the reference
    assert abs(ours["rewards/margins"]) > 1e-3
    if name in EXERCISED:
        import peft_course.preference as package

        exercise, grader = EXERCISED[name], grader_module()
        graded, (call, _) = grader.TRL_BATCHES[exercise], grader.trl_case(exercise)
        # its expected loss is the package's (= TRL's, above) on its own stored batch, on any CPU
        expected = call(getattr(package, exercise)).loss.item()
        assert graded["trl_loss"] == pytest.approx(expected, abs=PREFERENCE_LOSS_ATOL)
        fresh = trl_batch(name, policy, reference, tokenizer, pairs)
        # The batch is this one where tiny-gpt2 was built as where the grader was written: its
        # half-minute pretraining ends elsewhere on another CPU's kernels (an AMD EPYC's AVX512
        # moved IPO's loss here by 2.1e-4), and so do the log-probabilities it scores.
        if all(graded[k] == pytest.approx(v, abs=TRL_ATOL) for k, v in fresh.items()):
            assert graded["trl_loss"] == pytest.approx(theirs["loss"], abs=PREFERENCE_LOSS_ATOL)


# The exercises of exercises/preference.py, by the loss they write.
EXERCISED = {"ipo": "ipo_loss", "simpo": "simpo_loss", "kto": "kto_loss"}


def trl_batch(name: str, policy, reference, tokenizer, pairs) -> dict[str, list]:
    """The arguments of exercise `EXERCISED[name]` for `pairs` as TRL's trainer scores them
    (test_loss_and_rewards_equal_trl's batch): the grader's TRL_BATCHES, which
    `python tests/test_preference.py` prints."""
    if name == "kto":
        rows = unpaired(pairs, 0)
        tokenized = [tokenize_completion(tokenizer, row) for row in rows]
        scores = score_rows(policy, reference, tokenized, tokenizer.pad_token_id)
        kl = score_rows(
            policy, reference, kl_rows(tokenized, len(tokenized)), tokenizer.pad_token_id
        )
        return {
            "policy_logps": scores.policy.tolist(),
            "reference_logps": scores.reference.tolist(),
            "desirable": [bool(row["label"]) for row in rows],
            "kl_policy_logps": kl.policy.tolist(),
            "kl_reference_logps": kl.reference.tolist(),
        }
    scores = score_pairs(policy, reference, tokenizer, pairs, bos=name in BOS_LOSSES)
    (pc, pr), (rc, rr), (lc, lr) = (scores.halves(f) for f in ("policy", "reference", "lengths"))
    batch = {"policy_chosen": pc.tolist(), "policy_rejected": pr.tolist()}
    if name == "ipo":
        batch |= {"reference_chosen": rc.tolist(), "reference_rejected": rr.tolist()}
    return batch | {"chosen_lengths": lc.tolist(), "rejected_lengths": lr.tolist()}


def test_a_wrong_term_is_far_outside_the_bound(perturbed):
    """What the bound must catch: IPO without its length normalisation, SimPO without gamma."""
    policy, reference, tokenizer = perturbed
    pairs = list(film_preferences(6, 1, seed=2)["train"])
    scores = score_pairs(policy, reference, tokenizer, pairs)
    (pc, pr), (rc, rr), (lc, lr) = (scores.halves(f) for f in ("policy", "reference", "lengths"))
    right = ipo_loss(pc, pr, rc, rr, 0.5, lc, lr).loss.item()
    ones = torch.ones_like(lc)
    assert abs(ipo_loss(pc, pr, rc, rr, 0.5, ones, ones).loss.item() - right) > 1e-2
    with_gamma = simpo_loss(pc, pr, lc, lr, 0.5, 0.3).loss.item()
    assert abs(simpo_loss(pc, pr, lc, lr, 0.5, 0.0).loss.item() - with_gamma) > 1e-2


def test_bos_and_kl_rows_follow_trl():
    example = {"prompt_ids": [5, 6], "chosen_ids": [7, 0], "rejected_ids": [8, 0]}
    assert with_bos(example, 0)["prompt_ids"] == [0, 5, 6]
    assert with_bos(with_bos(example, 0), 0)["prompt_ids"] == [0, 5, 6], "added once"
    rows = [([1], [11]), ([2], [12]), ([3], [13]), ([4], [14]), ([5], [15])]
    assert kl_rows(rows, 2) == [([1], [12]), ([2], [11]), ([3], [14]), ([4], [13]), ([5], [15])]
    pairs = list(film_preferences(5, 1)["train"])
    rows = unpaired(pairs, seed=1)
    assert sorted(r["label"] for r in rows) == [False] * 5 + [True] * 5
    assert rows == unpaired(pairs, seed=1) and rows != unpaired(pairs, seed=2)


# ---- trained side by side --------------------------------------------------------------------


@pytest.fixture(scope="module")
def reversed_pairs():
    """Pairs that prefer the pan: the pretrained model ranks most of them the wrong way."""
    return film_preferences(32, 16, seed=0, prefer="negative")


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_loss_trains_above_its_step0_accuracy(reversed_pairs, name):
    """4 LoRA steps through the loss's own TRL trainer raise its held-out reward accuracy."""
    config = DPORunConfig(learning_rate=2e-2, epochs=1, batch_size=8)
    run = train_preference(name, reversed_pairs, config=config, max_new_tokens=8, kl_samples=1)
    before, after = run.before, run.after
    assert after["rewards/accuracies"] > before["rewards/accuracies"], (before, after)
    assert after["log_ratio_accuracy"] > before["log_ratio_accuracy"], (before, after)
    if name not in ("simpo", "orpo"):  # with a reference, the rewards start at 0
        assert before["rewards/margins"] == 0 and before["rewards/accuracies"] == 0
    assert run.steps == 4 and run.reference_unchanged
    assert run.history and all("rewards/margins" in h for h in run.history)
    assert 1 <= run.length_before <= 8 and 1 <= run.length_after <= 8
    assert run.kl_before == 0 and run.kl_after > 0, "the policy drifts from the reference"
    assert run.tokens_per_second > 0
    # `after` took the reference's scores from the starting point: scored afresh, the same
    tokenizer = load_model("tiny-gpt2", task="causal-lm")[1]
    test = reversed_pairs["test"]
    assert held_out_metrics(name, run.model, None, tokenizer, test, config.beta) == run.after
    assert run.start.bos == (name in BOS_LOSSES)
    (row,) = side_by_side_rows([run])
    assert row["loss"] == name and "->" in row["reward accuracy"]
    assert json.loads(json.dumps(run.as_dict()))["trainer"] == TRAINERS[name]


def test_a_starting_point_is_what_held_out_metrics_measure_before_training(reversed_pairs):
    """Losses trained side by side share one measurement of the starting model (its scores of
    the held-out pairs, with and without bos, and its response length): the metrics taken from
    it are those `held_out_metrics` scores afresh."""
    model, tokenizer = load_model("tiny-gpt2", task="causal-lm")
    test = reversed_pairs["test"]
    plain = starting_point(model, tokenizer, test, bos=False, max_new_tokens=8)
    with_token = starting_point(model, tokenizer, test, True, 8, length=plain.length)
    assert with_token.length == plain.length and with_token.bos and not plain.bos
    assert not torch.equal(plain.scores.policy, with_token.scores.policy), "bos changes scores"
    assert torch.equal(plain.scores.policy, plain.scores.reference)
    for name in ("dpo", "simpo", "kto"):
        start = with_token if name in BOS_LOSSES else plain
        shared = metrics_of_scores(
            name, start.scores, BETA, LossSettings(), model, model, tokenizer, test
        )
        assert shared == held_out_metrics(name, model, model, tokenizer, test, BETA), name


def test_sampled_kl_is_the_kl_of_the_next_token():
    """One sampled token per completion: the exact KL of the next-token distributions is a sum
    over the vocabulary, and the estimate must fall within 4 standard errors of it (the error
    computed from the same distributions: the variance of the log-ratio under the policy over
    the number of samples). The other direction, KL(pi_ref || pi), is 12 of them away."""
    # a model of its own: a TRL trainer wraps the forward of a model it held, and a deep copy's
    # wrapper still calls the original's forward, whatever the copy's weights
    reference, tokenizer = load_model("tiny-gpt2", task="causal-lm")
    policy = perturbed_copy(reference, scale=0.1, seed=3)  # KL 2.2 nats at the next token
    prompts = [p["prompt"] for p in film_preferences(2, 1, seed=7)["train"]]
    samples = 200  # standard error 0.11 (measured: the estimate 1.1 of them from the exact KL)
    estimate = sampled_kl(policy, reference, tokenizer, prompts, 1, samples, seed=3)
    exact, reverse, variance = [], [], []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            log_p, log_q = (
                m(ids).logits[0, -1].double().log_softmax(-1) for m in (policy, reference)
            )
        ratio = log_p - log_q
        exact.append((log_p.exp() * ratio).sum().item())
        reverse.append((log_q.exp() * -ratio).sum().item())
        variance.append((log_p.exp() * ratio**2).sum().item() - exact[-1] ** 2)
    kl = sum(exact) / len(prompts)
    error = math.sqrt(sum(variance) / samples) / len(prompts)
    assert abs(estimate - kl) < 4 * error, (estimate, kl, error)
    assert abs(sum(reverse) / len(prompts) - kl) > 8 * error, "the directions must differ here"
    assert estimate == sampled_kl(policy, reference, tokenizer, prompts, 1, samples, seed=3)
    assert estimate != sampled_kl(policy, reference, tokenizer, prompts, 1, samples, seed=4)


def test_the_kl_at_step_0_is_0_exactly_which_train_preference_relies_on():
    """`train_preference` writes KL 0 before training instead of sampling for it: a copy loaded
    with the same seed, and a fresh LoRA scored against its own disabled adapters, give
    bit-for-bit the reference's log-probabilities, so every sampled log-ratio is 0."""
    from peft import LoraConfig, get_peft_model

    reference, tokenizer = load_model("tiny-gpt2", task="causal-lm")
    copy, _ = load_model("tiny-gpt2", task="causal-lm")
    prompts = [p["prompt"] for p in film_preferences(3, 1, seed=7)["train"]]
    assert sampled_kl(copy, reference, tokenizer, prompts, 4, 2) == 0.0
    fresh = get_peft_model(copy, LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True))
    assert sampled_kl(fresh, None, tokenizer, prompts, 4, 2) == 0.0
    assert sampled_kl(perturbed_copy(reference, 0.1, 3), reference, tokenizer, prompts, 4, 2) != 0


def test_histories_plot(tmp_path):
    history = [{"step": s, "rewards/margins": s / 10, "rewards/chosen": -s / 10} for s in (2, 4)]
    run = AlignRun(
        "dpo",
        {},
        {},
        4.0,
        5.0,
        0.0,
        0.1,
        history,
        4,
        1.0,
        100.0,
        True,
        DPORunConfig(),
        LossSettings(),
    )
    assert plot_histories([run], tmp_path / "h.png").stat().st_size > 5_000


# ---- peft-course align -----------------------------------------------------------------------


def align_fails(capsys, argv: list, *needles: str) -> str:
    """`peft-course align ...` fails with one line holding every needle; returns that line."""
    code = main(["align", *map(str, argv)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("peft-course align: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def pairs_file(path, rows) -> str:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_align_options_follow_the_library():
    assert ALIGN_LOSSES == tuple(LOSSES)
    defaults = Align()
    settings = LossSettings()
    assert (defaults.gamma, defaults.label_smoothing, defaults.orpo_lambda) == (
        settings.gamma,
        settings.label_smoothing,
        settings.orpo_lambda,
    )


def test_align_trains_and_saves_like_dpo(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--loss", "kto", "--n-train", "8", "--n-test", "4", "--epochs", "1"]
    assert main(["align", *argv, "--batch-size", "4", "--output", "out"]) == 0
    printed = capsys.readouterr().out
    assert "kto (trl.KTOTrainer)" in printed and "| rewards/accuracies |" in printed
    assert "| KL to the reference on sampled completions (nats) | 0.0000 |" in printed
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["loss"] == "kto" and saved["steps"] == 2 and saved["reference_unchanged"]
    assert saved["kl_before"] == 0 and math.isfinite(saved["kl_after"]) and saved["kl_after"] != 0
    assert (tmp_path / "out" / "rewards.png").stat().st_size > 5_000


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--loss", "dop"], ("--loss", "unknown preference loss 'dop'", "apo-zero")),
        (["--beta", "0"], ("--beta must be a positive number", "got 0")),
        (["--beta", "-0.5"], ("--beta must be a positive number",)),
        (["--beta", "inf"], ("--beta must be a positive number",)),
        (["--label-smoothing", "0.5"], ("--label-smoothing must be in [0, 0.5)", "got 0.5")),
        (["--gamma", "-1"], ("--gamma must be in [0, inf)",)),
        (["--orpo-lambda", "0"], ("--orpo-lambda must be positive",)),
        (["--reward-model", "--loss", "ipo"], ("--reward-model", "--loss ipo does not apply")),
        (["--reward-model", "--no-lora"], ("--reward-model", "--no-lora does not apply")),
    ],
    ids=[
        "unknown loss",
        "beta 0",
        "beta negative",
        "beta inf",
        "smoothing",
        "gamma",
        "lambda",
        "reward model with a loss",
        "reward model without LoRA",
    ],
)
def test_align_bad_options_are_one_line(tmp_path, capsys, argv, needles):
    align_fails(capsys, [*argv, "--output", tmp_path / "out"], *needles)
    assert not (tmp_path / "out").exists()


def test_align_bad_pairs_are_one_line(tmp_path, capsys):
    good = {"prompt": "a film :", "chosen": " it was fine .", "rejected": " it was dull ."}
    same = pairs_file(tmp_path / "same.jsonl", [good, {**good, "rejected": good["chosen"]}])
    align_fails(
        capsys,
        ["--train-file", same, "--output", tmp_path / "out"],
        "same.jsonl: line 2",
        "'chosen' and 'rejected' are the same text",
    )
    missing = pairs_file(tmp_path / "missing.jsonl", [good, {"prompt": "x", "chosen": " y"}])
    align_fails(
        capsys,
        ["--loss", "ipo", "--train-file", missing, "--output", tmp_path / "out"],
        "missing.jsonl: line 2 has no 'rejected' field",
    )
    align_fails(
        capsys,
        ["--reward-model", "--train-file", same, "--output", tmp_path / "out"],
        "same.jsonl: line 2",
        "'chosen' and 'rejected' are the same text",
    )
    assert not (tmp_path / "out").exists()


def test_align_beta_out_of_range_with_a_loss_is_one_line(tmp_path, capsys):
    """beta is checked before the loss's trainer is built, for a loss other than DPO too."""
    align_fails(capsys, ["--loss", "simpo", "--beta", "-2", "--output", tmp_path / "out"], "--beta")
    assert not (tmp_path / "out").exists()


def test_reward_model_learns_the_pairs_beside_dpo(tmp_path, capsys):
    """`peft-course align --reward-model`, which runs `train_reward_model`: RewardTrainer's
    scalar head's held-out margin grows from a random head's ~0 and it ranks the held-out pairs
    at least as well as before; DPO beside it, the same steps; saved like the other runs."""
    argv = ["--reward-model", "--prefer", "positive", "--n-train", "16", "--n-test", "8"]
    argv += ["--learning-rate", "2e-2", "--epochs", "1", "--batch-size", "8"]
    assert main(["align", *argv, "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "reward model (trl.RewardTrainer: scalar head + LoRA) and DPO beside it" in printed
    assert "| held-out accuracy |" in printed and "DPO's implicit reward" in printed
    run = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert run["steps"] == 2 and run["config"]["learning_rate"] == 2e-2
    assert run["after"]["margin"] > run["before"]["margin"] + 0.1, (run["before"], run["after"])
    assert run["after"]["accuracy"] >= run["before"]["accuracy"]
    assert run["dpo_after"]["rewards/accuracies"] > run["dpo_before"]["rewards/accuracies"]
    assert run["history"] and all("margin" in h for h in run["history"])
    assert (tmp_path / "out" / "rewards.png").stat().st_size > 5_000
    with pytest.raises(CourseError, match="lora must be on"):
        train_reward_model({"train": [], "test": []}, config=DPORunConfig(lora=False))


def test_reward_model_rows():
    before, after = {"accuracy": 0.0, "margin": -0.01}, {"accuracy": 1.0, "margin": 0.9}
    dpo = {"rewards/accuracies": 0.5, "rewards/margins": 0.2}
    rows = reward_model_rows(RewardModelRun(before, after, dpo, dpo, 2, 1.0), "prefer positive")
    assert [r["ranker"][:6] for r in rows] == ["reward", "DPO's "]
    assert rows[0]["held-out accuracy"] == "0.000 -> 1.000"


# ---- the exercises: reference answers and the grader's fixed batches ---------------------------

ROOT = Path(__file__).resolve().parents[1]


def by_path(path: Path, name: str):
    """A module imported from its file under a name of its own."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def answers():
    return by_path(ROOT / "solutions" / "preference.py", "_reference_preference")


def grader_module():
    """exercises/test_preference.py, the grader, imported once."""
    return sys.modules.get("_grader_preference") or by_path(
        ROOT / "exercises" / "test_preference.py", "_grader_preference"
    )


@pytest.fixture(scope="module")
def grader():
    return grader_module()


@pytest.mark.parametrize("name", ["ipo_loss", "simpo_loss", "kto_loss"])
def test_the_answers_mirror_the_package(answers, name):
    """solutions/preference.py has the package's signatures and gives its numbers (float64)."""
    from peft_course import preference

    assert inspect.signature(getattr(answers, name)) == inspect.signature(getattr(preference, name))
    b = batch(n=7, seed=11)
    good = torch.tensor([True, False, False, True, True, False, True])
    arguments = {
        "ipo_loss": (b["pc"], b["pr"], b["rc"], b["rr"], BETA, b["lc"], b["lr"]),
        "simpo_loss": (b["pc"], b["pr"], b["lc"], b["lr"], BETA, GAMMA),
        "kto_loss": (b["pc"], b["rc"], good, b["pr"], b["rr"], BETA, 1.3, 0.7),
    }[name]
    ours, theirs = getattr(answers, name)(*arguments), getattr(preference, name)(*arguments)
    for field_name in ("loss", "chosen_rewards", "rejected_rewards"):
        torch.testing.assert_close(
            getattr(ours, field_name), getattr(theirs, field_name), atol=ROUNDING_ATOL, rtol=0
        )


def test_the_graders_fixed_batches_tell_the_mistakes_apart(grader):
    """Every mistake that changes a fixed batch's loss moves it from the answer and from every
    other such mistake by at least 5e-3, 500 times the grader's LOGPROB_ATOL (5.9e-3 measured
    at the closest), so the grader names one mistake and never the wrong one."""
    from peft_course import preference

    cases = [
        (grader.ipo_call, preference.ipo_loss, grader.ipo_mistakes, grader.IPO_BATCH),
        (grader.simpo_call, preference.simpo_loss, grader.simpo_mistakes, grader.SIMPO_BATCH),
        (grader.kto_call, preference.kto_loss, grader.kto_mistakes, grader.KTO_BATCH),
        (grader.kto_call, preference.kto_loss, grader.kto_mistakes, grader.KTO_CLAMPED),
    ]
    for call, loss, mistakes, fixed in cases:
        right = call(loss, fixed).loss.item()
        values = [v for v in mistakes(fixed).values() if abs(v - right) > ROUNDING_ATOL]
        assert len(values) >= 6, "most mistakes show on the fixed batch"
        values.append(right)
        gaps = [abs(a - b) for i, a in enumerate(values) for b in values[i + 1 :]]
        assert min(gaps) >= 5e-3, (loss.__name__, sorted(gaps)[:3])


if __name__ == "__main__":  # the grader's TRL_BATCHES: python tests/test_preference.py
    import pprint

    reference, tokenizer = load_model("tiny-gpt2", task="causal-lm")
    policy = perturbed_copy(reference, scale=0.05, seed=3)
    pairs = list(film_preferences(6, 1, seed=2)["train"])
    settings = LossSettings(gamma=0.3, label_smoothing=0.2)
    batches = {}
    for name, function in EXERCISED.items():
        logged = trl_loss_metrics(name, policy, reference, tokenizer, pairs, 0.5, settings)
        batch = trl_batch(name, policy, reference, tokenizer, pairs)
        batches[function] = {**batch, "trl_loss": logged["loss"]}
    print("TRL_BATCHES = ", end="")
    pprint.pprint(batches, width=100, sort_dicts=False)
