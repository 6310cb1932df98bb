"""The embedded `tiny-gpt2`: a 2-layer, 64-dim GPT-2 and its own byte-level BPE tokenizer.

No model hub is needed: the tokenizer is trained in-process on the package's generated
corpus and the weights are drawn from GPT-2's own initialisation under a fixed seed. It has
exactly GPT-2's architecture (Conv1D projections, learned positions, tied embeddings), only
smaller, so every line of code that runs on it runs unchanged on `openai-community/gpt2`.

Its "pretraining" is half a minute of next-token prediction on generated text
(`peft_course.synthetic.pretraining_corpus`): reviews closed by a verdict, instruction-style
documents (an instruction, `Text: ...`, a cue such as `Sentiment:`, an answer) and short
annotated phrases. Like web text for real GPT-2, it gives the model features that carry
sentiment to the end of a text, the words of a classification instruction, and the habit of
answering after a cue - sometimes with the bare label word, sometimes in other words. Each
document is one training row starting at position 0, as a prompt does later, and rows are as
long as the longest prompt the course writes, so every position a prompt uses was trained.
Numbers measured on it show that the code learns, not what GPT-2 small would score. The
directory is built once per seed and cached.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2TokenizerFast

from peft_course.files import build_directory_once
from peft_course.settings import EMBEDDED_MODEL
from peft_course.synthetic import pretraining_corpus

if TYPE_CHECKING:  # the modelling code is imported when a model is built: it takes seconds
    from transformers import PreTrainedModel

TINY_GPT2 = EMBEDDED_MODEL
EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 1024
PRETRAIN_STEPS = 450
MAX_TOKENS = 128  # longest training row: the longest template prompt with a review is about 100
BUILD_VERSION = 4  # bump when the recipe changes so that old caches are not reused


def cache_root() -> Path:
    """Where built models live: `$PEFT_COURSE_CACHE`, else `~/.cache/peft_course`."""
    return Path(os.environ.get("PEFT_COURSE_CACHE", Path.home() / ".cache" / "peft_course"))


def tiny_gpt2_config(vocab_size: int, eos_token_id: int) -> GPT2Config:
    """GPT-2's architecture shrunk to 2 layers of width 64 (4 heads of 16).

    Args:
        vocab_size: the tokenizer's vocabulary size.
        eos_token_id: the end-of-text token, also used as the beginning and padding token.
    """
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=512,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )


def train_tokenizer(seed: int = 0, vocab_size: int = VOCAB_SIZE) -> GPT2TokenizerFast:
    """Train GPT-2's kind of tokenizer (byte-level BPE) on the generated corpus.

    Args:
        seed: which generated corpus (`pretraining_corpus(seed)`) it is trained on.
        vocab_size: the number of tokens in the vocabulary, `<|endoftext|>` included.
    """
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        pretraining_corpus(seed),
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        show_progress=False,
    )
    return GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=512,
    )


def length_grouped_batches(
    lengths: list[int], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """Row indices in batches of similar length, in random order (one pass over the rows).

    Rows are shuffled, cut into groups of 50 batches, sorted by length within a group and dealt
    into batches, so a batch pads little; the batches are then shuffled again.

    Args:
        lengths: the length (in tokens) of every row.
        batch_size: rows a batch; the last batch of a group may hold fewer.
        generator: draws both shuffles, so the same generator state gives the same batches.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    group = 50 * batch_size
    batches = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start : start + group], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def pretrain(
    model: PreTrainedModel,
    tokenizer: GPT2TokenizerFast,
    texts: list[str],
    steps: int = PRETRAIN_STEPS,
    batch_size: int = 32,
    seed: int = 0,
) -> list[float]:
    """Next-token prediction on `texts`, one document a row (cut to `MAX_TOKENS`);
    returns the losses.

    Rows are padded to the longest in their batch and the padding is masked out of attention
    and loss. It runs on one CPU thread, so that the thread count (which changes the order of
    sums) does not change the weights: a machine builds the same model whatever its core count.
    A CPU with other vector instructions (AVX2 against AVX-512) still rounds differently and
    builds slightly different weights; `benchmarks/cpu_spread.py` measures what that does to
    the course's figures.

    Args:
        model: the causal language model to train (in place, with AdamW); left in eval mode.
        tokenizer: the tokenizer whose end-of-text token closes and pads every row.
        texts: the documents, one training row each.
        steps: the number of optimizer steps; the rows are gone through as often as that needs.
        batch_size: rows a step.
        seed: seeds the batch order.

    Returns:
        The training loss of every step, in order.
    """
    eos = tokenizer.eos_token_id
    rows = [ids[: MAX_TOKENS - 1] + [eos] for ids in tokenizer(texts)["input_ids"]]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    model.train()
    losses: list[float] = []
    batches: list[list[int]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            if not batches:
                batches = length_grouped_batches([len(r) for r in rows], batch_size, generator)
            batch = [rows[i] for i in batches.pop()]
            width = max(len(r) for r in batch)
            ids = torch.tensor([r + [eos] * (width - len(r)) for r in batch])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch])
            loss = model(
                input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)
            ).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return losses


def build_tiny_model(
    directory: str | Path,
    make_model: Callable[[int, int], PreTrainedModel],
    seed: int = 0,
    pretrain_steps: int = PRETRAIN_STEPS,
) -> Path:
    """Train the tokenizer, build `make_model(vocab_size, eos_id)` under `seed`, pretrain it, and
    write both (safetensors) to `directory`: the recipe tiny-gpt2 and tiny-llama share.

    Args:
        directory: where the checkpoint is written.
        make_model: builds the untrained model from the vocabulary size and the end-of-text id.
        seed: seeds the tokenizer's corpus, the initial weights and the pretraining order.
        pretrain_steps: the optimizer steps of pretraining.

    Returns:
        `directory`, as a `Path`.
    """
    directory = Path(directory)
    tokenizer = train_tokenizer(seed)
    torch.manual_seed(seed)
    model = make_model(len(tokenizer), tokenizer.eos_token_id)
    pretrain(model, tokenizer, pretraining_corpus(seed), steps=pretrain_steps, seed=seed)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_gpt2(
    directory: str | Path, seed: int = 0, pretrain_steps: int = PRETRAIN_STEPS
) -> Path:
    """Write the tokenizer and the briefly pretrained weights (safetensors) to `directory`.

    Args:
        directory: where the checkpoint is written.
        seed: seeds the tokenizer's corpus, the initial weights and the pretraining order.
        pretrain_steps: the optimizer steps of pretraining.

    Returns:
        `directory`, as a `Path`.
    """
    from transformers import GPT2LMHeadModel

    return build_tiny_model(
        directory,
        lambda vocab, eos: GPT2LMHeadModel(tiny_gpt2_config(vocab, eos)),
        seed,
        pretrain_steps,
    )


def tiny_gpt2_path(seed: int = 0) -> Path:
    """The cached directory of `tiny-gpt2` for `seed`, built on first use (about 20 s).

    Args:
        seed: the build's seed; each seed is its own model and cache directory.
    """
    target = cache_root() / f"tiny-gpt2-v{BUILD_VERSION}-seed{seed}"
    return build_directory_once(target, lambda scratch: build_tiny_gpt2(scratch, seed))
