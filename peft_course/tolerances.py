"""Every tolerance the tests and the exercise graders allow, named once, with its measurement.

A check that two numbers agree needs a bound, and a bound is only as good as the measurement behind
it. Each constant says what is compared (dtype, sizes), the largest difference measured, and why the
bound sits where it does; the tests and `exercises/test_*.py` import these names instead of writing
the number again.

"Across kernel sets" means: measured three times on one machine, under `ATEN_CPU_CAPABILITY=avx512`,
`avx2` and `default` (the last two with MKL's and oneDNN's matching switches, as
`benchmarks/cpu_spread.py` sets them), which imitates the summation orders of an AVX-512 server, an
AVX2 laptop and a CPU without vector extensions. Measured with torch 2.13.0 (CPU), transformers
5.24.0, peft 0.21.2, trl 1.16.0 and bitsandbytes 0.50.2, on one thread, as the tests run.

Names: `_ATOL` is an absolute bound, `_RTOL` one relative to the expected value, `_SPREAD` the
accuracy a figure moves between CPUs (a test allows twice the spread: a fresh run and the documented
one may sit at opposite ends of it).

A foundation module: it imports nothing, so that the tests and the graders (which a learner runs
with the package installed) can read it without loading torch.
"""

# ---- float32: one result, two equivalent sequences of operations -----------------------------

LOGITS_ATOL = 1e-5
"""Logits (and LoRA's gradients) of one float32 model computed in two equivalent ways.

GPT-2 from scratch (`peft_course.gpt2`) against transformers' `GPT2LMHeadModel` on the same weights
(three q/k/v products instead of one fused `c_attn`, a boolean mask instead of transformers'): at
most 3.8e-6 across kernel sets, on tiny-gpt2 (4 x 12 tokens, padded) and on a random GPT-2 small
(2 x 16 tokens: 2.7e-6); the exercise's mask plugged into tiny-gpt2 2.9e-6; the classifier 1.2e-7; a
right-padded row against the row alone 3.3e-6; GPT-2 with LoRA merged against unmerged 3.3e-6. LoRA
from scratch against peft (`compare_with_peft`: logits, merged logits, the gradients of A and B, on
GPT-2 and on Llama): 0 on every kernel set, the same operations in the same order. One LoRA layer
merged (`(W + s B A) x` instead of `W x + s B A x`): 1.9e-6; a model merged by `merge_and_unload`
2.7e-7, merged then unmerged in place 1.2e-7; `LoRALayer` against the formula written out 7.2e-7
(`default`; 0 on the others); the exercise's Conv1D-to-Linear copy 2.4e-7; a QLoRA run reloaded from
its files, re-quantizing the same weights, the same probabilities (0).

Logits are of size 1-10, where a float32 step is 1e-7 to 1e-6, and each is a sum of 64 to 768
products, so a different order moves it by a few steps. 1e-5 is 2.6 times the largest seen; a real
mistake (a wrong mask, an update added twice) moves logits by whole units.
"""

LORA_OUTPUT_RTOL = 1e-5
"""A learner's LoRA output against the formula, relative to the output's largest |value|.

exercises/test_lora.py checks `lora_forward`, and a plain layer holding `merged_weight`, against
`W0 x + b + s B A x` written out and against `peft_course.lora.LoRALayer`, on random shapes up to 23
wide with standard-normal weights, whose outputs reach ~300: hence a bound that scales with them.
The reference answers: 0 (the forward pass, either way) and 2.3e-7 of the largest |output| (the
merged weight), across kernel sets. A correct answer that multiplies in another order moves float32
by a few 1e-7 of the output; 1e-5 leaves a factor of 40.
"""

LOGPROB_ATOL = 1e-5
"""Log-probabilities (of label words, of completions, of answers) computed in two ways.

The verbalizer's batched, right-padded scores against one unpadded prompt at a time: 6.9e-6
(tests/test_ablation.py, `avx2`; 1.9e-6 on the others) and 3.3e-6 (tests/test_prompting.py: a first
token, a two-token word's sum 3.1e-6, both reductions of one-token words 2.9e-6); the loss at the
answer positions (`answer_loss`) against the model's own loss on tiny-gpt2 and tiny-llama 6.0e-7;
the exercises' `sequence_logprobs`, DPO rewards and loss against `peft_course.dpo` on random (3 x 7
x 11) logits: 0 for the reference answers, ~1e-6 when summed in another order.

Padding changes the shapes the matrix products run on, and with them the order of the float32 sums
over the vocabulary; the values are of size 1-15. 1e-5 is 1.4 times the largest seen, the closest
margin in this module; a wrong position or token is off by whole units.
"""

TRAINING_LOSS_ATOL = 1e-5
"""Per-step training losses, and final weights, of one run done in two equivalent ways.

tests/test_training_options.py: 12 LoRA steps with each batch run in pieces under a token budget
against whole batches, 1.2e-7 across kernel sets (one float32 step at 1.0; the final weights
3.6e-7); a language-model batch in pieces weighted by their token counts 1.9e-6; `torch.compile`
against eager 0. tests/test_distributed.py: two gloo processes with half of every batch against one
process with all of it, 1.2e-7 over 10 steps across kernel sets. Only the order in which gradients
are summed changes, and a few Adam steps on a tiny model do not amplify it much; 1e-5 is 5 times the
largest seen.
"""

TRL_ATOL = 2e-5
"""Our DPO metrics against TRL's on the same policy, reference and pairs (tests/test_dpo.py).

Loss, rewards, margins, accuracies and sequence log-probabilities of a perturbed tiny-gpt2. Both
sides run the same float32 model on the same tokens; they differ in how the log-softmax is evaluated
(TRL projects the hidden states in tiles through a fused LM head). A sequence log-probability is a
sum of ~15 terms of size ~2, so float32 round-off is ~1e-6: measured 3.8e-6 (`default`; 9.5e-7
`avx512`, 3.6e-7 `avx2`). 2e-5 is 5 times the largest seen.

The same bound serves the rewards and log-probabilities of DPO's relatives against DPOTrainer (IPO,
hinge, robust, APO-zero), CPOTrainer (SimPO), ORPOTrainer and KTOTrainer (tests/test_preference.py,
8 film pairs, beta 0.5, ORPO's lambda 2, a perturbed tiny-gpt2): rewards at most 9.5e-7 (ORPO's,
lambda times a per-token log-probability), log-probabilities 3.8e-6 (`avx2` and `default`; 1.9e-6
`avx512`), across kernel sets.
"""

PREFERENCE_LOSS_ATOL = 4e-6
"""The course's loss of each of DPO's relatives against the loss TRL's trainer logs for it.

`peft_course.preference.loss_metrics` against `trl_loss_metrics`, one batch of 8 film pairs, beta
0.5, a perturbed tiny-gpt2 against its original, float32 (tests/test_preference.py): at most 8.3e-7
across kernel sets (hinge under `avx2`; IPO 6.0e-7, robust 5.4e-7, DPO 3.6e-7; SimPO, ORPO and KTO
below 1.2e-7, since CPO and ORPO compute log-probabilities from plain logits as the course does).
Every loss was within 1e-6 on every kernel set, but with a margin of 1.2 only. The losses differ
only through the log-probabilities (TRL_ATOL: up to 3.8e-6 on a sum), which a loss multiplies by a
slope of at most about beta: 4e-6 is about 5 times the largest seen, and a wrong term (a lost length
normalisation, gamma or 1/(2 beta)) moves a loss by 0.05 or more.
"""

PREFIX_CACHE_ATOL = 1e-4
"""Next-token log-probabilities with a shared k-shot prefix run once and its cache reused.

`prompting.next_token_logprobs` against running every prompt whole (tests/test_prompting.py): at
most 7.6e-6 on tiny-gpt2 (`avx2`; 3.8e-6 on the others) and 3.8e-6 on tiny-llama across kernel sets,
2.3e-5 on SmolLM2-135M (the test's own earlier measurement), with the same argmax everywhere. The
cached pass attends over two pieces of keys instead of one, and the bound has to hold for the real
model too: 1e-4 is 4 times SmolLM2's difference.
"""

GRADED_LOGPROB_ATOL = 1e-4
"""A learner's `verbalizer_scores` against the course's batched implementation.

exercises/test_prompting.py. The reference answer scores one prompt at a time, the course's version
batches and pads, so the shapes and the float32 summation orders differ: at most 4.8e-6 across
kernel sets (`avx2`; 2.9e-6 `avx512`) on tiny-gpt2's log-probabilities of size 1-15. A learner's
version may batch or not, pad on either side, or return another float dtype (the graders compare
`got.float()`); 1e-4 is 20 times the reference's
difference, and a wrong token or position is off by whole units.
"""

ROUNDING_ATOL = 1e-6
"""Two float32 results that are the same numbers up to a few roundings, not a long sum.

Measured: QLoRA's gradients with and without gradient checkpointing, 0 (tests/test_qlora.py); QLoRA
logits after reloading the trained weights into a fresh quantized model, 0; a reloaded LoRA run's
probabilities, 0 (tests/test_finetune.py); the base weight after merge then unmerge
(`W + s B A - s B A`), 6.0e-8 (tests/test_lora.py); `solutions/` against the package's DPO
functions, 0 (tests/test_solutions_mirror.py); the DPO loss at policy = reference against ln 2,
1.9e-9 (TRL's metrics) and 5.8e-8 (a DPO run's first evaluation, tests/test_dpo.py), and the reward
margin there, 0 (tests/test_llama.py). All across kernel sets. A float32 step at 1 is 1.2e-7;
1e-6 allows a few roundings and would catch a different formula.
"""

RERUN_ATOL = 1e-7
"""The same float32 computation run again on the same inputs: expected bitwise equal.

TRL's sigmoid DPO loss with and without `label_smoothing`, which TRL 1.x reads only in its other
losses (tests/test_dpo.py): 0 across kernel sets. 1e-7 is about one float32 step at the loss's size
(ln 2: the step there is 6e-8).
"""

DISTRIBUTED_WEIGHTS_RTOL = 1e-6
"""The final weights' checksum (sum of |w|) of a two-process run against the one-process run.

tests/test_distributed.py: differed by at most 6e-8 of itself (full fine-tuning, FSDP), across
kernel sets; 1e-6 of itself is 16 times that.
"""

# ---- float64 and exact arithmetic -----------------------------------------------------------

FLOAT64_ATOL = 1e-9
"""A few float64 operations, or sympy's 15-digit floats, against the exact value.

Bytes per parameter, a ratio of integers (exercises/test_qlora.py): 0; NF4 bits per parameter
against what bitsandbytes stores for whole 256-block groups (exercises/test_counting.py): 0; the
reward recovered from the policy through `sympy.Float` (exercises/test_dpo.py): 1.1e-16. A float64
step at 1 is 2.2e-16; 1e-9 absorbs any order of a few divisions and sympy's evaluation.
"""

FLOAT64_SAME_FORMULA = 1e-12
"""The same float64 formula computed by two pieces of code.

The reference `mean_std` against the package's (absolute, values in [0, 1],
tests/test_solutions_mirror.py): 0; an adapter convention's percent against `100 * adapters / whole`
(relative, tests/test_counting.py): 0. 1e-12 is ~4,500 float64 steps: room for another order of the
same sum, none for another formula.
"""

LARGE_LOSS_RTOL = 1e-4
"""The DPO loss of a pair wrong by 998 nats, relative (exercises/test_dpo.py).

`-logsigmoid(-998)` is 998 to float32 precision, and a stable answer gives 998.0 exactly (measured
0), where `log(sigmoid(...))` underflows to infinity. A float32 step at 998 is 6.1e-5 (6e-8
relative); 1e-4 of it (0.1) tells a finite, correct loss from a wrong one without depending on the
last digits.
"""

ADAM_STEP_RTOL = 1e-3
"""Ratios of the first Adam step's effect for alpha 8 and 32 against alpha 4: 2 and 8.

tests/test_lora.py: the mean |change| of a LoRA layer's output after one step. Adam's eps (1e-8)
against gradients of ~1e-2 bends the proportionality by under 1e-5 relative; measured 2.0e-6
relative (1.6e-5 on the ratio 8) across kernel sets. 1e-3 relative is 500 times that; if alpha did
not scale the step, the ratios would be 1.
"""

THREE_DECIMALS_ATOL = 1e-3
"""A figure quoted to three decimals: NF4 with double quantization costs 4.127 bits per weight.

tests/test_qlora.py: the byte formula gives 4.126953125 on whole 256-block groups, 4.7e-5 from the
quoted figure; 1e-3 is one unit of its last digit.
"""

# ---- 4-bit NF4: the round trip, in units of each 64-weight block's absmax -------------------

NF4_MAX_ERROR = 0.1521
"""The largest |dequantized - original| weight of tiny-gpt2, without double quantization.

NF4 rounds each weight to the nearest of 16 levels in [-1, 1] times its block's absmax; the widest
gap between levels is 0.304 (from -1 to -0.696), so no weight moves by more than half of it, 0.1519
absmax: measured 0.1519 (tests/test_qlora.py; quantization is elementwise, the same on every kernel
set). The bound is half the gap plus 2e-4.
"""

NF4_DOUBLE_QUANT_MAX_ERROR = 0.2
"""The same with double quantization: the absmax itself is rounded to an 8-bit code.

Its steps are a few percent of the absmax, which lets the error pass half the widest gap: measured
0.168 absmax (0.171 with the bitsandbytes these tests were written with); 0.2 allows it.
"""

NF4_MEAN_ERROR = 0.05
"""The mean |dequantized - original| weight of a quantized module, in absmax.

Measured 0.029 for the worst module of tiny-gpt2, with and without double quantization, on every
kernel set; the test calls a larger mean "too coarse for NF4", and 0.05 is 1.7 times the measured
one.
"""

# ---- accuracy: the points a figure moves between CPUs ----------------------------------------
# Measured by benchmarks/cpu_spread.py (docs/results/cpu-spread.md): the demo under 3 kernel
# sets (this CPU's own, AVX2 only, no vector extensions) x training seeds 0-2, each kernel set
# building its own tiny-gpt2, plus the docs' own 2-thread run. A CPU with other kernels sums in
# another order, and a few epochs on a few hundred examples turn that rounding into points of
# accuracy. The tests allow twice each spread: a fresh run and the documented one may sit at
# opposite ends of it, and a CPU not measured may land a little outside. Last-iteration cells of
# the ablation tables move by up to 0.20 between kernel sets (alpha=256 and r=128 end their third
# epoch on a swing of the validation loss): too much to compare with a documented figure, which
# is why the seed project, and those tables, also report the best-validation checkpoint.

DEMO_CPU_SPREAD = 0.025
"""The largest range of one demo accuracy across kernel sets at one seed (QLoRA and LoRA from
scratch 0.025, LoRA (peft) and merged 0.0225, the other rows 0.0125 or less)."""

LORA_SPREAD = 0.025
"""The largest |LoRA-like row - LoRA (peft)| in one demo run (LoRA from scratch 0.025, QLoRA 0.020).
tests/test_lora.py trains the same two rows: 0.025, 0.0125 and 0.005 apart across kernel sets."""

ABLATION_BEST_SPREAD = 0.055
"""The largest range of a best-validation cell of the ablation tables across kernel sets at one seed
(r=196; the others 0.0525 or less)."""

MERGED_ACCURACY_ATOL = 1 / 400
"""Merged against unmerged LoRA accuracy on the demo's 400 test rows: one example.

Merging folds `B A` into `W` and moves logits by ~1e-6 (`LOGITS_ATOL`), which can flip at most a
near-tie; measured equal on every kernel set and seed (docs/results/cpu-spread.md)."""

CHANCE_ATOL = 0.05
"""An untrained language model's verbalizer accuracy around chance, 0.5, on a balanced binary test
split. Measured 0.5 exactly across kernel sets (tests/test_ablation.py at the quick setting) and in
every untrained row of the ablation tables on the cpu-spread page (3 kernel sets x 3 seeds). No
spread has been seen; the bound says "near chance", far below the 0.65 a trained cell must reach."""
