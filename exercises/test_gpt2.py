"""Grades exercises/gpt2.py against transformers on the same weights.

The padding mask is plugged into the course's from-scratch GPT-2 and its logits compared with
transformers' `GPT2LMHeadModel`; the Conv1D copy with transformers' `Conv1D`; the top-p filter
with `TopPLogitsWarper`; greedy decoding with `generate(do_sample=False)`. Float32 results of
equivalent computations differ by rounding (at most 4e-6 measured here), so logits allow
`peft_course.tolerances.LOGITS_ATOL` (1e-5);
filters and tokens must match exactly.
"""

import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers.generation.logits_process import TopPLogitsWarper
from transformers.pytorch_utils import Conv1D

from peft_course import decoding
from peft_course import gpt2 as reference
from peft_course.models import load_model
from peft_course.tolerances import LOGITS_ATOL


@pytest.fixture
def gpt2(load):
    return load("gpt2")


@pytest.fixture(scope="module")
def tiny():
    """(from-scratch GPT-2, transformers' GPT-2, tokenizer) on the embedded tiny-gpt2 weights."""
    theirs, tokenizer = load_model("tiny-gpt2", task="causal-lm")
    return reference.from_pretrained("tiny-gpt2").eval(), theirs.eval(), tokenizer


# --- attention_mask ---------------------------------------------------------------------


def test_causal_mask_without_padding(gpt2):
    got = gpt2.attention_mask(None, 4, 4)
    expected = torch.tensor(
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool
    )
    assert got.dtype == torch.bool, f"return booleans (True = may attend), got {got.dtype}"
    assert tuple(got.shape) == (1, 1, 4, 4), f"expected shape (1, 1, 4, 4), got {tuple(got.shape)}"
    assert torch.equal(got[0, 0], expected), (
        f"query i sees keys 0..i:\n{expected.int()}\ngot\n{got[0, 0].int()}"
    )


def test_mask_for_the_newest_queries_with_a_cache(gpt2):
    """Two new queries after three cached positions: they are positions 3 and 4 of 5 keys."""
    got = gpt2.attention_mask(None, 2, 5)
    expected = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert tuple(got.shape) == (1, 1, 2, 5), f"expected shape (1, 1, 2, 5), got {tuple(got.shape)}"
    assert torch.equal(got[0, 0], expected), f"expected\n{expected.int()}\ngot\n{got[0, 0].int()}"


def test_mask_hides_padding_but_never_a_whole_row(gpt2):
    padding = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]])  # right- and left-padded rows
    got = gpt2.attention_mask(padding, 4, 4)
    assert tuple(got.shape) == (2, 1, 4, 4), (
        f"expected one mask per row, (2, 1, 4, 4), got {tuple(got.shape)}"
    )
    expected = torch.tensor(
        [
            [
                [1, 0, 0, 0],
                [1, 1, 0, 0],
                [1, 1, 1, 0],
                [1, 1, 0, 1],
            ],  # pad queries 2, 3 see the real keys and themselves
            [
                [1, 0, 0, 0],
                [0, 1, 0, 0],
                [0, 0, 1, 0],
                [0, 0, 1, 1],
            ],  # pad queries 0, 1 see only themselves
        ],
        dtype=torch.bool,
    )
    assert torch.equal(got[:, 0], expected), (
        "padding keys are hidden, yet each query sees its own position:"
        f"\nexpected\n{expected.int()}\n"
        f"got\n{got[:, 0].int()}"
    )


def test_the_model_with_your_mask_equals_transformers(gpt2, tiny, monkeypatch):
    model, theirs, _ = tiny
    monkeypatch.setattr(reference, "attention_mask", gpt2.attention_mask)
    ids = torch.randint(
        0, model.config.vocab_size, (3, 10), generator=torch.Generator().manual_seed(0)
    )
    padding = torch.ones(3, 10, dtype=torch.long)
    padding[0, 6:] = 0
    padding[1, :4] = 0
    difference = reference.max_logit_difference(model, theirs, ids, padding)
    assert difference < LOGITS_ATOL, (
        "with your mask the from-scratch GPT-2's logits differ from transformers' by "
        f"{difference:.3g} "
        f"at the real tokens (allowed {LOGITS_ATOL}): is padding hidden and the causal order kept?"
    )


def mask_by_hand(padding: torch.Tensor, queries: int, keys: int) -> torch.Tensor:
    """The docstring's rule written out one entry at a time: query i is key position
    `keys - queries + i`; it sees the keys up to there that are not padding, and itself."""
    rows, expected = padding.shape[0], torch.zeros(padding.shape[0], 1, queries, keys, dtype=bool)
    for b in range(rows):
        for i in range(queries):
            position = keys - queries + i
            for j in range(keys):
                expected[b, 0, i, j] = (j <= position and bool(padding[b, j])) or j == position
    return expected


def padding_layouts(rng: random.Random, rows: int, keys: int) -> torch.Tensor:
    """Left-padded, right-padded and holed rows (a prompt's padding, then cached real tokens)."""
    padding = torch.ones(rows, keys, dtype=torch.long)
    for b in range(rows):
        layout, n = rng.choice(["left", "right", "holes"]), rng.randint(0, keys - 1)
        if layout == "left":
            padding[b, :n] = 0
        elif layout == "right":
            padding[b, keys - n :] = 0
        else:
            padding[b, rng.sample(range(keys), n)] = 0
    return padding


def test_mask_with_a_cache_and_padding_together(gpt2):
    """Fewer queries than keys (a KV cache) *and* padding: each combination checked entry by
    entry against the docstring's rule, on random padding layouts and sizes."""
    rng = random.Random(0)
    for _ in range(40):
        keys = rng.randint(2, 9)
        queries, rows = rng.randint(1, keys), rng.randint(1, 3)
        padding = padding_layouts(rng, rows, keys)
        expected = mask_by_hand(padding, queries, keys)
        try:
            got = gpt2.attention_mask(padding, queries, keys)
        except NotImplementedError:
            raise
        except RuntimeError as error:
            pytest.fail(
                f"padding {tuple(padding.shape)}, {queries} queries, {keys} keys: attention_mask "
                f"failed inside your code ({str(error).splitlines()[0]}). padding_mask is "
                "(B, keys): with a cache it covers the earlier positions too, and it hides "
                "padding *keys* (the last axis)",
                pytrace=False,
            )
        assert tuple(got.shape) == (rows, 1, queries, keys), (
            f"padding {tuple(padding.shape)}, {queries} queries, {keys} keys: expected shape "
            f"{(rows, 1, queries, keys)}, got {tuple(got.shape)}"
        )
        assert got.dtype == torch.bool, f"return booleans (True = may attend), got {got.dtype}"
        if torch.equal(got, expected):
            continue
        causal = torch.ones(queries, keys, dtype=torch.bool).tril(keys - queries)
        at_key_i = (causal & padding.bool()[:, None, None, :]) | torch.eye(queries, keys).bool()
        why = (
            "each query's own position was taken as key i; the queries are the *last* "
            "`queries` keys, so query i is key position keys - queries + i, and that is the "
            "position it always sees"
            if torch.equal(got.bool(), at_key_i)
            else "causal up to key keys - queries + i for query i, padding keys hidden, and "
            "every query always sees its own position"
        )
        pytest.fail(
            f"{queries} queries after {keys - queries} cached positions ({keys} keys), with "
            f"padding: {why}.\npadding\n{padding}\nexpected\n{expected[:, 0].int()}\n"
            f"got\n{got[:, 0].int()}",
            pytrace=False,
        )


# --- copy_conv1d ------------------------------------------------------------------------


@pytest.mark.parametrize("d_in, d_out", [(8, 24), (16, 16), (5, 3)])
def test_copy_conv1d_computes_what_conv1d_computes(gpt2, d_in, d_out):
    generator = torch.Generator().manual_seed(d_in * d_out)
    conv = Conv1D(d_out, d_in)  # transformers' argument order: (out, in); weight stored (in, out)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(d_in, d_out, generator=generator))
        conv.bias.copy_(torch.randn(d_out, generator=generator))
    linear = nn.Linear(d_in, d_out)
    gpt2.copy_conv1d(linear, conv.weight, conv.bias, "h.0.mlp.c_fc")
    x = torch.randn(2, 7, d_in, generator=generator)
    with torch.no_grad():
        error = (linear(x) - conv(x)).abs().max().item()
        conv.weight.add_(1.0)  # the copy must not share storage with the source
        drift = (linear(x) - conv(x)).abs().max().item()
    assert error < LOGITS_ATOL, (
        f"Linear({d_in}, {d_out}) after the copy differs from the Conv1D by {error:.3g}: "
        "Conv1D stores "
        f"(in, out), Linear (out, in), so copy the transpose"
    )
    assert drift > 0.5, (
        "changing the Conv1D's weight afterwards changed your Linear too: copy the values"
    )
    assert isinstance(linear.weight, nn.Parameter), (
        "copy into linear.weight in place; keep it a Parameter"
    )


@pytest.mark.parametrize(
    "weight_shape, bias_shape", [((24, 8), (24,)), ((8, 24), (8,)), ((8, 16), (24,))]
)
def test_copy_conv1d_refuses_a_shape_that_does_not_fit(gpt2, weight_shape, bias_shape):
    with pytest.raises(ValueError) as error:
        gpt2.copy_conv1d(
            nn.Linear(8, 24), torch.zeros(weight_shape), torch.zeros(bias_shape), "h.3.attn.c_proj"
        )
    assert error.value.args and error.value.args[0], (
        "the ValueError should say which shape does not fit"
    )
    assert "h.3.attn.c_proj" in str(error.value), (
        f"the ValueError should name the layer ('h.3.attn.c_proj'), got: {error.value}"
    )


def test_copy_conv1d_copies_the_bias_too(gpt2):
    """ "Copy in place": afterwards the Linear owns its values; changing the checkpoint's
    tensors (bias included) must not change it."""
    generator = torch.Generator().manual_seed(3)
    weight, bias = torch.randn(6, 4, generator=generator), torch.randn(4, generator=generator)
    linear = nn.Linear(6, 4)
    weight_before, bias_before = linear.weight, linear.bias
    gpt2.copy_conv1d(linear, weight, bias, "h.0.attn.c_proj")
    assert linear.weight is weight_before and linear.bias is bias_before, (
        "copy into linear's own weight and bias Parameters (in place), do not replace them"
    )
    assert torch.equal(linear.bias, bias), "the bias must be copied as it is"
    with torch.no_grad():
        bias.add_(1.0)
        weight.add_(1.0)
    assert not torch.equal(linear.bias, bias), (
        "changing the checkpoint's bias afterwards changed your Linear's bias too: they share "
        "storage; copy the values in place (linear.bias.copy_)"
    )
    assert linear.bias.data_ptr() != bias.data_ptr()


# --- top_p_filter -----------------------------------------------------------------------


def tied_logits(seed: int, shape=(4, 30)) -> torch.Tensor:
    """Random logits rounded to one decimal, so that many tokens tie."""
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2).round(decimals=1)


@pytest.mark.parametrize("p", [1e-6, 0.1, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_top_p_equals_transformers(gpt2, p, seed):
    logits = tied_logits(seed)
    before = logits.clone()
    expected = TopPLogitsWarper(p)(None, logits.clone())
    got = gpt2.top_p_filter(logits, p)
    assert torch.equal(logits, before), (
        "top_p_filter must return a new tensor and leave its input as it was"
    )
    assert got.data_ptr() != logits.data_ptr(), (
        f"p={p}: top_p_filter returned its input itself: always return a new tensor (a caller "
        "that changes the result, nothing dropped or not, must not change its logits)"
    )
    kept, wanted = torch.isfinite(got).sum(-1).tolist(), torch.isfinite(expected).sum(-1).tolist()
    assert torch.equal(got, expected), (
        f"p={p}: transformers keeps {wanted} tokens per row, you kept {kept} "
        "(dropped ones are -inf, the "
        f"rest unchanged)"
    )


def test_top_p_works_on_any_leading_shape(gpt2):
    logits = tied_logits(5, (2, 3, 30))
    expected = TopPLogitsWarper(0.7)(None, logits.reshape(6, 30).clone()).reshape(2, 3, 30)
    assert torch.equal(gpt2.top_p_filter(logits, 0.7), expected), (
        "filter along the last dimension only"
    )


@pytest.mark.parametrize("shift", [100.0, 1000.0, -1000.0])
def test_top_p_with_large_logits(gpt2, shift):
    """Softmax depends only on differences of logits: adding the same number to every logit
    keeps the same tokens. Large logits are what real models produce now and then."""
    logits = tied_logits(4)
    expected = TopPLogitsWarper(0.8)(None, logits.clone()) + shift
    got = gpt2.top_p_filter(logits + shift, 0.8)
    kept, wanted = torch.isfinite(got).sum(-1).tolist(), torch.isfinite(expected).sum(-1).tolist()
    assert torch.equal(got, expected), (
        f"logits shifted by {shift:g}: the same tokens must stay ({wanted} per row), you kept "
        f"{kept}. The probabilities are a softmax, which depends only on differences of logits; "
        "exp() of a logit above 88 overflows float32 (inf / inf is NaN): use torch.softmax"
    )


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5])
def test_top_p_refuses_p_outside_0_1(gpt2, p):
    with pytest.raises(ValueError) as error:
        gpt2.top_p_filter(tied_logits(0), p)
    assert error.value.args and error.value.args[0], (
        f"the ValueError should say that p={p} is outside (0, 1]"
    )


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
def test_top_p_at_an_exact_boundary(gpt2, p):
    """Four equal logits: probabilities of exactly 1/4, running totals 1/4, 1/2, 3/4, 1. Where a
    total equals 1 - p exactly, that token is dropped (`<=`), as transformers does."""
    logits = torch.zeros(2, 4)
    expected = TopPLogitsWarper(p)(None, logits.clone())
    got = gpt2.top_p_filter(logits, p)
    kept, wanted = torch.isfinite(got).sum(-1).tolist(), torch.isfinite(expected).sum(-1).tolist()
    assert torch.equal(got, expected), (
        f"p={p} on four equal logits: transformers keeps {wanted} tokens per row, "
        f"you kept {kept}; a token "
        f"whose running total is exactly 1 - p is dropped"
        + (
            " (the same number here, but other tokens: add up from the bottom of the rows "
            "sorted from least to most likely, as transformers does)"
            if kept == wanted
            else ""
        )
    )


# --- greedy_decode ----------------------------------------------------------------------


class CallRecorder(nn.Module):
    """The model, recording how many positions each call read and whether it got a cache."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, input_ids, past_key_values=None, use_cache=False, **kwargs):
        self.calls.append((input_ids.shape[1], past_key_values is not None))
        return self.model(input_ids, past_key_values=past_key_values, use_cache=use_cache, **kwargs)


@pytest.mark.parametrize("text", ["The film was", "A dull", "Sentiment"])
def test_greedy_equals_transformers_generate(gpt2, tiny, text):
    model, theirs, tokenizer = tiny
    prompt = torch.tensor([tokenizer(text)["input_ids"]])
    got = gpt2.greedy_decode(model, prompt, 12)
    assert tuple(got.shape) == (1, prompt.shape[1] + 12), (
        f"expected the prompt plus 12 tokens, got {tuple(got.shape)}"
    )
    expected = theirs.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=12,
        do_sample=False,
        pad_token_id=tokenizer.eos_token_id,
    )  # stops at end-of-text: compare up to there
    assert got[:, : expected.shape[1]].tolist() == expected.tolist(), (
        f"{text!r}: transformers' greedy tokens are {expected[0].tolist()}, yours {got[0].tolist()}"
    )
    full = decoding.generate(model, prompt, 12)
    assert got.tolist() == full.tolist(), (
        f"{text!r}: after end-of-text, expected {full[0].tolist()}"
    )


def test_greedy_decoding_uses_the_kv_cache(gpt2, tiny):
    model, _, tokenizer = tiny
    recorder = CallRecorder(model)
    prompt = torch.tensor([tokenizer("The film was")["input_ids"]] * 2)
    gpt2.greedy_decode(recorder, prompt, 5)
    expected = [(prompt.shape[1], False)] + [(1, True)] * 4
    assert recorder.calls == expected, (
        f"expected calls reading (positions, cache given) {expected}: the prompt once, "
        "then one new "
        f"token at a time with past_key_values; got {recorder.calls}"
    )


@pytest.mark.parametrize("new_tokens", [0, 1, 2])
def test_greedy_decoding_adds_exactly_max_new_tokens(gpt2, tiny, new_tokens):
    """`(B, T + max_new_tokens)`: none at 0 (the prompt itself), one at 1; a batch of two
    prompts decodes each row as it would alone."""
    model, _, tokenizer = tiny
    prompt = torch.tensor(
        [tokenizer("The film was")["input_ids"], tokenizer("A dull plot")["input_ids"]]
    )
    got = gpt2.greedy_decode(model, prompt, new_tokens)
    assert tuple(got.shape) == (2, prompt.shape[1] + new_tokens), (
        f"max_new_tokens={new_tokens}: expected shape {(2, prompt.shape[1] + new_tokens)}, the "
        f"prompt and exactly {new_tokens} new tokens, got {tuple(got.shape)}"
    )
    expected = decoding.generate(model, prompt, new_tokens) if new_tokens else prompt
    assert got.tolist() == expected.tolist(), (
        f"max_new_tokens={new_tokens}, two prompts: expected {expected.tolist()}, got "
        f"{got.tolist()}"
    )


GPT2_EOS = 50256  # GPT-2's end-of-text id


class Scripted(nn.Module):
    """A stand-in language model whose most likely next token is read off a script per row
    (end-of-text among them), whatever it is given; it keeps the call protocol of the real
    one: `.logits` `(B, T, vocab)` and a `.past_key_values` that counts the positions seen."""

    def __init__(self, scripts: list[list[int]], prompt_length: int) -> None:
        super().__init__()
        self.scripts, self.prompt_length = scripts, prompt_length
        self.config = SimpleNamespace(eos_token_id=GPT2_EOS, vocab_size=GPT2_EOS + 1)

    def forward(self, input_ids, past_key_values=None, use_cache=False, **kwargs):
        seen = (past_key_values or 0) + input_ids.shape[1]
        step = seen - self.prompt_length
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], self.config.vocab_size)
        for row, script in enumerate(self.scripts):
            logits[row, -1, script[step]] = 1.0
        return SimpleNamespace(logits=logits, past_key_values=seen if use_cache else None)


def test_greedy_decoding_goes_on_after_end_of_text(gpt2):
    """Every step adds a token: a row that produced end-of-text goes on with what the model
    says next, and the result is always `(B, T + max_new_tokens)`."""
    eos = GPT2_EOS
    scripts = [[5, eos, 7, eos, eos, eos], [eos, eos, 9, 3, eos, eos]]
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    model = Scripted(scripts, prompt.shape[1])
    got = gpt2.greedy_decode(model, prompt, 5)
    expected = torch.cat([prompt, torch.tensor([s[:5] for s in scripts])], dim=1)
    assert got.tolist() == expected.tolist(), (
        f"a model whose greedy tokens are {[s[:5] for s in scripts]} (end-of-text = {eos}): "
        f"expected {expected.tolist()}, got {got.tolist()}. Every step adds the most likely "
        "token, end-of-text or not: the result is (B, T + max_new_tokens)"
    )
