"""torch.distributed set-up for `torchrun`: NCCL on GPU, gloo on CPU; a no-op for one process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum across ranks (a copy); identity for one process. gloo gets CPU tensors."""
        if not self.enabled:
            return tensor
        out = tensor.detach().clone()
        if dist.get_backend() == "gloo":
            out = out.cpu()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(tensor.device)

    def all_gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's (N_r, ...) rows concatenated in rank order (N_r may differ); identity for one process."""
        if not self.enabled:
            return rows
        work = rows.detach().cpu() if dist.get_backend() == "gloo" else rows.detach()
        count = torch.tensor([work.shape[0]], device=work.device)
        counts = [torch.zeros_like(count) for _ in range(self.world_size)]
        dist.all_gather(counts, count)
        sizes = [int(c.item()) for c in counts]
        padded = work.new_zeros((max(sizes),) + tuple(work.shape[1:]))
        padded[: work.shape[0]] = work
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded)
        return torch.cat([g[:n] for g, n in zip(gathered, sizes)]).to(rows.device)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: str | None = None) -> DistContext:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK; start the process group when there are several.

    ``device`` "cuda"/"cpu" forces the device; by default CUDA when present (one GPU per
    local rank), else CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    # Under torchrun the group starts even for one process, so a one-GPU launch exercises the
    # same NCCL set-up as a multi-GPU one; a plain `python -m` run stays group-free.
    if (world > 1 or "TORCHELASTIC_RUN_ID" in os.environ) and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev)


def backend_name() -> str | None:
    """The running process group's backend ("nccl", "gloo"), or None without one."""
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
