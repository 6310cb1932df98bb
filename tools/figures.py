"""The explanatory figures of the site, drawn with matplotlib (no data, no training).

- `lora-shapes.png`: a frozen W beside the two small matrices B and A whose product is LoRA's
  update, drawn to scale for one GPT-2 projection (768 x 768) at r = 8 (r drawn wider to be seen).
- `nf4-block.png`: what NF4 keeps of one block of 64 weights: a 4-bit index per weight into 16
  levels, and one scale per block (itself quantized to 8 bits by double quantization).
- `dpo-flow.png`: where each number in the DPO loss comes from.
- `gpt2-block.png`: GPT-2 as an embedding, `n_layer` pre-norm residual blocks and a tied head.
- `causal-mask.png`: what each position may attend to, from `peft_course.gpt2.attention_mask`,
  without and with a padded row.
- `instruct-labels.png`: one generated instruction example as the embedded tiny-gpt2's tokens,
  encoded by `peft_course.instruct.encode`: which positions are labels and which are -100.

And two pictures of stored results (a committed results page; nothing is trained again):

- `demo-accuracy.png`: the demo table's test accuracy against trainable parameters (log scale),
  from docs/results/demo.md.
- `real-topics-confusion.png`: LoRA's confusion matrix on the 20 financial-news topics, from the
  table in docs/results/real-topics.md.

    python tools/figures.py                # writes docs/images/figures/*.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import bitsandbytes.functional as bnb_functional
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from peft_course.gpt2 import attention_mask
from peft_course.instruct import Example, encode
from peft_course.models import load_tokenizer
from peft_course.plots import plot_confusion
from peft_course.qlora import DOUBLE_QUANT_BLOCKSIZE, NF4_BLOCKSIZE, nf4_bytes
from peft_course.tables import read_markdown_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"

FROZEN, TRAINED, INK = "#c5cae9", "#ffcc80", "#263238"
# The 16 NF4 levels (QLoRA, Dettmers et al. 2023): quantiles of a standard normal, scaled to
# [-1, 1], with an exact zero; read from bitsandbytes, which stores them.
NF4_LEVELS = tuple(float(v) for v in bnb_functional.get_4bit_type("nf4", device="cpu"))


def matrix(ax, x: float, y: float, width: float, height: float, colour: str, label: str) -> None:
    ax.add_patch(Rectangle((x, y), width, height, facecolor=colour, edgecolor=INK, linewidth=1.2))
    ax.text(x + width / 2, y + height / 2, label, ha="center", va="center", fontsize=11, color=INK)


def lora_shapes(path: Path) -> None:
    """W (d x k, frozen) and B (d x r) @ A (r x k), trained; B starts at zero."""
    d = k = 768
    r_drawn = 60  # r = 8 would be a hairline at this scale
    scale = 2.4 / d
    side, thin = k * scale, r_drawn * scale
    fig, ax = plt.subplots(figsize=(9, 3.8))
    matrix(ax, 0, 0, side, side, FROZEN, "W\n768 × 768\nfrozen\n589,824 weights")
    ax.text(side + 0.3, side / 2, "+", fontsize=22, ha="center", va="center")
    bx = side + 0.6
    matrix(ax, bx, 0, thin, side, TRAINED, "")
    ax.text(bx + thin / 2, -0.12, "B: 768 × r\nstarts at 0", ha="center", va="top", fontsize=10)
    ax_x = bx + thin + 0.3
    matrix(ax, ax_x, side - thin, side, thin, TRAINED, "")
    ax.text(
        ax_x + side / 2, side - thin - 0.1, "A: r × 768, random", ha="center", va="top", fontsize=10
    )
    ax.text(
        ax_x + side / 2,
        side / 3,
        "h = W x + (α / r) · B A x\n\nat r = 8, B and A hold\n"
        "768·8 + 8·768 = 12,288 weights\n(2.1% of W)",
        ha="center",
        va="center",
        fontsize=10,
        color=INK,
    )
    ax.set_xlim(-0.1, ax_x + side + 0.1)
    ax.set_ylim(-0.7, side + 0.1)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def nf4_block(path: Path, seed: int = 0) -> None:
    """One block of 64 normal weights, each snapped to its NF4 level times the block's absmax."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.02, NF4_BLOCKSIZE)
    absmax = np.abs(weights).max()
    levels = np.array(NF4_LEVELS)
    index = np.abs(weights[:, None] / absmax - levels[None, :]).argmin(1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 4.6), height_ratios=(3, 1))
    for level in levels * absmax:
        top.axhline(level, color=FROZEN, linewidth=0.8, zorder=0)
    positions = np.arange(NF4_BLOCKSIZE)
    top.scatter(positions, weights, s=14, color=INK, label="the weight (bf16 / fp32)", zorder=2)
    top.scatter(
        positions,
        levels[index] * absmax,
        s=18,
        marker="_",
        color="#e65100",
        label="what NF4 gives back: level[index] × absmax",
        zorder=3,
    )
    top.set_xlabel(f"the {NF4_BLOCKSIZE} weights of one block")
    top.set_ylabel("value")
    top.set_title("16 levels (grey lines) placed where normally distributed weights are dense")
    top.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False, fontsize=9)
    superblock = NF4_BLOCKSIZE * DOUBLE_QUANT_BLOCKSIZE
    single, double = nf4_bytes(superblock, False), nf4_bytes(superblock, True)
    per_weight = [8 * single / superblock, 8 * double / superblock]
    bottom.barh([1, 0], [4, 4], color=TRAINED, edgecolor=INK)
    bottom.barh([1, 0], [b - 4 for b in per_weight], left=4, color=FROZEN, edgecolor=INK)
    bottom.set_yticks([1, 0], ["fp32 absmax per block", "double quantization"])
    for y, bits in zip([1, 0], per_weight):
        bottom.text(bits + 0.05, y, f"{bits:.3f} bits per weight", va="center", fontsize=9)
    bottom.set_xlim(0, 5.2)
    bottom.set_xlabel("bits per weight: the 4-bit index (orange) and the block's scale (blue)")
    fig.tight_layout()
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def box(ax, x: float, y: float, text: str, colour: str = "white") -> None:
    ax.text(
        x,
        y,
        text,
        ha="center",
        va="center",
        fontsize=10,
        color=INK,
        bbox={"boxstyle": "round,pad=0.5", "facecolor": colour, "edgecolor": INK},
    )


def arrow(ax, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate(
        "", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": INK, "linewidth": 1.0}
    )


def dpo_flow(path: Path) -> None:
    """A preference pair through the policy and the frozen reference, into the loss."""
    fig, ax = plt.subplots(figsize=(11, 5))
    box(ax, 0.9, 3.0, "prompt x\nchosen y_w\nrejected y_l")
    box(ax, 4.0, 4.2, "policy π_θ\n(trained: LoRA or full)", TRAINED)
    box(ax, 4.0, 1.8, "reference π_ref\n(frozen copy)", FROZEN)
    box(ax, 7.6, 4.2, "log π_θ(y_w | x), log π_θ(y_l | x)\nsums over each completion's tokens")
    box(ax, 7.6, 1.8, "log π_ref(y_w | x), log π_ref(y_l | x)\n(no gradient)")
    box(
        ax,
        7.6,
        0.0,
        "margin m = [log π_θ(y_w) − log π_ref(y_w)]\n         − [log π_θ(y_l) − log π_ref(y_l)]",
    )
    box(ax, 11.6, 0.0, "loss = −log σ(β m)\nβ = 0.1", TRAINED)
    arrow(ax, (1.7, 3.3), (2.9, 4.0))
    arrow(ax, (1.7, 2.7), (2.9, 2.0))
    arrow(ax, (5.2, 4.2), (5.6, 4.2))
    arrow(ax, (5.0, 1.8), (5.6, 1.8))
    arrow(ax, (9.75, 3.75), (9.4, 0.5))  # past the reference's box, into the margin
    arrow(ax, (7.6, 1.35), (7.6, 0.5))
    arrow(ax, (10.3, 0.0), (10.6, 0.0))
    ax.text(
        11.6,
        2.6,
        "its gradient raises log π_θ(y_w)\nand lowers log π_θ(y_l),\nweighted by "
        "σ(−β m): most\nwhere π_θ still prefers y_l",
        ha="center",
        va="center",
        fontsize=9,
        color="#e65100",
    )
    ax.set_xlim(-0.2, 13.0)
    ax.set_ylim(-0.8, 5.0)
    ax.axis("off")
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def gpt2_block(path: Path) -> None:
    """Token and position embeddings, n_layer pre-norm residual blocks, ln_f, the tied LM head."""
    fig, ax = plt.subplots(figsize=(7.5, 8.2))
    box(ax, 2.0, 0.0, "token ids  (T)")
    box(ax, 2.0, 1.1, "wte (V × C) + wpe (positions × C)\n→ x: T × C", FROZEN)
    arrow(ax, (2.0, 0.3), (2.0, 0.75))
    ax.add_patch(Rectangle((-0.6, 2.0), 5.2, 5.55, facecolor="none", edgecolor=INK, linestyle="--"))
    ax.text(4.45, 2.15, "× n_layer", ha="right", va="top", fontsize=11, color=INK)
    box(ax, 2.0, 2.5, "ln_1")
    box(ax, 2.0, 3.5, "causal self-attention\nq, k, v (c_attn: C → 3C), softmax, c_proj", TRAINED)
    box(ax, 2.0, 4.6, "x ← x + attention", "white")
    box(ax, 2.0, 5.4, "ln_2")
    box(ax, 2.0, 6.4, "MLP: c_fc (C → 4C), GELU, c_proj (4C → C)")
    for start, end in ((1.45, 2.3), (2.7, 3.1), (3.9, 4.35), (4.85, 5.2), (5.6, 6.1)):
        arrow(ax, (2.0, start), (2.0, end))
    ax.text(2.0, 7.3, "x ← x + MLP", ha="center", va="center", fontsize=10, color=INK)
    arrow(ax, (2.0, 6.7), (2.0, 7.15))
    box(ax, 2.0, 8.1, "ln_f")
    arrow(ax, (2.0, 7.45), (2.0, 7.9))
    ax.text(-1.2, 5.0, "pre-norm,\nresidual", ha="center", va="center", fontsize=9, color=INK)
    box(ax, 2.0, 9.1, "LM head: x · wteᵀ  (tied: the same V × C matrix)\n→ T × V logits", FROZEN)
    arrow(ax, (2.0, 8.3), (2.0, 8.75))
    ax.annotate(
        "",
        xy=(4.3, 9.0),
        xytext=(4.3, 1.2),
        arrowprops={
            "arrowstyle": "<->",
            "color": INK,
            "linestyle": ":",
            "connectionstyle": "arc3,rad=-0.3",
        },
    )
    ax.text(5.35, 5.1, "one matrix,\nstored once", ha="center", fontsize=9, color=INK)
    ax.text(-1.2, 3.5, "LoRA's\ntargets", ha="center", va="center", fontsize=9, color="#e65100")
    ax.set_xlim(-1.9, 6.0)
    ax.set_ylim(9.7, -0.5)
    ax.axis("off")
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def causal_mask(path: Path) -> None:
    """`attention_mask` for 6 positions: causal alone, and with the row's first two padded."""
    plain = attention_mask(None, 6, 6)[0, 0]
    padded = attention_mask(torch.tensor([[0, 0, 1, 1, 1, 1]]), 6, 6)[0, 0]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.0))
    for ax, mask, title in (
        (axes[0], plain, "causal: query i sees keys j ≤ i"),
        (axes[1], padded, "with keys 0 and 1 padding (left-padded row)"),
    ):
        ax.imshow(mask.int().numpy(), cmap=matplotlib.colors.ListedColormap(["#eceff1", "#3949ab"]))
        for i in range(6):
            for j in range(6):
                allowed = bool(mask[i, j])
                ax.text(j, i, "✓" if allowed else "·", ha="center", va="center", fontsize=12,
                        color="white" if allowed else "#90a4ae")  # fmt: skip
        ax.set_xticks(range(6))
        ax.set_yticks(range(6))
        ax.set(xlabel="key position j", ylabel="query position i", title=title)
        ax.title.set_fontsize(10)
    fig.tight_layout()
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def instruct_labels(path: Path) -> None:
    """One example's tokens, as tiny-gpt2 splits them: grey where the label is -100, orange where
    the loss trains (the response and its end-of-text)."""
    tokenizer = load_tokenizer("tiny-gpt2")
    example = Example("Sort these numbers from smallest to largest.", "7 2 5", "2 5 7")
    encoded = encode(example, tokenizer, max_length=64)
    pieces = [tokenizer.decode([i]) for i in encoded["input_ids"]]
    per_row, width = 11, 1.0
    rows = (len(pieces) + per_row - 1) // per_row
    fig, ax = plt.subplots(figsize=(11, 0.9 * rows + 1.2))
    for n, (piece, label) in enumerate(zip(pieces, encoded["labels"])):
        x, y = (n % per_row) * width, -(n // per_row) * 0.9
        trained = label != -100
        shown = piece.replace("\n", "\\n").replace(" ", "␣")
        ax.add_patch(
            Rectangle((x, y), width * 0.95, 0.6, facecolor=TRAINED if trained else "#eceff1",
                      edgecolor=INK, linewidth=0.8)
        )  # fmt: skip
        size = 9 if len(shown) < 8 else 6
        ax.text(x + 0.475, y + 0.38, shown, ha="center", va="center", fontsize=size, color=INK)
        ax.text(x + 0.475, y + 0.12, str(label) if trained else "-100", ha="center", va="center",
                fontsize=7, color=INK if trained else "#78909c")  # fmt: skip
    ax.add_patch(Rectangle((0, 1.0), 0.5, 0.35, facecolor="#eceff1", edgecolor=INK))
    ax.text(0.6, 1.17, "prompt: label -100, ignored by the loss", va="center", fontsize=10)
    ax.add_patch(Rectangle((5.5, 1.0), 0.5, 0.35, facecolor=TRAINED, edgecolor=INK))
    ax.text(6.1, 1.17, "response and end-of-text: label = the token's id", va="center", fontsize=10)
    ax.set_xlim(-0.1, per_row * width)
    ax.set_ylim(-(rows - 1) * 0.9 - 0.1, 1.5)
    ax.axis("off")
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def demo_accuracy(path: Path) -> None:
    """The demo table's test accuracy against trainable parameters, on a log scale; the
    untrained model (0 trainable) as a dashed line."""
    rows = read_markdown_table((RESULTS / "demo.md").read_text())
    points: dict[tuple[int, float], list[str]] = {}
    chance = 0.0
    for row in rows:
        count, accuracy = int(row["trainable params"].replace(",", "")), float(row["accuracy"])
        if count == 0:
            chance = accuracy
        else:
            points.setdefault((count, accuracy), []).append(row["method"])
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.axhline(chance, color="grey", linestyle="--", label=f"untrained ({chance:.2f})")
    counts = [count for count, _ in points]
    stacked: dict[int, int] = {}  # points that share a count: labels on the left, one a line
    for (count, accuracy), names in sorted(points.items(), key=lambda item: -item[0][1]):
        ax.plot(count, accuracy, "o", color="#3949ab", markersize=8)
        shared = counts.count(count) > 1
        line = stacked.get(count, 0)
        stacked[count] = line + 1
        ax.annotate(" = ".join(names), (count, accuracy), fontsize=9, color=INK,
                    xytext=(-10, 4 - 13 * line) if shared else (8, -4), textcoords="offset points",
                    ha="right" if shared else "left")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlim(50, 2e6)
    ax.set(xlabel="trainable parameters (log scale)", ylabel="test accuracy",
           title="the demo on tiny-gpt2 and synthetic-sentiment")  # fmt: skip
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def real_topics_confusion(path: Path) -> None:
    """LoRA's 20-topic confusion matrix, read back from its stored table."""
    text = (RESULTS / "real-topics.md").read_text()
    rows = read_markdown_table(text[text.index("confusion matrix") :])
    names = [row["true label"] for row in rows]
    matrix = [[int(row[name]) for name in names] for row in rows]
    plot_confusion(matrix, names, path, "LoRA on SmolLM2, 20 financial-news topics (test)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs/images/figures"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    for name, draw in (
        ("lora-shapes", lora_shapes),
        ("nf4-block", nf4_block),
        ("dpo-flow", dpo_flow),
        ("gpt2-block", gpt2_block),
        ("causal-mask", causal_mask),
        ("instruct-labels", instruct_labels),
        ("demo-accuracy", demo_accuracy),
        ("real-topics-confusion", real_topics_confusion),
    ):
        draw(args.output / f"{name}.png")
        print(f"saved: {args.output / name}.png")


if __name__ == "__main__":
    main()
