"""Exercise: the PEFT family by hand — (IA)³'s scales, DoRA's magnitude and direction, and
prompt tuning's virtual tokens.

(IA)³ learns one vector `l` per adapted layer and multiplies it into the activations: the
layer's output (`l * (W0 x + b)`, one scale per output) or, for the MLP's down projection, its
input (`W0 (l * x) + b`, one scale per input).

DoRA writes each weight as a magnitude times a direction, per output: with LoRA's update inside
the direction, `W' = m * V / ||V||`, `V = W0 + scaling * B A`, the norm taken over each output's
weights (a row of the `(out, in)` matrix).

Prompt tuning learns `n_virtual` input embeddings that go before the text of every row; the
attention mask grows with them.

Careful with GPT-2: its projections are `transformers.pytorch_utils.Conv1D`, which stores its
weight as `(in_features, out_features)` and computes `x @ W + b`, the transpose of `nn.Linear`
(`(out, in)`, `x @ W.T + b`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


def ia3_forward(
    x: torch.Tensor, base: nn.Module, scale: torch.Tensor, feedforward: bool
) -> torch.Tensor:
    """Return the (IA)³ layer's output for a batch `x` of shape `(..., in_features)`.

    `base` is a frozen `nn.Linear` or `Conv1D` and `scale` the learned vector `l`. An ordinary
    target scales its output, bias included: `l * base(x)`, `l` of length `out_features`. A
    feed-forward target (the MLP's down projection) scales its input instead: `base(l * x)`, `l`
    of length `in_features`. The gradient of the output reaches `scale`.
    """
    if feedforward:
        return base(x * scale)
    return base(x) * scale


def ia3_merged(
    base: nn.Module, scale: torch.Tensor, feedforward: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return `(weight, bias)` with the scale folded in, laid out like `base.weight` and
    `base.bias`, so that a plain layer holding them computes what `ia3_forward` does.

    An output scale multiplies each output's weights and its bias; an input scale multiplies each
    input's weights and leaves the bias as it is. `nn.Linear` stores `(out, in)`, `Conv1D`
    `(in, out)`. Both are new tensors (`base` is left unchanged); `bias` is None when `base` has
    none.
    """
    weight, bias = base.weight.detach(), base.bias
    scales_outputs = not feedforward
    along_rows = scales_outputs != isinstance(base, Conv1D)  # Linear's rows are its outputs
    weight = weight * (scale[:, None] if along_rows else scale[None, :])
    if bias is not None:
        bias = bias.detach() * scale if scales_outputs else bias.detach().clone()
    return weight, bias


def dora_magnitude(base: nn.Module) -> torch.Tensor:
    """Return DoRA's starting magnitude: the length of each output's weights, `(out_features,)`.

    Output `o`'s weights are row `o` of the `(out, in)` matrix: `m_o = ||W0[o, :]||`, so that
    `m * W0 / ||W0||` is `W0` again. `Conv1D` stores `(in, out)`. A new tensor, detached from
    `base.weight`.
    """
    weight = base.weight.detach()
    if isinstance(base, Conv1D):
        weight = weight.T  # now (out, in)
    return torch.linalg.norm(weight, dim=1)


def dora_forward(
    x: torch.Tensor,
    base: nn.Module,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    magnitude: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Return DoRA's output for a batch `x` of shape `(..., in_features)`:
    `b + (m / ||V||) * (W0 x + scaling * B A x)`, `V = W0 + scaling * B A`.

    `lora_A` is `(r, in_features)`, `lora_B` `(out_features, r)`, `magnitude` `(out_features,)`;
    `||V||` is the length of each output's row of `V`, as in `dora_magnitude`. The bias `b` is
    not scaled. The norm counts as a constant for the gradient (detached, as peft does, after the
    DoRA paper's section 4.3): the gradients reaching `lora_A`, `lora_B` and `magnitude` are those
    of the formula with `||V||` held fixed.
    """
    frozen = base.weight.T if isinstance(base, Conv1D) else base.weight  # (out, in)
    direction = frozen + scaling * (lora_B @ lora_A)
    norm = torch.linalg.norm(direction, dim=1).detach()
    update = scaling * (x @ lora_A.T @ lora_B.T)
    result = (magnitude / norm) * (x @ frozen.T + update)
    return result if base.bias is None else result + base.bias


def prepend_virtual_tokens(
    inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, prompt: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Put the learned virtual tokens before the text of every row and extend the mask.

    `inputs_embeds` is `(batch, length, d)`: the text's token embeddings; `attention_mask` is
    `(batch, length)`: 1 at real tokens, 0 at padding (on either side); `prompt` is
    `(n_virtual, d)`: the learned embeddings. Return the `(batch, n_virtual + length, d)`
    embeddings in `inputs_embeds`' dtype (a float32 prompt joins bfloat16 text as bfloat16), the
    same prompt first in every row, and the `(batch, n_virtual + length)` mask
    with 1 at every virtual token and the text's mask after it, in the mask's dtype. The gradient
    of the result reaches `prompt`.
    """
    batch = inputs_embeds.shape[0]
    virtual = prompt.to(inputs_embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
    ones = attention_mask.new_ones(batch, prompt.shape[0])
    return torch.cat([virtual, inputs_embeds], dim=1), torch.cat([ones, attention_mask], dim=1)
