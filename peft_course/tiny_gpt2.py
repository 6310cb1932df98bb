"""The embedded `tiny-gpt2`: a 2-layer, 64-dim GPT-2 and its own byte-level BPE tokenizer.

No model hub is needed: the tokenizer is trained in-process on the package's generated
corpus and the weights are drawn from GPT-2's own initialisation under a fixed seed. It has
exactly GPT-2's architecture (Conv1D projections, learned positions, tied embeddings), only
smaller, so every line of code that runs on it runs unchanged on `openai-community/gpt2`.

Its "pretraining" is a few seconds of next-token prediction on generated reviews whose
sentences share one sentiment, so its features carry sentiment the way real GPT-2's do, in
miniature. Numbers measured on it show that the code learns, not what GPT-2 small would
score. The directory is built once per seed and cached.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from peft_course.synthetic import review_corpus

TINY_GPT2 = "tiny-gpt2"
EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 1024
PRETRAIN_STEPS = 300
BLOCK_SIZE = 64
BUILD_VERSION = 3  # bump when the recipe changes so that old caches are not reused


def cache_root() -> Path:
    """Where built models live: `$PEFT_COURSE_CACHE`, else `~/.cache/peft_course`."""
    return Path(os.environ.get("PEFT_COURSE_CACHE", Path.home() / ".cache" / "peft_course"))


def tiny_gpt2_config(vocab_size: int, eos_token_id: int) -> GPT2Config:
    """GPT-2's architecture shrunk to 2 layers of width 64 (4 heads of 16)."""
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
    """Train GPT-2's kind of tokenizer (byte-level BPE) on the generated corpus."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        review_corpus(seed),
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


def pretrain(
    model: GPT2LMHeadModel, tokenizer: GPT2TokenizerFast, texts: list[str],
    steps: int = PRETRAIN_STEPS, batch_size: int = 32, seed: int = 0,
) -> list[float]:
    """Next-token prediction on `texts` cut into blocks of `BLOCK_SIZE` tokens; returns the losses.

    It runs on one CPU thread: a different thread count sums in a different order, and the
    rounding differences would make "the same seed" build different weights on different machines.
    """
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    n_blocks = len(stream) // BLOCK_SIZE
    blocks = torch.tensor(stream[: n_blocks * BLOCK_SIZE]).view(n_blocks, BLOCK_SIZE)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    model.train()
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            batch = blocks[torch.randint(n_blocks, (batch_size,), generator=generator)]
            loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return losses


def build_tiny_gpt2(directory: str | Path, seed: int = 0, pretrain_steps: int = PRETRAIN_STEPS) -> Path:
    """Write the tokenizer and the briefly pretrained weights (safetensors) to `directory`."""
    directory = Path(directory)
    tokenizer = train_tokenizer(seed)
    torch.manual_seed(seed)
    config = tiny_gpt2_config(len(tokenizer), tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config)
    pretrain(model, tokenizer, review_corpus(seed), steps=pretrain_steps, seed=seed)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_gpt2_path(seed: int = 0) -> Path:
    """The cached directory of `tiny-gpt2` for `seed`, built on first use.

    It is built in a temporary sibling directory and renamed into place, so a crash or a
    concurrent build never leaves a half-written model behind.
    """
    target = cache_root() / f"tiny-gpt2-v{BUILD_VERSION}-seed{seed}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build_tiny_gpt2(scratch, seed)
        try:
            scratch.rename(target)
        except OSError:  # another process finished first: keep its copy
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
