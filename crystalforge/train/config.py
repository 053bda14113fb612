"""Training configuration: a typed dataclass that accepts CrystaLLM's YAML keys as they are.

``load_config("small.yaml", ["max_iters=100", "device=cpu"])`` reads the YAML, applies
``key=value`` overrides (values parsed as YAML scalars) and checks every value. Unknown
keys and bad values raise :class:`~crystalforge.errors.ConfigError` naming the key.
Numbers written the way YAML 1.1 reads as strings (``1e-3``) are accepted as numbers.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16", "float16")
BACKENDS = ("auto", "nccl", "gloo")
#: CrystaLLM keys we accept and ignore (experiment tracking we do not ship)
IGNORED_KEYS = ("wandb_log", "wandb_project", "wandb_run_name")


@dataclass
class TrainConfig:
    """Every training option; names and meanings follow CrystaLLM's ``train.py``.

    ``init_from`` is ``"scratch"``, ``"resume"`` (continue from ``out_dir/ckpt.pt`` with
    its optimizer state and iteration) or a path to a checkpoint (file or folder with
    ``ckpt.pt``) to fine-tune from. ``device``/``dtype``/``backend`` ``"auto"`` pick CUDA,
    bf16 (fp16 without bf16 support) and nccl when a GPU is present, else CPU, fp32, gloo.
    """

    # I/O
    out_dir: str = "out"
    eval_interval: int = 250
    log_interval: int = 1
    eval_iters_train: int = 200
    eval_iters_val: int = 200
    eval_only: bool = False
    always_save_checkpoint: bool = False
    init_from: str = "scratch"
    # data
    dataset: str = ""
    gradient_accumulation_steps: int = 1
    batch_size: int = 32
    block_size: int = 1024
    # model
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False
    # AdamW
    learning_rate: float = 6e-4
    max_iters: int = 5000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # learning-rate schedule (linear warm-up, cosine decay to min_lr)
    decay_lr: bool = True
    warmup_iters: int = 100
    lr_decay_iters: int = 5000
    min_lr: float = 6e-5
    # system
    backend: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    seed: int = 1337
    validate: bool = True
    underrep_p: float = 0.0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first key whose value is invalid."""
        positive = ("eval_interval", "log_interval", "gradient_accumulation_steps", "batch_size", "block_size",
                    "n_layer", "n_head", "n_embd")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"config key '{key}' must be at least 1, got {getattr(self, key)}")
        for key in ("eval_iters_train", "eval_iters_val", "max_iters", "warmup_iters", "lr_decay_iters"):
            if getattr(self, key) < 0:
                raise ConfigError(f"config key '{key}' must not be negative, got {getattr(self, key)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"config key 'n_embd' ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"config key 'dropout' must be in [0, 1), got {self.dropout}")
        for key in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
            if getattr(self, key) < 0:
                raise ConfigError(f"config key '{key}' must not be negative, got {getattr(self, key)}")
        for key in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"config key '{key}' must be in [0, 1), got {getattr(self, key)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"config key 'dtype' must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"config key 'backend' must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"config key 'device' must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not self.init_from:
            raise ConfigError("config key 'init_from' must be 'scratch', 'resume' or a checkpoint path")
        if self.underrep_p != 0.0:
            raise ConfigError("config key 'underrep_p' is not supported (only 0.0); remove it from the config")
        if self.decay_lr and self.min_lr > self.learning_rate:
            raise ConfigError(f"config key 'min_lr' ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})")

    def to_dict(self) -> dict[str, Any]:
        """Return the options as a plain dict (stored in checkpoints as ``config``)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        """Return a copy with ``changes`` applied (values coerced and checked)."""
        return config_from_dict({**self.to_dict(), **changes})


def _field_types() -> dict[str, type]:
    names = {"int": int, "float": float, "bool": bool, "str": str}
    return {f.name: names[f.type if isinstance(f.type, str) else f.type.__name__] for f in fields(TrainConfig)}


def coerce(key: str, value: Any) -> Any:
    """Return ``value`` converted to the type of config ``key``.

    Raises:
        ConfigError: unknown key, or a value that is not of the key's type.
    """
    types = _field_types()
    if key not in types:
        close = difflib.get_close_matches(key, list(types), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown config key '{key}'.{hint}")
    kind = types[key]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return value.strip().lower() in ("true", "yes", "on", "1")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float):
                if not number.is_integer():
                    raise ValueError
                number = int(number)
            if not isinstance(number, int):
                raise ValueError
            return number
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            return float(value)
        if value is None or isinstance(value, (dict, list)):
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key '{key}' must be a {kind.__name__}, got {value!r}") from None


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Return a :class:`TrainConfig` from a mapping of CrystaLLM-style keys.

    Raises:
        ConfigError: an unknown key or an invalid value (the message names the key).
    """
    if not isinstance(values, Mapping):
        raise ConfigError("a training config must be a mapping of key: value pairs")
    clean = {}
    for key, value in values.items():
        key = str(key)
        if key in IGNORED_KEYS:
            continue
        clean[key] = coerce(key, value)
    return TrainConfig(**clean)


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Return ``{"key": value}`` from ``key=value`` strings (values read as YAML scalars).

    Raises:
        ConfigError: an item without ``=``.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. max_iters=100)")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Return the config of a YAML file (optional) with ``key=value`` overrides applied.

    Raises:
        ConfigError: the file is missing or not a YAML mapping, or a key/value is invalid.
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p} must hold a mapping of key: value pairs")
        values.update(loaded)
    values.update(parse_overrides(overrides))
    return config_from_dict(values)
