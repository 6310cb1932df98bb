"""Decoding by hand: greedy, temperature, top-k and top-p sampling, with a KV cache.

A language model gives a distribution over the next token; decoding turns that into text, one
token at a time. Greedy takes the most likely token. Sampling divides the logits by a
temperature and may first cut the candidates to the `k` most likely (top-k) or to the fewest
whose probabilities reach `p` (top-p, nucleus sampling, Holtzman et al., 2020). The filters
are tested equal to transformers' `TopKLogitsWarper` and `TopPLogitsWarper`, and greedy
decoding of `peft_course.gpt2` equal to `generate(do_sample=False)`.
"""

from __future__ import annotations

from typing import Any

import torch

from peft_course.errors import CourseError, check_int, check_number
from peft_course.gpt2 import GPT2
from peft_course.settings import DECODING

STRATEGIES = ("greedy", "temperature", "top-k", "top-p")


class DecodingError(CourseError):
    """A decoding setting or a prompt that cannot be decoded."""


def check_decoding(
    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> None:
    """Refuse a temperature <= 0, a top-k below 1 and a top-p outside (0, 1].

    Args:
        temperature: what the logits are divided by before sampling.
        top_k: how many of the likeliest tokens to keep; None: no top-k cut.
        top_p: the probability the kept tokens must reach; None: no top-p cut.

    Raises:
        CourseError: naming the setting that is out of range.
    """
    check_number("temperature", temperature, 0.0, None, low_open=True)
    if top_k is not None:
        check_int("top_k", top_k)
    if top_p is not None:
        check_number("top_p", top_p, 0.0, 1.0, low_open=True)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the `k` highest logits of each row
    (and any tied with the k-th); the rest become -inf.

    Args:
        logits: `(..., V)` logits.
        k: how many to keep per row; a `k` above `V` keeps them all.

    Raises:
        CourseError: if `k` is not a positive integer.
    """
    check_int("top_k", k)
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


# --8<-- [start:top_p]
def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the fewest most likely tokens whose probabilities reach `p`.

    Sorted from least to most likely, a token is dropped while the probability of it and
    everything less likely is at most `1 - p`; the most likely token always stays.

    Args:
        logits: `(..., V)` logits.
        p: the probability to reach, in (0, 1].

    Raises:
        CourseError: if `p` is outside (0, 1].
    """
    check_number("top_p", p, 0.0, 1.0, low_open=True)
    ascending, order = torch.sort(logits, dim=-1)
    tail = ascending.softmax(dim=-1).cumsum(dim=-1)  # probability of this token and all below it
    drop = tail <= 1 - p
    drop[..., -1] = False
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


# --8<-- [end:top_p]


def next_token(
    logits: torch.Tensor,
    strategy: str = "greedy",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`(B,)` next tokens from `(B, V)` logits:
    argmax, or a draw after temperature, top-k, top-p.

    Args:
        logits: the logits of the last position, `(B, V)`.
        strategy: `"greedy"` takes the argmax; any other strategy samples.
        temperature: what the logits are divided by before sampling.
        top_k: keep only the `top_k` likeliest tokens (`top_k_filter`); None: no cut.
        top_p: keep only the nucleus of probability `top_p` (`top_p_filter`); None: no cut.
        generator: the random generator to draw with; None: torch's global one.
    """
    if strategy == "greedy":
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def decoding_options(
    strategy: str, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> dict[str, Any]:
    """The options `next_token` needs for one of `STRATEGIES`,
    checked (top-k 50, top-p 0.9 by default).

    Args:
        strategy: `"greedy"`, `"temperature"`, `"top-k"` or `"top-p"`.
        temperature: what the logits are divided by before sampling.
        top_k: how many of the likeliest tokens to keep; None: 50 for `"top-k"`, else no cut.
        top_p: the probability the kept tokens must reach; None: 0.9 for `"top-p"`, else no cut.

    Raises:
        DecodingError: if `strategy` is not one of `STRATEGIES`.
        CourseError: if a setting is out of range (see `check_decoding`).
    """
    if strategy not in STRATEGIES:
        raise DecodingError(
            f"unknown decoding strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}"
        )
    top_k = 50 if strategy == "top-k" and top_k is None else top_k
    top_p = 0.9 if strategy == "top-p" and top_p is None else top_p
    check_decoding(temperature, top_k, top_p)
    return {"strategy": strategy, "temperature": temperature, "top_k": top_k, "top_p": top_p}


# --8<-- [start:generate]
@torch.no_grad()
def generate(
    model: GPT2,
    input_ids: torch.Tensor,
    max_new_tokens: int = 20,
    strategy: str = "greedy",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """`(B, T + new)` token ids: the prompt, then up to `max_new_tokens` chosen one at a time.

    With the KV cache each step feeds only the newest token and reuses the keys and values of
    all earlier positions; without it each step reruns the whole sequence (same tokens, more
    work). A row that has produced `eos_token_id` continues with it until every row has.

    Args:
        model: the course's GPT-2 language model; put in eval mode.
        input_ids: the prompts, `(B, T)` with `T >= 1`.
        max_new_tokens: the most tokens to add.
        strategy: one of `STRATEGIES`.
        temperature: what the logits are divided by before sampling.
        top_k: as in `decoding_options`.
        top_p: as in `decoding_options`.
        generator: the random generator to sample with; None: torch's global one.
        eos_token_id: the token that ends a row; None: every row gets `max_new_tokens` tokens.
        use_cache: use the KV cache.

    Raises:
        DecodingError: if `input_ids` is not `(B, T)` with `T >= 1`, or the prompt and the new
            tokens do not fit the model's context.
    """
    options = decoding_options(strategy, temperature, top_k, top_p)
    check_int("max_new_tokens", max_new_tokens)
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise DecodingError(
            "input_ids must be (batch, length) with length "
            f">= 1, got shape {tuple(input_ids.shape)}"
        )
    if input_ids.shape[1] + max_new_tokens > model.config.n_positions:
        raise DecodingError(
            f"a prompt of {input_ids.shape[1]} tokens and {max_new_tokens} new ones do not fit "
            f"the context of {model.config.n_positions} positions"
        )
    model.eval()
    ids, past = input_ids, None
    done = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    for _ in range(max_new_tokens):
        feed = ids[:, -1:] if past is not None else ids
        output = model(feed, past_key_values=past, use_cache=use_cache)
        past = output.past_key_values
        token = next_token(output.logits[:, -1], generator=generator, **options)  # (B,)
        if eos_token_id is not None:
            token = token.masked_fill(done, eos_token_id)
            done |= token == eos_token_id
        ids = torch.cat([ids, token[:, None]], dim=1)
        if eos_token_id is not None and bool(done.all()):
            break
    return ids


# --8<-- [end:generate]


def gpt2_generation_rows(
    model: GPT2,
    tokenizer: Any,
    prompt: str = DECODING.prompt,
    max_new_tokens: int = DECODING.max_new_tokens,
    seed: int = 0,
    strategies: tuple[str, ...] = STRATEGIES,
    temperature: float = DECODING.temperature,
    top_k: int = DECODING.top_k,
    top_p: float = DECODING.top_p,
) -> list[dict[str, str]]:
    """One continuation of `prompt` per decoding strategy, and how many distinct ones 10 seeds give.

    Args:
        model: the from-scratch GPT-2.
        tokenizer: its tokenizer.
        prompt: the text continued.
        max_new_tokens: the most tokens a continuation has.
        seed: seed `seed` gives the shown continuation; seeds `seed ... seed + 9` are counted, so
            the last column shows what each strategy does to the variety of the text.
        strategies: the decoding strategies, one row each (of "greedy", "temperature",
            "top-k", "top-p").
        temperature: the sampling temperature of every strategy but greedy.
        top_k: the k of "top-k".
        top_p: the probability mass of "top-p".
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if isinstance(strategies, str) or not strategies or unknown:
        raise CourseError(
            f"strategies must be a non-empty list of {list(STRATEGIES)}, got {strategies!r}"
        )
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    settings = {
        "greedy": {},
        "temperature": {"temperature": temperature},
        "top-k": {"temperature": temperature, "top_k": top_k},
        "top-p": {"temperature": temperature, "top_p": top_p},
    }
    rows = []
    for strategy in strategies:
        options = settings[strategy]
        texts = []
        for draw in range(seed, seed + 10):
            out = generate(
                model,
                ids,
                max_new_tokens,
                strategy,
                generator=torch.Generator().manual_seed(draw),
                eos_token_id=tokenizer.eos_token_id,
                **options,
            )
            texts.append(
                tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
                .replace("\n", " ")
                .strip()
            )
        shown = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in options.items()) or "-"
        rows.append(
            {
                "strategy": strategy,
                "settings": shown,
                "continuation": texts[0] or "(end of text at once)",
                "distinct in 10 seeds": str(len(set(texts))),
            }
        )
    return rows
