"""Data parallelism written out: one process per device, each on its own share of every batch.

`torchrun --nproc_per_node N` and `accelerate launch --num_processes N` start N copies of the
same command and tell each its place through the environment (`RANK`, `WORLD_SIZE`,
`LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`). Every copy builds the same model from the same
seed and draws the same batch order; copy `r` takes the `r`-th slice of each batch, and after
the backward pass the gradients are summed across copies, so every copy takes the same step,
the step one process would take on the whole batch. That sum is what PyTorch's
`DistributedDataParallel` does; it also overlaps it with the backward pass, which matters for
full fine-tuning of a large model and not for LoRA's few trainable weights.

With `fsdp`, each process also keeps only its shard of every parameter, gradient and optimizer
state (PyTorch's `fully_shard`, one unit per transformer block): the model no longer has to
fit on one device. Checkpoints then gather the full tensors, so they read back the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

# FSDP, DTensor and the distributed checkpoint are imported where they are used: they add about
# a second to every command's start, and only a sharded run needs them


def world_size() -> int:
    """How many processes train together (1 when not launched by torchrun or accelerate)."""
    return (
        dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
    )


def rank() -> int:
    """This process's place among them, 0 to `world_size() - 1`."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True in the one process that writes files and prints results (rank 0)."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group the launcher described, and return this process's device.

    On CUDA each process on a node takes the GPU numbered by its `LOCAL_RANK` (NCCL carries
    the gradients); on a CPU the processes talk through gloo. Outside a launch, nothing happens.

    Args:
        device: the device asked for; under a launch, a CUDA device is replaced by the process's
            own GPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    """Wait until every process gets here (rank 0 has finished writing a checkpoint, say)."""
    if dist.is_initialized():
        dist.barrier()


def total(value: float, device: torch.device) -> float:
    """`value` summed over every process (itself on one process).

    Args:
        value: this process's number.
        device: where the sum is taken: the process group's device (a GPU under NCCL).
    """
    if not dist.is_initialized():
        return value
    summed = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(summed)
    return summed.item()


def sum_gradients(
    parameters: Sequence[torch.nn.Parameter], loss: torch.Tensor, sharded: bool = False
) -> torch.Tensor:
    """Sum every trainable gradient, and this step's loss, over the processes (one collective).

    Each process scaled its loss by its share of the *global* batch before `backward`, so the
    sums are the whole batch's mean gradient and loss.

    Args:
        parameters: the trainable parameters; their `.grad` is replaced by the sum (a missing
            gradient counts as zeros).
        loss: this process's share of the step's loss.
        sharded: the model is sharded (`shard`): FSDP has already averaged the gradients,
            so only the loss is summed.

    Returns:
        The summed loss (`loss` itself on one process).
    """
    if not dist.is_initialized():
        return loss
    if sharded:
        summed = loss.detach().clone()
        dist.all_reduce(summed)
        return summed
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).to(grads[0].dtype)])
    dist.all_reduce(flat)
    offset = 0
    for parameter, grad in zip(parameters, grads):
        parameter.grad = flat[offset : offset + grad.numel()].view_as(grad).to(grad.dtype)
        offset += grad.numel()
    return flat[-1]


class ShardedBatches(Sampler[list[int]]):
    """This process's slice of every batch that `batches` yields (all of it on one process).

    Every process iterates the same seeded `batches`, of the *global* batch size, and keeps
    slice `rank` of `world` contiguous, near-equal slices. A batch with fewer rows than there
    are processes is skipped, since every process must take part in every step.

    Args:
        batches: the sampler of global batches, drawn in the same order by every process.
        rank: this process's place, 0 to `world - 1`.
        world: the number of processes.
        short: the size of the one batch an epoch may have below the batch size (0 when none),
            so the length is known without drawing the order.
    """

    def __init__(self, batches: Sampler[list[int]], rank: int, world: int, short: int = 0) -> None:
        self.batches, self.rank, self.world, self.short = batches, rank, world, short

    def __iter__(self) -> Iterator[list[int]]:
        return self._shares(iter(self.batches))  # iter() now: a sampler may draw its order here

    def _shares(self, batches: Iterator[list[int]]) -> Iterator[list[int]]:
        """This process's slice of each batch, skipping a batch smaller than `world`."""
        for batch in batches:
            if len(batch) >= self.world:
                share, extra = divmod(len(batch), self.world)
                start = self.rank * share + min(self.rank, extra)
                yield list(batch)[start : start + share + (self.rank < extra)]

    def __len__(self) -> int:
        return len(self.batches) - (0 < self.short < self.world)


def shard(model: torch.nn.Module) -> bool:
    """Shard `model` across the processes (FSDP): each transformer block is one unit, then the rest.

    The blocks are the modules a transformers model names in `_no_split_modules` (GPT-2's
    `GPT2Block`, Llama's `LlamaDecoderLayer`). Gradients are then averaged by FSDP itself, not by
    `sum_gradients`. Returns False, and changes nothing, on one process.

    Args:
        model: the model to shard in place, already on this process's device.
    """
    if world_size() <= 1:
        return False
    from torch.distributed.fsdp import fully_shard

    blocks = {
        name
        for module in model.modules()
        for name in (getattr(module, "_no_split_modules", None) or [])
    }
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module)
    # the root too gives its parameters back after each forward pass: evaluation has no backward
    # pass, and the checkpoint must find the sharded parameters the optimizer holds
    fully_shard(model, reshard_after_forward=True)
    return True


def full_tensor(parameter: torch.Tensor) -> torch.Tensor:
    """The whole of `parameter`, gathered from every process when it is sharded (a collective)."""
    from torch.distributed.tensor import DTensor

    return parameter.full_tensor() if isinstance(parameter, DTensor) else parameter


def assign(parameter: torch.nn.Parameter, value: torch.Tensor) -> None:
    """Copy a whole tensor into `parameter`, keeping only this process's shard when sharded."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(parameter, DTensor):
        value = distribute_tensor(
            value.to(parameter.device), parameter.device_mesh, parameter.placements
        )
    parameter.copy_(value)


def is_sharded(model: torch.nn.Module) -> bool:
    """True once `shard` has split the model's parameters across the processes."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state as one process would hold it: gathered when the model is sharded."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    """Restore an `optimizer_state`, keeping each process's shard when the model is sharded."""
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=options)
