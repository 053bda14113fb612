"""A decoder-only transformer over CIF tokens, parameter-compatible with CrystaLLM checkpoints.

Read top to bottom: :class:`GPTConfig` -> :class:`CausalSelfAttention` -> :class:`MLP` ->
:class:`Block` -> :class:`GPT`. Parameter names follow the nanoGPT layout that CrystaLLM's
``ckpt.pt`` files use (``transformer.wte``, ``transformer.h.0.attn.c_attn``, ...), so their
state dicts load unchanged.

Two ways to run the model:

* :meth:`GPT.forward` - the whole sequence at once (training, scoring);
* :meth:`GPT.forward_cached` - incremental decoding with a :class:`KVCache`: a batched
  prefill of (left-padded) prompts, then one token per step.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, SequenceTooLongError
from .cache import KVCache

log = logging.getLogger(__name__)


@dataclass
class GPTConfig:
    """Sizes of a :class:`GPT`. Defaults are CrystaLLM's "small" model (about 85 M parameters).

    Raises:
        ConfigError (a ValueError): a size is not positive, ``n_embd`` is not divisible by
            ``n_head``, or ``dropout`` is outside [0, 1).
    """

    block_size: int = 1024
    vocab_size: int = 371
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.bias, bool):
            raise ConfigError(f"GPTConfig.bias must be true or false, got {self.bias!r}")
        self.dropout = float(self.dropout)

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        """Return the sizes as a plain dict (CrystaLLM's ``model_args``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GPTConfig":
        """Build a config from ``model_args``, ignoring keys that are not sizes.

        Raises:
            ConfigError: a size is invalid.
        """
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with fused q/k/v projection."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, steps, width = x.shape
        head_size = width // self.n_head
        # [B, T, 3C] -> three [B, H, T, D]
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(batch, steps, self.n_head, head_size).transpose(1, 2)
        k = k.view(batch, steps, self.n_head, head_size).transpose(1, 2)
        v = v.view(batch, steps, self.n_head, head_size).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            # keys/values of every filled column plus these: [B, H, S, D]
            k, v = cache.write(layer, k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        # [B, H, T, D] -> [B, T, C]
        y = y.transpose(1, 2).contiguous().view(batch, steps, width)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network, four times wider inside, tanh-approximated GELU."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, T, C] -> [B, T, 4C] -> [B, T, C]
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer, attn_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The language model: token + position embeddings, ``n_layer`` blocks, tied output head."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        self.apply(self._init_weights)
        # residual output projections start smaller so deep stacks keep unit variance
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -- sizes ------------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        """Return the number of parameters (tied weights counted once).

        With ``non_embedding=True`` the position embeddings are left out (the token
        embedding stays: it is also the output head).
        """
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.transformer.wpe.weight.numel()
        return total

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.wte.weight.dtype

    # -- full pass ---------------------------------------------------------------------------

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the whole sequence ``idx`` ``[B, T]``.

        Returns:
            ``(logits [B, T, vocab_size], loss)``; ``loss`` is the mean cross-entropy against
            ``targets`` ``[B, T]`` (entries of -1 ignored), or None without targets.

        Raises:
            SequenceTooLongError: ``T`` exceeds ``block_size``.
        """
        batch, steps = idx.shape
        if steps > self.config.block_size:
            raise SequenceTooLongError(
                f"sequence of {steps} tokens exceeds the model's block_size {self.config.block_size}"
            )
        pos = torch.arange(steps, device=idx.device)  # [T]
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # [B, T, C]
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))  # [B, T, V]
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1
            )
        return logits, loss

    # -- incremental decoding ------------------------------------------------------------------

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """Return an empty :class:`KVCache` for ``batch_size`` rows on the model's device/dtype.

        ``max_len`` (columns, padding included) defaults to ``block_size``.
        """
        config = self.config
        return KVCache(
            config.n_layer,
            batch_size,
            config.n_head,
            config.block_size if max_len is None else max_len,
            config.head_size,
            device=self.device,
            dtype=self.dtype,
        )

    def forward_cached(
        self, idx: torch.Tensor, cache: KVCache, pad_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Append ``idx`` ``[B, T]`` to ``cache`` and return ``logits [B, T, vocab_size]``.

        ``pad_mask`` ``[B, T]`` (bool) is False on left-padding columns: those are never
        attended to and do not count as positions, so each row's logits equal a full
        :meth:`forward` of its unpadded tokens. Logits at padding columns are meaningless.

        Raises:
            SequenceTooLongError: the cache has no room for ``T`` more columns, or a row
                would hold more than ``block_size`` real tokens.
            ValueError: ``idx`` / ``pad_mask`` shapes do not fit the cache.
        """
        batch, steps = idx.shape
        if batch != cache.batch_size:
            raise ValueError(f"idx has {batch} rows but the cache holds {cache.batch_size}")
        if pad_mask is None:
            pad_mask = torch.ones(batch, steps, dtype=torch.bool, device=idx.device)
        elif pad_mask.shape != idx.shape:
            raise ValueError(f"pad_mask shape {tuple(pad_mask.shape)} differs from idx shape {tuple(idx.shape)}")
        pad_mask = pad_mask.to(dtype=torch.bool, device=idx.device)
        cache.check_room(steps)
        real = pad_mask.long()
        longest = int((cache.positions + real.sum(dim=1)).max())
        if longest > self.config.block_size:
            raise SequenceTooLongError(
                f"sequence would reach {longest} tokens, more than the model's block_size {self.config.block_size}"
            )

        # position id of each column = real tokens before it in its row; [B, T]
        pos = cache.positions[:, None] + real.cumsum(dim=1) - real
        pos = pos.clamp(max=self.config.block_size - 1)  # trailing pads only

        start, end = cache.length, cache.length + steps
        query_col = torch.arange(start, end, device=idx.device)[:, None]  # [T, 1]
        key_col = torch.arange(end, device=idx.device)[None, :]  # [1, S]
        key_valid = torch.cat([cache.valid[:, :start], pad_mask], dim=1)  # [B, S]
        # causal over real keys; each column also sees itself so padding rows never get an
        # all-masked softmax (NaN) - their outputs are never read
        attn_mask = (key_valid[:, None, :] & (key_col <= query_col)) | (key_col == query_col)  # [B, T, S]
        attn_mask = attn_mask[:, None]  # [B, 1, T, S]

        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer, attn_mask)
        cache.advance(pad_mask)
        return self.lm_head(self.transformer.ln_f(x))

    # -- training helpers ------------------------------------------------------------------------

    def configure_optimizers(
        self,
        weight_decay: float,
        learning_rate: float,
        betas: tuple[float, float],
        device_type: str = "cpu",
    ) -> torch.optim.AdamW:
        """Return AdamW decaying only matrices (2-D+ weights, embeddings); biases and norms are not decayed."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        extra = {}
        if device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters:
            extra["fused"] = True
        log.debug(
            "optimizer: %d decayed tensors (%d params), %d not decayed",
            len(decay), sum(p.numel() for p in decay), len(no_decay),
        )
        return torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas), **extra)
