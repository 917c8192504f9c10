"""Several processes through `torchrun`: which rank this is, the process group, and the few collectives the
training loop needs. Without torchrun (no WORLD_SIZE in the environment) every function is the one-process case,
so the same code runs on a laptop and on a node: users change the launcher, not the code."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun), known before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_writer() -> bool:
    """Only rank 0 writes run files, checkpoints and results."""
    return launched_rank() == 0


def group_rank_and_size() -> tuple[int, int]:
    """(rank, processes) of the joined process group; (0, 1) when there is none."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA); return this rank's device."""
    if world_size() == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
