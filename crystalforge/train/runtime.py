"""Where training runs: device, precision and (under ``torchrun``) the process group.

A run is distributed when ``torchrun`` sets ``RANK``/``WORLD_SIZE``; the backend is
nccl on GPUs and gloo on CPUs unless the config names one. Only rank 0 (``is_main``)
writes checkpoints and shows progress.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import ContextManager

import torch

from ..errors import ConfigError
from .config import TrainConfig

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Runtime:
    """Device, precision and distributed settings of this process."""

    device: torch.device
    dtype: torch.dtype
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    distributed: bool = False
    backend: str | None = None
    _owns_group: bool = field(default=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device_type(self) -> str:
        return self.device.type

    def autocast(self) -> ContextManager:
        """Return the mixed-precision context for forward passes (a no-op in float32)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def close(self) -> None:
        """Leave the process group this runtime created (no-op otherwise)."""
        if self._owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self._owns_group = False


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """Return the torch device for config value ``name`` (``auto`` picks CUDA when present).

    Raises:
        ConfigError: CUDA or MPS requested but not available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"config key 'device' is {name!r} but CUDA is not available here; set device=cpu")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("config key 'device' is 'mps' but MPS is not available here; set device=cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Return the training precision: ``auto`` is bf16 (fp16 without bf16 support) on CUDA, else fp32.

    On CPU, reduced precision gives no speed-up here, so training falls back to float32.
    """
    if device.type != "cuda":
        if name not in ("auto", "float32"):
            log.warning("dtype %s is only used on CUDA; training in float32 on %s", name, device)
        return torch.float32
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("config key 'dtype' is bfloat16 but this GPU does not support it; use float16")
    return _DTYPES[name]


def setup_runtime(config: TrainConfig) -> Runtime:
    """Return this process's runtime, joining the torchrun process group when there is one.

    Raises:
        ConfigError: the device or dtype cannot be used here.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = "RANK" in os.environ and world_size > 1
    if not distributed:
        device = resolve_device(config.device)
        return Runtime(device=device, dtype=resolve_dtype(config.dtype, device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(config.device, local_rank)
    backend = config.backend if config.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
        owns = True
    log.info("rank %d/%d on %s (%s)", rank, world_size, device, backend)
    return Runtime(device=device, dtype=resolve_dtype(config.dtype, device), rank=rank, local_rank=local_rank,
                   world_size=world_size, distributed=True, backend=backend, _owns_group=owns)
