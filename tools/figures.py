"""The explanatory figures of the site, drawn with matplotlib (no data, no training).

- `lora-shapes.png`: a frozen W beside the two small matrices B and A whose product is LoRA's
  update, drawn to scale for one GPT-2 projection (768 x 768) at r = 8 (r drawn wider to be seen).
- `nf4-block.png`: what NF4 keeps of one block of 64 weights: a 4-bit index per weight into 16
  levels, and one scale per block (itself quantized to 8 bits by double quantization).
- `dpo-flow.png`: where each number in the DPO loss comes from.

    python tools/figures.py                # writes docs/images/figures/*.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import bitsandbytes.functional as bnb_functional
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from peft_course.qlora import DOUBLE_QUANT_BLOCKSIZE, NF4_BLOCKSIZE, nf4_bytes

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs/images/figures"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    for name, draw in (
        ("lora-shapes", lora_shapes),
        ("nf4-block", nf4_block),
        ("dpo-flow", dpo_flow),
    ):
        draw(args.output / f"{name}.png")
        print(f"saved: {args.output / name}.png")


if __name__ == "__main__":
    main()
