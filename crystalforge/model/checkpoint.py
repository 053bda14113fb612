"""Checkpoint I/O in CrystaLLM's ``ckpt.pt`` layout, loaded safely.

A checkpoint is a dict with ``model`` (state dict, keys possibly prefixed ``_orig_mod.``
by ``torch.compile``), ``model_args`` (``n_layer``, ``n_head``, ``n_embd``, ``block_size``,
``bias``, ``vocab_size``, ``dropout``), ``optimizer``, ``iter_num``, ``best_val_loss`` and
``config``. crystalforge writes the same layout plus ``format_version`` and ``vocab_hash``
(the tokenizer the model was trained with), so CrystaLLM checkpoints load here and ours
load there. Every load uses ``torch.load(..., weights_only=True)``: a checkpoint can hold
tensors and plain Python values, never code.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..cif.io import atomic_writer
from ..errors import CheckpointError, ConfigError, OptionError
from .gpt import GPT, GPTConfig

log = logging.getLogger(__name__)

#: version of the layout written by :func:`save_checkpoint`
FORMAT_VERSION = 1
CHECKPOINT_NAME = "ckpt.pt"
COMPILED_PREFIX = "_orig_mod."
REQUIRED_KEYS = ("model", "model_args")
MODEL_ARG_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """Return the checkpoint file for ``path``: the file itself or ``<folder>/ckpt.pt``.

    Raises:
        CheckpointError: nothing exists at ``path`` or the folder holds no ``ckpt.pt``.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        candidate = p / CHECKPOINT_NAME
        if candidate.is_file():
            return candidate
        nested = sorted(p.glob(f"*/{CHECKPOINT_NAME}"))
        hint = f"; did you mean {nested[0].parent}?" if nested else ""
        raise CheckpointError(f"no {CHECKPOINT_NAME} in folder {p}{hint}")
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    return p


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint dict from a ``ckpt.pt`` file or a folder holding one (tensors on CPU).

    Returns:
        the checkpoint dict (at least ``model`` and ``model_args``).

    Raises:
        CheckpointError: the file is missing, truncated, not a PyTorch checkpoint, holds
            anything but tensors and plain values (code is refused), or lacks required keys.
    """
    file = resolve_checkpoint_path(path)
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types here: all mean "not a usable file"
        raise CheckpointError(f"cannot read checkpoint {file}: {_load_failure_reason(exc)}") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{file} is not a checkpoint: expected a dict, found {type(ckpt).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(f"{file} is not a model checkpoint: missing key(s) {', '.join(missing)}")
    if not isinstance(ckpt["model"], dict) or not isinstance(ckpt["model_args"], dict):
        raise CheckpointError(f"{file} is not a model checkpoint: 'model' and 'model_args' must be dicts")
    return ckpt


def _numpy_scalar_globals() -> list:
    """numpy scalar types, which older training scripts left in ``best_val_loss`` and configs.

    They hold numbers only, so allowing them keeps the load free of code.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    kinds = (np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_)
    return [scalar, np.dtype, *(type(np.dtype(kind)) for kind in kinds)]


def _load_failure_reason(exc: Exception) -> str:
    """Say in a few words why ``torch.load`` failed (its own messages span many lines)."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    text = str(exc)
    match = re.search(r"GLOBAL ([\w.]+)", text)
    if match:
        return (
            f"it refers to Python code ({match.group(1)}), which a safe load refuses; "
            "only tensors and plain values are allowed"
        )
    return "not a valid PyTorch checkpoint, or the file is truncated or corrupt"


def strip_compiled_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Return ``state_dict`` with the ``_orig_mod.`` prefix of compiled models removed from keys."""
    return {
        (key[len(COMPILED_PREFIX) :] if key.startswith(COMPILED_PREFIX) else key): value
        for key, value in state_dict.items()
    }


def model_from_checkpoint(ckpt: dict[str, Any]) -> GPT:
    """Build the :class:`GPT` a checkpoint dict describes, with its weights (CPU, float32, eval mode).

    Raises:
        CheckpointError: the sizes are invalid, the vocabulary does not match the tokenizer
            (size, or ``vocab_hash`` when present), or the weights do not fit the sizes.
    """
    from ..cif.tokenizer import default_tokenizer

    tokenizer = default_tokenizer()
    model_args = ckpt.get("model_args")
    if not isinstance(model_args, dict):
        raise CheckpointError("checkpoint has no 'model_args' dict describing the model sizes")
    try:
        config = GPTConfig.from_dict(model_args)
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint model_args are invalid: {exc}") from exc
    if config.vocab_size != tokenizer.vocab_size:
        raise CheckpointError(
            f"checkpoint vocabulary size {config.vocab_size} does not match the tokenizer's "
            f"{tokenizer.vocab_size}: the model was trained with another vocabulary"
        )
    vocab_hash = ckpt.get("vocab_hash")
    if vocab_hash is not None and vocab_hash != tokenizer.vocab_hash:
        raise CheckpointError(
            f"checkpoint vocab_hash {vocab_hash} does not match the tokenizer's {tokenizer.vocab_hash}: "
            "the model was trained with a different token order"
        )
    state = strip_compiled_prefix(ckpt.get("model") or {})
    # causal-mask buffers of older nanoGPT versions are not parameters
    state = {k: v for k, v in state.items() if not k.endswith(".attn.bias") and not k.endswith(".attn.masked_bias")}
    if "lm_head.weight" not in state and "transformer.wte.weight" in state:
        state["lm_head.weight"] = state["transformer.wte.weight"]  # tied: either copy suffices
    # judged from model_args and the stored shapes alone, before the model allocates anything:
    # a tiny file whose model_args claim 4,000 layers must not make GPT() ask for terabytes
    check_weights_fit(state, config)
    model = GPT(config)
    model.load_state_dict(state)
    return model.eval()


def expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Return the state-dict key -> tensor shape of the :class:`GPT` ``config`` describes,
    computed from the sizes alone (no module is built, nothing is allocated)."""
    n, vocab = config.n_embd, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.wte.weight": (vocab, n),
        "transformer.wpe.weight": (config.block_size, n),
    }
    linear = {"attn.c_attn": (3 * n, n), "attn.c_proj": (n, n), "mlp.c_fc": (4 * n, n), "mlp.c_proj": (n, 4 * n)}
    for layer in range(config.n_layer):
        prefix = f"transformer.h.{layer}."
        for norm in ("ln_1", "ln_2"):
            shapes[f"{prefix}{norm}.weight"] = (n,)
            if config.bias:
                shapes[f"{prefix}{norm}.bias"] = (n,)
        for name, shape in linear.items():
            shapes[f"{prefix}{name}.weight"] = shape
            if config.bias:
                shapes[f"{prefix}{name}.bias"] = (shape[0],)
    shapes["transformer.ln_f.weight"] = (n,)
    if config.bias:
        shapes["transformer.ln_f.bias"] = (n,)
    shapes["lm_head.weight"] = (vocab, n)
    return shapes


def check_weights_fit(state: dict[str, Any], config: GPTConfig) -> None:
    """Raise :class:`CheckpointError` unless ``state`` holds exactly the tensors ``config`` implies.

    The layer count is compared first (from the key names), so an absurd ``n_layer`` is
    refused before the expected shapes are even listed.
    """
    layers = {int(m.group(1)) for key in state if (m := re.match(r"transformer\.h\.(\d+)\.", key))}
    if len(layers) != config.n_layer or (layers and max(layers) != config.n_layer - 1):
        gap = "missing" if config.n_layer > len(layers) else "unexpected"
        raise CheckpointError(f"checkpoint model_args claim {config.n_layer:,} layers, its weights hold "
                              f"{len(layers):,} ({gap} layers): the file is inconsistent")
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"checkpoint weights do not fit model_args ({detail})")
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"checkpoint weight {key} has shape {got}, model_args imply {shape}")


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    iter_num: int = 0,
    best_val_loss: float = float("inf"),
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and optionally its optimizer state) in CrystaLLM's layout, atomically.

    ``path`` is the file to write, or an existing folder (``ckpt.pt`` inside it). Compiled
    (``torch.compile``) and DDP-wrapped models are unwrapped. ``config`` must hold plain
    Python values (str, int, float, bool, None, lists, tuples, dicts; paths become strings).
    ``extra`` adds top-level keys of plain values (e.g. ``data_card``) beside the standard ones.

    Returns:
        the path written.

    Raises:
        CheckpointError: ``config`` holds a value that a safe load could not read back, or the
            file cannot be written.
    """
    from ..cif.tokenizer import default_tokenizer

    target = Path(path).expanduser()
    if target.is_dir():
        target = target / CHECKPOINT_NAME
    module = _unwrap(model)
    if not isinstance(module, GPT):
        raise CheckpointError(f"save_checkpoint needs a crystalforge GPT, got {type(module).__name__}")
    if isinstance(best_val_loss, torch.Tensor):
        best_val_loss = best_val_loss.item()
    ckpt = {
        "model": module.state_dict(),
        "model_args": {key: getattr(module.config, key) for key in MODEL_ARG_KEYS},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "iter_num": int(iter_num),
        "best_val_loss": float(best_val_loss),
        "config": _plain(config or {}, "config"),
        "format_version": FORMAT_VERSION,
        "vocab_hash": default_tokenizer().vocab_hash,
    }
    for key, value in (extra or {}).items():
        if key in ckpt:
            raise CheckpointError(f"extra checkpoint key {key!r} would replace a standard key")
        ckpt[key] = _plain(value, key)
    try:
        with atomic_writer(target) as handle:
            torch.save(ckpt, handle)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {target}: {exc.strerror or exc}") from exc
    log.info("saved checkpoint %s (iter %d)", target, iter_num)
    return target


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Return the torch dtype named by ``dtype`` (None means float32).

    Raises:
        OptionError: not one of float32, bfloat16, float16.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.bfloat16, torch.float16):
            return dtype
        raise OptionError(f"unsupported model dtype {dtype}: use float32, bfloat16 or float16")
    name = str(dtype).strip().lower().removeprefix("torch.")
    if name not in _DTYPES:
        raise OptionError(f"unknown model dtype {dtype!r}: use float32, bfloat16 or float16")
    return _DTYPES[name]


def load_model(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> GPT:
    """Load a :class:`GPT` in eval mode from a ``ckpt.pt``, a folder holding one, or the default.

    ``path=None`` loads the embedded default model
    (``crystalforge/assets/default_model/ckpt.pt``).

    Returns:
        the model on ``device`` with ``dtype`` (default float32), in eval mode.

    Raises:
        CheckpointError: the checkpoint is missing or unusable (see :func:`load_checkpoint`,
            :func:`model_from_checkpoint`), or there is no embedded default model.
        OptionError: ``device`` or ``dtype`` is not valid.
    """
    torch_dtype = parse_dtype(dtype)
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise OptionError(f"unknown torch device {device!r} (try cpu, cuda, cuda:0 or mps)") from exc
    if path is None or str(path) == "":
        file = DEFAULT_MODEL_DIR / CHECKPOINT_NAME
        if not file.is_file():
            raise CheckpointError(
                f"no embedded default model at {file}: pass a checkpoint path "
                "(e.g. from 'crystalforge download crystallm_v1_small.tar.gz')"
            )
        path = file
    model = model_from_checkpoint(load_checkpoint(path))
    try:
        model = model.to(device=torch_device, dtype=torch_dtype)
    except (RuntimeError, AssertionError) as exc:
        raise OptionError(f"cannot move the model to device {device!r}: {str(exc).splitlines()[0]}") from exc
    log.info("loaded model from %s (%.2fM parameters)", path, model.num_params() / 1e6)
    return model.eval()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """Return the plain module inside torch.compile / DDP wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel) or (
            hasattr(model, "module") and isinstance(getattr(model, "module"), torch.nn.Module)
        ):
            model = model.module
        else:
            return model


def _plain(value: Any, where: str) -> Any:
    """Return ``value`` as plain Python data a ``weights_only`` load accepts."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, (str, int)) else k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _plain(value.item(), where)
        except (ValueError, RuntimeError):
            pass
    raise CheckpointError(
        f"{where} holds a {type(value).__name__}, which a safe checkpoint cannot store; use plain values"
    )


__all__ = [
    "FORMAT_VERSION",
    "load_checkpoint",
    "load_model",
    "model_from_checkpoint",
    "parse_dtype",
    "resolve_checkpoint_path",
    "save_checkpoint",
    "strip_compiled_prefix",
]
