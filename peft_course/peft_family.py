"""The PEFT family: every method the course trains beside LoRA, each one `prepare` function.

A parameter-efficient method decides what trains before the one training loop runs, as
`peft_course.methods` does for the head, LoRA and full fine-tuning. The family, by what it
changes:

* **selective**: train a subset of the weights there already are: BitFit (every bias,
  `prepare_bitfit`), LN-tuning (the LayerNorms, `prepare_ln_tuning`);
* **additive**: add small modules: bottleneck adapters after attention and the MLP (Houlsby,
  `prepare_houlsby`) or after the MLP alone (Pfeiffer, `prepare_pfeiffer`), written by hand
  (AdapterHub's `adapters` 1.3 pins transformers 4.57 and does not import beside transformers
  5), and (IA)³'s learned scales (`prepare_ia3`);
* **soft prompts**: learn virtual tokens before the text: prompt tuning (`prepare_prompt_tuning`),
  prefix tuning's keys and values in every layer (`prepare_prefix_tuning`), P-tuning's
  MLP-made tokens (`prepare_p_tuning`);
* **reparametrised**: a low-rank update of the weights: rsLoRA, DoRA, PiSSA, OLoRA, VeRA,
  AdaLoRA, LoRA+ (an optimizer), LoHa, LoKr, OFT and BOFT.

Every method trains the classification head too (peft's `task_type=SEQ_CLS` saves a trained copy
of it): without it the head stays at its random start. A method that cannot adapt a model's
layers is refused in one line that says why (`refuse_conv1d`): LoHa, LoKr, OFT, BOFT and OLoRA do
not handle GPT-2's `Conv1D` in peft 0.21; they run on Llama's `nn.Linear`. `PEFT_TUNER_SUPPORT`
records which of peft's tuner types wrap tiny-gpt2 and tiny-llama, and a test regenerates it.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from peft import (
    AdaLoraConfig,
    BOFTConfig,
    IA3Config,
    LNTuningConfig,
    LoHaConfig,
    LoKrConfig,
    OFTConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    PromptTuningInit,
    TaskType,
    VeraConfig,
    get_peft_model,
)
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn
from transformers.pytorch_utils import Conv1D

from peft_course.counting import add_adapters, bitfit
from peft_course.errors import CourseError
from peft_course.lora import matches
from peft_course.methods import head_parameter_names, prepare_lora
from peft_course.settings import LORA


def _model_type(model: nn.Module) -> str:
    """`config.model_type` of a transformers model (`gpt2`, `llama`), or "" without one."""
    return getattr(getattr(model, "config", None), "model_type", "") or ""


def _peft(model: nn.Module, config: Any, method: str) -> nn.Module:
    """`get_peft_model(model, config)`, quiet about GPT-2's Conv1D, its errors in one line."""
    try:
        with (
            warnings.catch_warnings()
        ):  # peft switches Conv1D targets to fan_in_fan_out, and says so
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message="Unsupported layer type")  # LN-tuning's norms
            warnings.filterwarnings("ignore", message="Failed to load the CUDA extension")  # BOFT
            warnings.filterwarnings("ignore", message="Setting boft_n_butterfly_factor")
            return get_peft_model(model, config)
    except (ValueError, TypeError) as error:
        raise CourseError(f"cannot apply {method}: {str(error).splitlines()[0]}") from error


def _targets(targets: Sequence[str] | None) -> list[str] | None:
    return list(targets) if targets is not None else None


def _train_head(model: nn.Module) -> nn.Module:
    """Unfreeze the classification head (every parameter outside the backbone)."""
    head = set(head_parameter_names(model))
    for name, parameter in model.named_parameters():
        if name in head:
            parameter.requires_grad = True
    return model


# ---------------------------------------------------------------------------------------------
# Selective: weights the model already has
# ---------------------------------------------------------------------------------------------


# --8<-- [start:bitfit]
def prepare_bitfit(model: nn.Module) -> nn.Module:
    """BitFit: train every bias (projections and LayerNorms) and the head; freeze the rest.

    No library is needed: a bias is a parameter whose name ends in `bias`
    (`peft_course.counting.bitfit`). On GPT-2 small that is 11 biases of width 768 per block and
    the final LayerNorm's, 102,144 parameters, plus the head's 1,536.

    Args:
        model: a transformers classifier, changed in place.
    """
    return bitfit(model, train_head=True)


# --8<-- [end:bitfit]


def prepare_ln_tuning(model: nn.Module, targets: Sequence[str] | None = None) -> nn.Module:
    """LN-tuning (peft): train a copy of every LayerNorm (scale and bias) and the head.

    Args:
        model: a transformers classifier.
        targets: the norm layers; None: peft's default (`ln_1`, `ln_2`, `ln_f` on GPT-2).
    """
    config = LNTuningConfig(task_type=TaskType.SEQ_CLS, target_modules=_targets(targets))
    return _peft(model, config, "LN-tuning")


# ---------------------------------------------------------------------------------------------
# Additive: bottleneck adapters (by hand) and (IA)^3
# ---------------------------------------------------------------------------------------------

# per architecture: the output projections of attention and of the MLP
ADAPTER_PLACES = {
    "gpt2": {"attention": "attn.c_proj", "mlp": "mlp.c_proj"},
    "llama": {"attention": "self_attn.o_proj", "mlp": "mlp.down_proj"},
}


def adapter_targets(model: nn.Module, places: Sequence[str]) -> list[str]:
    """The modules an adapter follows: each block's output projection of `places`.

    Args:
        model: a GPT-2 or Llama model.
        places: `"attention"` and/or `"mlp"`.

    Raises:
        CourseError: for another architecture (name the modules with `targets`).
    """
    kind = _model_type(model)
    if kind not in ADAPTER_PLACES:
        raise CourseError(
            f"no default adapter places for a {kind or type(model).__name__} model: name the "
            f"modules an adapter follows with targets (known: {', '.join(ADAPTER_PLACES)})"
        )
    return [ADAPTER_PLACES[kind][place] for place in places]


def prepare_adapters(
    model: nn.Module, places: Sequence[str], r: int = LORA.r, targets: Sequence[str] | None = None
) -> nn.Module:
    """Bottleneck adapters `x + up(relu(down(x)))` after the chosen projections, and the head.

    The adapters are the counting chapter's (`peft_course.counting.Adapter`): the up-projection
    starts at zero, so the model starts out as the base model; `r` is the bottleneck width.

    Args:
        model: a transformers classifier, changed in place.
        places: where, if `targets` is None: `"attention"` and/or `"mlp"`.
        r: the bottleneck width.
        targets: module names or endings an adapter follows, instead of `places`.
    """
    chosen = list(targets) if targets is not None else adapter_targets(model, places)
    return _train_head(add_adapters(model, chosen, r))


def prepare_houlsby(
    model: nn.Module, r: int = LORA.r, targets: Sequence[str] | None = None
) -> nn.Module:
    """Houlsby adapters: one after each block's attention output and one after its MLP.

    Args:
        model: a GPT-2 or Llama classifier, changed in place.
        r: the bottleneck width.
        targets: module names or endings an adapter follows (default: `attn.c_proj` and
            `mlp.c_proj` on GPT-2, `self_attn.o_proj` and `mlp.down_proj` on Llama).
    """
    return prepare_adapters(model, ("attention", "mlp"), r, targets)


def prepare_pfeiffer(
    model: nn.Module, r: int = LORA.r, targets: Sequence[str] | None = None
) -> nn.Module:
    """Pfeiffer adapters: one after each block's MLP only (half of Houlsby's).

    Args:
        model: a GPT-2 or Llama classifier, changed in place.
        r: the bottleneck width.
        targets: module names or endings an adapter follows (default: `mlp.c_proj` on GPT-2,
            `mlp.down_proj` on Llama).
    """
    return prepare_adapters(model, ("mlp",), r, targets)


def prepare_ia3(
    model: nn.Module,
    targets: Sequence[str] | None = None,
    feedforward: Sequence[str] | None = None,
) -> nn.Module:
    """(IA)³ (peft): learned scales on the outputs of the targets, on the input of the MLP's.

    Each targeted layer's output `W x` becomes `l * (W x)` (one scale per output), except the
    feed-forward layers, whose input is scaled: `W (l * x)`. The scales start at 1.

    Args:
        model: a transformers classifier.
        targets: the scaled layers; None: peft's default (`c_attn` and `mlp.c_proj` on GPT-2,
            `k_proj`, `v_proj` and `down_proj` on Llama).
        feedforward: the targets whose input is scaled; None: peft's default (`mlp.c_proj`,
            `down_proj`). Given with `targets`, it must be a subset of them.
    """
    config = IA3Config(
        task_type=TaskType.SEQ_CLS,
        target_modules=_targets(targets),
        feedforward_modules=_targets(feedforward),
    )
    return _peft(model, config, "(IA)³")


# ---------------------------------------------------------------------------------------------
# Soft prompts: virtual tokens before the text
# ---------------------------------------------------------------------------------------------


# --8<-- [start:last_real_token]
def score_last_real_token(model: nn.Module) -> nn.Module:
    """Make a transformers classifier read its head at the last real token of each row.

    Prompt tuning and P-tuning hand the model `inputs_embeds` (the virtual tokens, then the
    text's embeddings) instead of `input_ids`, and GPT-2's and Llama's classifiers, which find
    the last real token from the ids, then read the last *position*: a pad token in every row
    but the longest of a right-padded batch. Two hooks put it right: one remembers the
    attention mask the model is called with, the other gives the head's output at the last
    real token to the last position, where the classifier reads it.

    Args:
        model: the peft model's inner classifier (with its `score` head), changed in place.
    """
    head = model.get_submodule(head_parameter_names(model)[0].split(".")[0])  # `score`
    seen: dict[str, torch.Tensor | None] = {}

    def remember_mask(module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen["mask"] = kwargs.get("attention_mask")

    def read_last_real(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        mask = seen.get("mask")
        if mask is None or output.dim() != 3 or mask.shape[1] != output.shape[1]:
            return output  # no padding to skip
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (positions * mask.to(positions.dtype)).argmax(-1).to(output.device)
        rows = torch.arange(output.shape[0], device=output.device)
        return torch.cat([output[:, :-1], output[rows, last].unsqueeze(1)], dim=1)

    model.register_forward_pre_hook(remember_mask, with_kwargs=True)
    head.register_forward_hook(read_last_real)
    return model


# --8<-- [end:last_real_token]


def _with_prompt(model: nn.Module, config: Any, method: str) -> nn.Module:
    """peft's soft-prompt model, its head read at the last real token."""
    wrapped = _peft(model, config, method)
    score_last_real_token(wrapped.base_model)
    return wrapped


def prepare_prompt_tuning(
    model: nn.Module, virtual_tokens: int = 8, prompt_init: str = "vocab"
) -> nn.Module:
    """Prompt tuning (peft): learn `virtual_tokens` input embeddings put before the text.

    Args:
        model: a transformers classifier.
        virtual_tokens: how many embeddings are learned.
        prompt_init: `"vocab"` starts them as the embeddings of random vocabulary tokens (of
            the scale the model knows), `"random"` as standard-normal vectors.
    """
    init = {"vocab": PromptTuningInit.SAMPLE_VOCAB, "random": PromptTuningInit.RANDOM}
    if prompt_init not in init:
        raise CourseError(f"prompt_init must be one of {', '.join(init)}, got {prompt_init!r}")
    config = PromptTuningConfig(
        task_type=TaskType.SEQ_CLS,
        num_virtual_tokens=virtual_tokens,
        prompt_tuning_init=init[prompt_init],
    )
    return _with_prompt(model, config, "prompt tuning")


def prepare_p_tuning(
    model: nn.Module, virtual_tokens: int = 8, encoder_hidden: int = 128
) -> nn.Module:
    """P-tuning (peft): virtual tokens made by a small MLP from learned embeddings.

    Args:
        model: a transformers classifier.
        virtual_tokens: how many virtual tokens.
        encoder_hidden: the width of the MLP's two hidden layers.
    """
    config = PromptEncoderConfig(
        task_type=TaskType.SEQ_CLS,
        num_virtual_tokens=virtual_tokens,
        encoder_hidden_size=encoder_hidden,
    )
    return _with_prompt(model, config, "P-tuning")


def _forward_with_prefix(self: nn.Module, *args: Any, past_key_values: Any = None, **kwargs: Any):
    return type(self).forward(self, *args, cache=past_key_values, **kwargs)


def prepare_prefix_tuning(
    model: nn.Module,
    virtual_tokens: int = 8,
    encoder_hidden: int = 128,
    prefix_projection: bool = False,
) -> nn.Module:
    """Prefix tuning (peft): learned keys and values of `virtual_tokens` positions in every layer.

    peft 0.21 looks for a `past_key_values` argument in the classifier's `forward`, which
    transformers 5 renamed `cache`; the model gets a `forward` that takes the old name.

    Args:
        model: a transformers classifier, changed in place.
        virtual_tokens: how many positions of keys and values each layer gets.
        encoder_hidden: with `prefix_projection`, the width of the MLP that makes them.
        prefix_projection: make the keys and values with an MLP from a smaller embedding.
    """
    model.forward = types.MethodType(_forward_with_prefix, model)
    config = PrefixTuningConfig(
        task_type=TaskType.SEQ_CLS,
        num_virtual_tokens=virtual_tokens,
        encoder_hidden_size=encoder_hidden,
        prefix_projection=prefix_projection,
    )
    return _peft(model, config, "prefix tuning")


# ---------------------------------------------------------------------------------------------
# Reparametrised: LoRA's relatives
# ---------------------------------------------------------------------------------------------

CONV1D_REFUSED = {
    "OLoRA": "its initialiser does not transpose Conv1D weights (peft 0.21 fails with 'mat1 and "
    "mat2 shapes cannot be multiplied'; PiSSA's does)",
    "LoHa": "peft 0.21's LoHa adapts nn.Linear and convolutions, not transformers' Conv1D",
    "LoKr": "peft 0.21's LoKr adapts nn.Linear and convolutions, not transformers' Conv1D",
    "OFT": "peft 0.21's OFT adapts nn.Linear, nn.Conv2d and nn.Embedding, not transformers' Conv1D",
    "BOFT": "peft 0.21's BOFT adapts nn.Linear and nn.Conv2d, not transformers' Conv1D",
}


def refuse_conv1d(model: nn.Module, method: str, targets: Sequence[str] | None) -> None:
    """Refuse, in one line saying why, a method that cannot adapt the Conv1D layers it targets.

    Args:
        model: the model the method would adapt.
        method: a key of `CONV1D_REFUSED`.
        targets: the method's targets; None: peft's default for the architecture.

    Raises:
        CourseError: if a targeted module is a `Conv1D` (GPT-2's projections).
    """
    patterns = targets
    if patterns is None:
        patterns = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(_model_type(model), [])
    hit = [
        name
        for name, module in model.named_modules()
        if isinstance(module, Conv1D) and matches(name, patterns)
    ]
    if hit:
        raise CourseError(
            f"{method} cannot adapt GPT-2's Conv1D projections ({hit[0].rpartition('.')[2]}): "
            f"{CONV1D_REFUSED[method]}; use a Llama model (--model tiny-llama) or another method"
        )


def prepare_rslora(
    model: nn.Module,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
) -> nn.Module:
    """rsLoRA: peft's LoRA scaled by `alpha / sqrt(r)` instead of `alpha / r`, and the head.

    Args:
        model: a transformers classifier.
        r: the rank.
        alpha: the numerator of the scale.
        dropout: dropout on the LoRA path.
        targets: modules to adapt; None: peft's default (`c_attn` on GPT-2).
    """
    return prepare_lora(model, r, alpha, dropout, _targets(targets), use_rslora=True)


def prepare_dora(
    model: nn.Module,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
    use_rslora: bool = False,
) -> nn.Module:
    """DoRA (peft `use_dora`): LoRA's update for the direction, a learned magnitude per output.

    `W = m * (W0 + s B A) / ||W0 + s B A||`, the norm taken per output; `m` starts at
    `||W0||`, so the model starts out as the base model.

    Args:
        model: a transformers classifier.
        r: the rank.
        alpha: the numerator of the scale `s`.
        dropout: dropout on the LoRA path.
        targets: modules to adapt; None: peft's default (`c_attn` on GPT-2).
        use_rslora: scale by `alpha / sqrt(r)`.
    """
    return prepare_lora(
        model, r, alpha, dropout, _targets(targets), use_rslora=use_rslora, use_dora=True
    )


def prepare_pissa(
    model: nn.Module,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
) -> nn.Module:
    """PiSSA: LoRA started from the top-`r` singular vectors of each weight, the rest frozen.

    peft splits `W0 = U S V^T` into its principal part (`B A`, trained) and the residual
    (frozen in the base weight), so the model starts out as the base model but trains the
    directions that matter most.

    Args:
        model: a transformers classifier.
        r: the rank.
        alpha: the numerator of the scale.
        dropout: dropout on the LoRA path.
        targets: modules to adapt; None: peft's default (`c_attn` on GPT-2).
    """
    return prepare_lora(model, r, alpha, dropout, _targets(targets), init_lora_weights="pissa")


def prepare_olora(
    model: nn.Module,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
) -> nn.Module:
    """OLoRA: LoRA started from a QR decomposition of each weight (Llama only, see
    `CONV1D_REFUSED`).

    Args:
        model: a transformers classifier with `nn.Linear` projections.
        r: the rank.
        alpha: the numerator of the scale.
        dropout: dropout on the LoRA path.
        targets: modules to adapt; None: peft's default (`q_proj`, `v_proj` on Llama).

    Raises:
        CourseError: if a target is a GPT-2 `Conv1D`.
    """
    refuse_conv1d(model, "OLoRA", targets)
    return prepare_lora(model, r, alpha, dropout, _targets(targets), init_lora_weights="olora")


def prepare_vera(
    model: nn.Module, r: int = LORA.r, targets: Sequence[str] | None = None
) -> nn.Module:
    """VeRA (peft): frozen random `A` and `B` shared by all layers; each layer learns two vectors.

    `h = W0 x + diag(b) B diag(d) A x`: `d` (length r) and `b` (one per output) train, `b`
    starts at zero. VeRA's rank is usually far larger than LoRA's (peft's default is 256).

    Args:
        model: a transformers classifier.
        r: the rank of the shared random matrices.
        targets: modules to adapt; None: peft's default (`c_attn` on GPT-2).
    """
    config = VeraConfig(task_type=TaskType.SEQ_CLS, r=r, target_modules=_targets(targets))
    return _peft(model, config, "VeRA")


class AdaLoraAdamW(torch.optim.AdamW):
    """AdamW that reallocates AdaLoRA's rank budget after every step.

    peft's `update_and_allocate(step)` reads the gradients, so it runs after the update and
    before the loop zeroes them: inside `step`.

    Args:
        params: the parameters (or groups) to optimise.
        model: the AdaLoRA peft model.
        **kwargs: AdamW's settings.
    """

    def __init__(self, params: Any, model: nn.Module, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.adalora_model = model

    def step(self, closure: Any = None) -> Any:
        """AdamW's step, then AdaLoRA's budget for the step count."""
        loss = super().step(closure)
        first = self.param_groups[0]["params"][0]
        self.adalora_model.base_model.update_and_allocate(int(self.state[first]["step"]))
        return loss


def adalora_optimizer(model: nn.Module, config: Any, total_steps: int) -> torch.optim.Optimizer:
    """AdaLoRA's optimizer for a run of `total_steps`: 10% warm-up at full rank, then the
    budget shrinks (cubically) to `target_r` on average, held for the last 20%.

    Args:
        model: the AdaLoRA peft model.
        config: the loop's `TrainConfig` (learning rate, weight decay).
        total_steps: the optimizer steps of the run.
    """
    adalora = model.peft_config["default"]
    adalora.total_step = max(total_steps, 1)
    adalora.tinit, adalora.tfinal = total_steps // 10, total_steps // 5
    if adalora.total_step - adalora.tfinal - adalora.tinit <= 0:
        adalora.tinit = adalora.tfinal = 0
    parameters = [p for p in model.parameters() if p.requires_grad]
    return AdaLoraAdamW(
        parameters, model, lr=config.learning_rate, weight_decay=config.weight_decay
    )


def prepare_adalora(
    model: nn.Module,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
    target_r: int = 4,
) -> nn.Module:
    """AdaLoRA (peft): LoRA as `P diag(E) Q`, whose ranks are pruned to a budget while training.

    Every layer starts at rank `r`; the singular values `E` of the least important directions
    (gradient times weight, smoothed) are set to zero until the layers keep `target_r` on
    average. The budget needs the run's length, so the model brings its optimizer
    (`adalora_optimizer`, through `make_optimizer`, which the training loop calls).

    Args:
        model: a transformers classifier.
        r: every layer's starting rank (peft's `init_r`).
        alpha: the numerator of the scale.
        dropout: dropout on the LoRA path.
        targets: modules to adapt; None: peft's default (`c_attn` on GPT-2).
        target_r: the average rank left after pruning.
    """
    if target_r > r:
        raise CourseError(f"target_r ({target_r}) must be at most r ({r}): AdaLoRA only prunes")
    config = AdaLoraConfig(
        task_type=TaskType.SEQ_CLS,
        init_r=r,
        target_r=target_r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=_targets(targets),
        total_step=1000,  # a placeholder: `adalora_optimizer` sets the run's length
    )
    wrapped = _peft(model, config, "AdaLoRA")
    wrapped.make_optimizer = types.MethodType(adalora_optimizer, wrapped)
    return wrapped


def loraplus_optimizer(
    model: nn.Module, ratio: float, config: Any, total_steps: int
) -> torch.optim.Optimizer:
    """peft's LoRA+ optimizer: AdamW with B (and biases) at `ratio` times A's learning rate.

    Args:
        model: the LoRA peft model.
        ratio: B's learning rate over A's (the head's is A's).
        config: the loop's `TrainConfig` (learning rate, weight decay).
        total_steps: unused (every optimizer factory takes it).
    """
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(
        model,
        torch.optim.AdamW,
        lr=config.learning_rate,
        loraplus_lr_ratio=ratio,
        loraplus_weight_decay=config.weight_decay,
    )


def prepare_lora_plus(
    model: nn.Module,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
    loraplus_ratio: float = 16.0,
) -> nn.Module:
    """LoRA+: peft's LoRA trained with B's learning rate `loraplus_ratio` times A's.

    The model brings its optimizer (`make_optimizer`, which the training loop calls).

    Args:
        model: a transformers classifier.
        r: the rank.
        alpha: the numerator of the scale.
        dropout: dropout on the LoRA path.
        targets: modules to adapt; None: peft's default (`c_attn` on GPT-2).
        loraplus_ratio: B's learning rate over A's.
    """
    wrapped = prepare_lora(model, r, alpha, dropout, _targets(targets))

    def make_optimizer(config: Any, total_steps: int) -> torch.optim.Optimizer:
        return loraplus_optimizer(wrapped, loraplus_ratio, config, total_steps)

    wrapped.make_optimizer = make_optimizer
    return wrapped


def _prepare_linear_only(
    model: nn.Module, method: str, config_class: type, targets: Sequence[str] | None, **options: Any
) -> nn.Module:
    """`method` through peft's `config_class`, refused first on GPT-2's `Conv1D`.

    Args:
        model: a transformers classifier with `nn.Linear` projections.
        method: the method's name, for the messages.
        config_class: peft's config of the method.
        targets: modules to adapt; None: peft's default.
        **options: the config's other fields.
    """
    refuse_conv1d(model, method, targets)
    config = config_class(task_type=TaskType.SEQ_CLS, target_modules=_targets(targets), **options)
    return _peft(model, config, method)


def prepare_loha(
    model: nn.Module,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
) -> nn.Module:
    """LoHa (peft): the update as the Hadamard product of two low-rank products (Llama only).

    Args:
        model: a transformers classifier with `nn.Linear` projections.
        r: the rank of each product.
        alpha: the numerator of the scale.
        dropout: peft's `rank_dropout`.
        targets: modules to adapt; None: peft's default (`q_proj`, `v_proj` on Llama).

    Raises:
        CourseError: if a target is a GPT-2 `Conv1D`.
    """
    options = {"r": r, "alpha": alpha, "rank_dropout": dropout}
    return _prepare_linear_only(model, "LoHa", LoHaConfig, targets, **options)


def prepare_lokr(
    model: nn.Module,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
) -> nn.Module:
    """LoKr (peft): the update as a Kronecker product with a low-rank factor (Llama only).

    Args:
        model: a transformers classifier with `nn.Linear` projections.
        r: the rank of the low-rank factor.
        alpha: the numerator of the scale.
        dropout: peft's `rank_dropout`.
        targets: modules to adapt; None: peft's default (`q_proj`, `v_proj` on Llama).

    Raises:
        CourseError: if a target is a GPT-2 `Conv1D`.
    """
    options = {"r": r, "alpha": alpha, "rank_dropout": dropout}
    return _prepare_linear_only(model, "LoKr", LoKrConfig, targets, **options)


def prepare_oft(model: nn.Module, targets: Sequence[str] | None = None) -> nn.Module:
    """OFT (peft): each weight multiplied by a learned block-diagonal rotation (Llama only).

    Args:
        model: a transformers classifier with `nn.Linear` projections.
        targets: modules to adapt; None: peft's default (`q_proj`, `v_proj` on Llama).

    Raises:
        CourseError: if a target is a GPT-2 `Conv1D`.
    """
    return _prepare_linear_only(model, "OFT", OFTConfig, targets)


def prepare_boft(model: nn.Module, targets: Sequence[str] | None = None) -> nn.Module:
    """BOFT (peft): OFT's rotation as a product of sparse butterfly factors (Llama only).

    Args:
        model: a transformers classifier with `nn.Linear` projections.
        targets: modules to adapt; None: peft's default (`q_proj`, `v_proj` on Llama).

    Raises:
        CourseError: if a target is a GPT-2 `Conv1D`.
    """
    return _prepare_linear_only(model, "BOFT", BOFTConfig, targets)


# ---------------------------------------------------------------------------------------------
# Which of peft's tuner types wrap which architecture
# ---------------------------------------------------------------------------------------------

# what a type's config needs beside `task_type` to be built at all
PROBE_SETTINGS: dict[str, dict[str, Any]] = {
    "ADALORA": {"total_step": 10},
}
# peft 0.21.2 with transformers 5.24: the types whose default config, with task_type=SEQ_CLS (and
# 4 virtual tokens for the soft prompts), wraps the model, runs forward and backward (`probe_tuner`)
PEFT_TUNER_SUPPORT: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        (
            "PROMPT_TUNING",
            "P_TUNING",
            "LORA",
            "ADALORA",
            "IA3",
            "LN_TUNING",
            "VERA",
            "FROD",
            "PVERA",
            "FOURIERFT",
            "UNILORA",
            "RANDLORA",
            "HIRA",
            "OSF",
            "GRALORA",
            "TINYLORA",
            "SHADOW",
            "DEFT",
        ),
        ("gpt2", "llama"),
    ),
    # nn.Linear only: GPT-2's Conv1D is refused (BEFT has no default targets for GPT-2)
    **dict.fromkeys(
        (
            "ADAMSS",
            "BOFT",
            "BEFT",
            "LILY",
            "LOHA",
            "LOKR",
            "OFT",
            "GLORA",
            "HRA",
            "MISS",
            "DELORA",
            "PSOFT",
            "PEANUT",
            "SUPERTUNING",
        ),
        ("llama",),
    ),
    # not out of the box: task ids (multitask prompt tuning, Poly), a past_key_values argument
    # that transformers 5 calls `cache` (prefix tuning, Cartridge: `prepare_prefix_tuning` gives
    # it back), adapters to mix (X-LoRA), causal LMs only (CPT), token indices (trainable
    # tokens), Llama's old attention (adaption prompt), sizes the tiny models' 64 dims do not fit
    # (VB-LoRA, RoAd, SHiRA, C3A, WaveFT on Llama)
    **dict.fromkeys(
        (
            "MULTITASK_PROMPT_TUNING",
            "POLY",
            "PREFIX_TUNING",
            "CARTRIDGE",
            "XLORA",
            "CPT",
            "TRAINABLE_TOKENS",
            "ADAPTION_PROMPT",
            "VBLORA",
            "ROAD",
            "SHIRA",
            "C3A",
        ),
        (),
    ),
    "WAVEFT": ("gpt2",),
}


def probe_tuner(peft_type: str, model: nn.Module, inputs: dict[str, torch.Tensor]) -> bool:
    """Whether peft's tuner `peft_type`, with its default config, trains `model` on `inputs`.

    The config is `task_type=SEQ_CLS` plus `PROBE_SETTINGS` (and 4 virtual tokens for a soft
    prompt); it counts as working if peft wraps the model and a forward and backward pass run.

    Args:
        peft_type: a `peft.PeftType` name, such as `"LORA"`.
        model: a classifier; a copy of it is wrapped.
        inputs: a tokenized batch (`input_ids`, `attention_mask`).
    """
    import copy
    import inspect

    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    config_class = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    settings: dict[str, Any] = {"task_type": TaskType.SEQ_CLS, **PROBE_SETTINGS.get(peft_type, {})}
    if "num_virtual_tokens" in inspect.signature(config_class).parameters:
        settings["num_virtual_tokens"] = 4
    labels = torch.zeros(len(inputs["input_ids"]), dtype=torch.long)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped = get_peft_model(copy.deepcopy(model), config_class(**settings))
            wrapped(**inputs, labels=labels).loss.backward()
    except Exception:  # every failure counts the same: the type does not work here
        return False
    return True
