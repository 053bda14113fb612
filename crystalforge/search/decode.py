"""The batched KV-cache decoding engine shared by every search strategy.

One call decodes many rows together: distinct prompts are left-padded and prefilled
once, the cache is expanded to the requested number of rows per prompt
(``KVCache.select``), then one token per row is appended per step. A row that emits the
end-of-CIF marker (two consecutive newline tokens) is finished and dropped from the
active batch while the others go on. Only generated newlines count: a prompt's trailing
newline followed by a generated one does not end a row.

A row that fills the model's context window (``block_size`` tokens) goes on over its last
``block_size`` tokens, as CrystaLLM does: the cropped window is prefilled into a fresh
cache (:func:`refill`) and decoding continues from there, so the output equals a loop
that runs the cropped sequence through the model for every token. Before the window is
full, nothing ever re-runs the context.

Randomness comes in as uniforms in ``[0, 1)``, one per row and step, drawn on the CPU
either from one shared ``torch.Generator`` or from one generator per row. With one
generator per row, a row's output depends only on its prompt and its generator, not on
which other rows share the batch (up to floating-point differences of batched matrix
products, which can only matter when a uniform falls within rounding error of a
probability boundary).

Example (what MCTS rollouts use)::

    picker = make_picker(temperature=1.0, top_k=10)
    rows = sample_batch(model, [tokenizer.encode(prompt)], repeats=8,
                        max_new_tokens=2000, pick_next=picker, generator=generator)
    for ids, finished in rows: ...
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Protocol, Sequence

import torch

from ..errors import SequenceTooLongError
from .pickers import (PickNext, filter_top_k, filter_top_p, greedy_pick, make_picker,  # noqa: F401 - the engine's API
                      sample_from_logits)

logger = logging.getLogger(__name__)

#: id of the newline token in the CrystaLLM vocabulary
NEWLINE_ID = 142



class Decoded(NamedTuple):
    """One decoded row: the generated token ids (prompt excluded) and whether it ended.

    ``finished`` is True when the end-of-CIF marker was produced (its tokens are included
    in ``ids``), False when ``max_new_tokens`` or the context window ran out.
    """

    ids: list[int]
    finished: bool


class BoundProcessor(Protocol):
    """Per-batch state of a logits processor (see :mod:`crystalforge.search.logits`)."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor: ...

    def advance(self, tokens: list[int]) -> None: ...

    def keep(self, rows: list[int]) -> None: ...


class LogitsProcessor(Protocol):
    def start(self, row_prompts: Sequence[Sequence[int]]) -> BoundProcessor: ...


# -- randomness -----------------------------------------------------------------------
class _Uniforms:
    """Uniforms per active row and step, from one shared generator or one per row."""

    def __init__(self, generator, n_rows: int, steps: int) -> None:
        self.shared: torch.Generator | None = None
        self.table: torch.Tensor | None = None
        if generator is None:
            self.shared = torch.Generator().manual_seed(0)
        elif isinstance(generator, torch.Generator):
            self.shared = generator
        else:
            generators = list(generator)
            if len(generators) != n_rows:
                raise ValueError(f"{len(generators)} generators for {n_rows} rows")
            # Each row's whole stream at once: a row's draws never depend on its neighbours.
            self.table = torch.stack([torch.rand(max(steps, 1), generator=g) for g in generators])

    def draw(self, step: int, active: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            return self.table[active, step]
        return torch.rand(active.numel(), generator=self.shared)


# -- the engine -----------------------------------------------------------------------
def left_pad(prompt_ids: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(idx[P, T], pad_mask[P, T])`` with prompts right-aligned; pad_mask False on padding."""
    width = max(len(p) for p in prompt_ids)
    idx = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.bool)
    for row, ids in enumerate(prompt_ids):
        if ids:
            idx[row, width - len(ids):] = torch.as_tensor(list(ids), dtype=torch.long)
            mask[row, width - len(ids):] = True
    return idx, mask


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def window(ids: Sequence[int], block_size: int) -> list[int]:
    """Return the last ``block_size`` tokens of ``ids``: the context the model sees next."""
    return list(ids[-block_size:]) if len(ids) > block_size else list(ids)


@torch.no_grad()
def refill(model, rows: Sequence[Sequence[int]], room: int = 0):
    """Prefill a fresh cache with each row's window; return ``(cache, last logits[B, V])``.

    Each row keeps its last ``block_size`` tokens (all of them when shorter), left-padded
    to a common width; the cache has room for ``room`` more columns, up to ``block_size``.
    This is the sliding-window step: once a row holds ``block_size`` tokens the next one is
    predicted from the last ``block_size`` tokens at positions ``0 .. block_size - 1``, as
    a full forward pass of the cropped sequence would (CrystaLLM's rule). Absolute
    position embeddings change every key and value when the window moves, so the window is
    prefilled again; tokens before the context is full stay incremental.
    """
    block_size = int(model.config.block_size)
    idx, pad_mask = left_pad([window(r, block_size) for r in rows])
    device = _model_device(model)
    cache = model.new_cache(idx.size(0), max_len=min(block_size, idx.size(1) + max(room, 0)) or 1)
    logits = model.forward_cached(idx.to(device), cache, pad_mask=pad_mask.to(device))[:, -1, :]
    return cache, logits


@torch.no_grad()
def extend(model, cache, ids: Sequence[int], tokens: Sequence[int], room: int = 0):
    """Append ``tokens`` to a one-row ``cache`` whose row holds the tail of ``ids``.

    ``ids`` is the whole sequence before ``tokens``. Returns ``(cache, last logits[1, V])``:
    the same cache extended in place when the tokens fit the cache and the context window,
    else a fresh cache prefilled with the window of ``ids + tokens`` (see :func:`refill`),
    with room for ``room`` more columns.
    """
    block_size = int(model.config.block_size)
    tokens = list(tokens)
    if cache.length + len(tokens) <= cache.max_len and int(cache.positions.max()) + len(tokens) <= block_size:
        idx = torch.tensor([tokens], dtype=torch.long, device=cache.device)
        return cache, model.forward_cached(idx, cache)[:, -1, :]
    return refill(model, [list(ids) + tokens], room)


def stack(model, caches: Sequence, counts: Sequence[int], room: int):
    """Return one cache holding ``counts[i]`` copies of one-row ``caches[i]``, right-aligned.

    Shorter rows get padding on the left, so every row keeps its own positions; ``room``
    more columns fit after the widest (up to ``block_size``).
    """
    width = max(c.length for c in caches)
    block_size = int(model.config.block_size)
    stacked = model.new_cache(sum(counts), max_len=max(width, min(block_size, width + room)))
    stacked.valid.zero_()
    row = 0
    for cache, n in zip(caches, counts):
        offset, length = width - cache.length, cache.length
        rows = slice(row, row + n)
        stacked.keys[:, rows, :, offset:width] = cache.keys[:, :1, :, :length]
        stacked.values[:, rows, :, offset:width] = cache.values[:, :1, :, :length]
        stacked.valid[rows, offset:width] = cache.valid[:1, :length]
        stacked.positions[rows] = cache.positions[0]
        row += n
    stacked.length = width
    return stacked


@torch.no_grad()
def sample_batch(
    model,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int | Sequence[int],
    pick_next: PickNext,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    repeats: int | Sequence[int] = 1,
    stop_on_double_newline: bool = True,
    newline_id: int = NEWLINE_ID,
    processor: LogitsProcessor | None = None,
    cache=None,
    last_logits: torch.Tensor | None = None,
    generated: Sequence[int] | None = None,
) -> list[Decoded]:
    """Decode ``repeats`` continuations of each prompt together through one KV cache.

    A row that fills the model's context goes on over its last ``block_size`` tokens (the
    sliding window, see :func:`refill`) until it ends or ``max_new_tokens`` run out, so
    the output equals a loop that runs the whole cropped sequence through the model for
    every token.

    Args:
        model: a GPT with ``new_cache`` and ``forward_cached`` (eval mode).
        prompt_ids: the distinct prompts as token ids (non-empty, any lengths).
        max_new_tokens: most tokens to generate per row (an int, or one per prompt).
        pick_next: ``pick_next(logits[B, V], uniforms[B]) -> ids[B]`` (see :func:`make_picker`).
        generator: one CPU ``torch.Generator`` shared by all rows, or a sequence with one
            per output row (row-independent results); None only for greedy pickers.
        repeats: rows per prompt (an int for all, or one count per prompt).
        stop_on_double_newline: end a row at two consecutive generated newline tokens.
        processor: optional logits processor (masks applied before ``pick_next``).
        cache, last_logits: continue from an existing cache holding the tail of each
            distinct prompt (one row each, in order) and their last-position logits
            ``[P, V]``, instead of prefilling (MCTS: a node's prefix). A cache that needs
            no expansion is extended in place: pass ``cache.clone()`` to keep the original.
        generated: per prompt, how many of its last tokens were generated (MCTS: a node's
            edge tokens), so a newline among them counts towards the end marker; a
            prompt's own newlines never do. Default: none.

    Returns:
        One :class:`Decoded` per output row, prompt-major: all rows of prompt 0, then prompt 1, ...

    Raises:
        SequenceTooLongError: a prompt to prefill fills the model's whole context window.
    """
    if not prompt_ids:
        return []
    n_prompts = len(prompt_ids)
    counts = [repeats] * n_prompts if isinstance(repeats, int) else list(repeats)
    limits = [max_new_tokens] * n_prompts if isinstance(max_new_tokens, int) else list(max_new_tokens)
    tails = [0] * n_prompts if generated is None else list(generated)
    if len(counts) != n_prompts or any(c < 0 for c in counts):
        raise ValueError("repeats must be a non-negative count per prompt")
    if len(limits) != n_prompts or len(tails) != n_prompts:
        raise ValueError("max_new_tokens and generated need one value per prompt")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("prompts must not be empty")
    kept = [i for i, c in enumerate(counts) if c > 0]
    n_rows = sum(counts)
    if n_rows == 0:
        return []
    prompts = [list(prompt_ids[i]) for i in kept]
    block_size = int(model.config.block_size)
    device = _model_device(model)
    row_prompt = torch.repeat_interleave(
        torch.arange(len(prompts)), torch.tensor([counts[i] for i in kept])
    )  # [n_rows] -> index into prompts
    row_limit = torch.tensor([max(0, limits[i]) for i in kept]).index_select(0, row_prompt)  # [n_rows]
    steps = int(row_limit.max())
    uniforms = _Uniforms(generator, n_rows, steps)
    bound = processor.start([prompts[int(p)] for p in row_prompt]) if processor is not None else None

    # Prefill every distinct prompt once, then expand the cache to one row per sample.
    if cache is None:
        idx, pad_mask = left_pad(prompts)
        width = idx.size(1)
        if width >= block_size:
            raise SequenceTooLongError(
                f"prompt has {width} tokens but the model's context window is {block_size}; shorten the prompt"
            )
        cache = model.new_cache(len(prompts), max_len=min(block_size, width + max(steps, 1)))
        logits = model.forward_cached(idx.to(device), cache, pad_mask=pad_mask.to(device))[:, -1, :]
    else:
        if last_logits is None or cache.batch_size != len(prompts) or last_logits.size(0) != len(prompts):
            raise ValueError("a given cache needs last_logits and one row per prompt with samples")
        logits = last_logits
    expand = row_prompt.to(device)
    if n_rows != len(prompts):  # otherwise every prompt has exactly one row already
        cache = cache.select(expand)
        logits = logits.index_select(0, expand)

    out = torch.full((n_rows, max(steps, 1)), -1, dtype=torch.long, device=device)
    lengths = torch.zeros(n_rows, dtype=torch.long)
    finished = torch.zeros(n_rows, dtype=torch.bool)
    active = torch.arange(n_rows)  # output row of each active batch row (CPU)
    # the token before each row's first new one, when it was generated (else never a newline)
    previous = torch.tensor([prompts[int(p)][-1] if tails[kept[int(p)]] > 0 else -1 for p in row_prompt],
                            dtype=torch.long, device=device)

    for step in range(steps):
        if bound is not None:
            logits = bound(logits)
        tokens = pick_next(logits, uniforms.draw(step, active)).to(device)  # [B]
        out[active.to(device), step] = tokens
        lengths[active] = step + 1
        if bound is not None:
            bound.advance(tokens.tolist())
        stop = row_limit[active] <= step + 1  # [B] CPU: no tokens left
        if stop_on_double_newline:
            done = ((tokens == newline_id) & (previous == newline_id)).cpu()
            finished[active[done]] = True
            stop = stop | done
        if bool(stop.any()):
            keep = (~stop).nonzero().squeeze(-1)
            if keep.numel() == 0:
                break
            active = active[keep]
            keep_device = keep.to(device)
            tokens = tokens.index_select(0, keep_device)
            cache = cache.select(keep_device)
            if bound is not None:
                bound.keep(keep.tolist())
        previous = tokens
        if step + 1 == steps:
            break
        if cache.length >= cache.max_len:  # context (or cache) full: slide the window
            generated_so_far = out[active.to(device), : step + 1].cpu().tolist()
            rows = [prompts[int(row_prompt[r])] + g for r, g in zip(active.tolist(), generated_so_far)]
            cache, logits = refill(model, rows, room=steps - step - 1)
        else:
            logits = model.forward_cached(tokens.unsqueeze(-1), cache)[:, -1, :]

    rows = out.cpu().tolist()
    return [
        Decoded(ids=row[: int(length)], finished=bool(done))
        for row, length, done in zip(rows, lengths.tolist(), finished.tolist())
    ]
