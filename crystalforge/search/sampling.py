"""Sampling strategies: random (temperature), top-k, top-p (nucleus) and greedy decoding.

All four run the batched KV-cache engine (:mod:`crystalforge.search.decode`): the rows
(prompts x samples) are decoded together in chunks of ``batch_size``, each distinct
prompt prefilled once per chunk and its cache expanded to its samples.

Determinism: every sample gets its own CPU generator, seeded from the run generator's
seed, the prompt text and the sample's index (:func:`sample_seed`). A sample's text
therefore depends only on (seed, prompt, index) and the model, not on ``batch_size``,
on the other prompts of the run, or on which process of a sharded run made it
(floating-point differences between batched and single-row matrix products could in
principle flip a draw that lands within rounding error of a probability boundary;
greedy decoding has no draws at all).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Callable, Sequence

import attrs
import torch
from tqdm.auto import tqdm

from ..errors import OptionError
from .base import Sample
from .decode import PickNext, make_picker, sample_batch
from .logits import make_processor, parse_constraints

logger = logging.getLogger(__name__)


def sample_seed(seed: int, prompt: str, index: int) -> int:
    """Return the seed of sample ``index`` of ``prompt`` in a run seeded with ``seed``."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _positive(instance, attribute, value) -> None:
    if value is not None and value <= 0:
        raise OptionError(f"Option '{attribute.name}' must be positive, got {value}")


def _check_constrain(instance, attribute, value) -> None:
    try:
        parse_constraints(value)
    except ValueError as exc:
        raise OptionError(f"Option 'constrain': {exc}") from None


def _check_elements(instance, attribute, value) -> None:
    from ..errors import CompositionError
    from ..cif.composition import parse_system

    if value:
        try:
            parse_system(value)
        except CompositionError as exc:
            raise OptionError(f"Option 'elements': {exc}") from None


def _elements_field():
    return attrs.field(
        default="",
        validator=_check_elements,
        metadata={"help": "chemical system, e.g. Li-Fe-P-O: no other element token anywhere in the text "
                          "(any subset may appear; '' = no restriction); applies whatever constrain says"},
    )


def _max_atoms_field():
    return attrs.field(
        default=0,
        validator=_non_negative_int,
        metadata={"help": "most atoms per cell of a formula the model writes itself (de novo prompts "
                          "ending in data_; 0 = no bound)"},
    )


def _non_negative_int(instance, attribute, value) -> None:
    if value < 0:
        raise OptionError(f"Option '{attribute.name}' must be >= 0, got {value}")


def _max_new_tokens_field():
    return attrs.field(
        default=3000,
        validator=_positive,
        metadata={"help": "most tokens generated per sample (also bounded by the model's context)"},
    )


def _constrain_field():
    return attrs.field(
        default="all",
        validator=_check_constrain,
        metadata={
            "help": "logits masks, comma-separated: composition (only the prompt's elements), grammar "
                    "(CIF line syntax), stoichiometry (formula lines, Z and site multiplicities agree with "
                    "the prompt's formula); both = composition,grammar; all = the three (default); "
                    "none = the model's own distribution",
        },
    )


def _temperature_field():
    return attrs.field(
        default=1.0,
        validator=_positive,
        metadata={"help": "softmax temperature; below 1 sharpens, above 1 flattens"},
    )


@attrs.define
class _Sampling:
    """Shared machinery: work items, chunking, per-sample generators, decoding."""

    def picker(self) -> PickNext:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def generate(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[str],
        n: int,
        *,
        generator: torch.Generator | None,
        device: Any = "cpu",
        batch_size: int = 32,
        scorer: Any = None,
        validate: Callable[[str], Any] | None = None,
        progress: bool = True,
        indices: Sequence[Sequence[int]] | None = None,
    ) -> list[list[Sample]]:
        """Return ``n`` samples per prompt (see :mod:`crystalforge.search.base`).

        Args:
            indices: optional sample indices per prompt, replacing ``range(n)`` (a resumed
                run asks only for the missing ones; a sample's text depends on its index).
            generator: the run's generator; only its ``initial_seed()`` is used (None: seed 0).

        Raises:
            SequenceTooLongError: a prompt does not fit the model's context.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        seed = generator.initial_seed() if generator is not None else 0
        wanted = [list(range(n)) for _ in prompts] if indices is None else [list(i) for i in indices]
        if len(wanted) != len(prompts):
            raise ValueError(f"{len(wanted)} index lists for {len(prompts)} prompts")
        encoded = [tokenizer.encode(p) for p in prompts]
        work = [(p, i) for p, idx in enumerate(wanted) for i in idx]
        results: list[list[Sample]] = [[] for _ in prompts]
        pick = self.picker()
        processor = make_processor(self.constrain, tokenizer, self.elements, self.max_atoms)
        bar = tqdm(total=len(work), desc="generating", unit="structure", disable=not progress, dynamic_ncols=True)
        try:
            for start in range(0, len(work), batch_size):
                chunk = work[start : start + batch_size]
                order = list(dict.fromkeys(p for p, _ in chunk))  # distinct prompts, in order
                repeats = [sum(1 for p, _ in chunk if p == q) for q in order]
                generators = [
                    torch.Generator().manual_seed(sample_seed(seed, prompts[p], i)) for p, i in chunk
                ]
                decoded = sample_batch(
                    model,
                    [encoded[p] for p in order],
                    repeats=repeats,
                    max_new_tokens=self.max_new_tokens,
                    pick_next=pick,
                    generator=generators,
                    newline_id=tokenizer.newline_id,
                    processor=processor,
                )
                # chunk is prompt-major already, so decoded rows line up with it
                for (p, i), (ids, finished) in zip(chunk, decoded):
                    text = prompts[p] + tokenizer.decode(ids)
                    results[p].append(Sample(text=text, n_tokens=len(ids), finished=finished, extra={"index": i}))
                bar.update(len(chunk))
        finally:
            bar.close()
        return results


@attrs.define
class RandomSampling(_Sampling):
    """Temperature sampling over the full distribution."""

    temperature: float = _temperature_field()
    max_new_tokens: int = _max_new_tokens_field()
    constrain: str = _constrain_field()
    elements: str = _elements_field()
    max_atoms: int = _max_atoms_field()

    def picker(self) -> PickNext:
        return make_picker(temperature=self.temperature)


@attrs.define
class TopKSampling(_Sampling):
    """Sample among the ``top_k`` most likely tokens (CrystaLLM's default: k=10)."""

    temperature: float = _temperature_field()
    top_k: int = attrs.field(default=10, validator=_positive, metadata={"help": "number of most likely tokens kept"})
    max_new_tokens: int = _max_new_tokens_field()
    constrain: str = _constrain_field()
    elements: str = _elements_field()
    max_atoms: int = _max_atoms_field()

    def picker(self) -> PickNext:
        return make_picker(temperature=self.temperature, top_k=self.top_k)


def _check_top_p(instance, attribute, value) -> None:
    if not 0.0 < value <= 1.0:
        raise OptionError(f"Option 'top_p' must be in (0, 1], got {value}")


@attrs.define
class TopPSampling(_Sampling):
    """Nucleus sampling: the smallest set of most likely tokens with probability >= ``top_p``."""

    temperature: float = _temperature_field()
    top_p: float = attrs.field(
        default=0.9, validator=_check_top_p, metadata={"help": "probability mass kept, in (0, 1]"}
    )
    max_new_tokens: int = _max_new_tokens_field()
    constrain: str = _constrain_field()
    elements: str = _elements_field()
    max_atoms: int = _max_atoms_field()

    def picker(self) -> PickNext:
        return make_picker(temperature=self.temperature, top_p=self.top_p)


@attrs.define
class GreedyDecoding(_Sampling):
    """Always take the most likely token: one deterministic text per prompt (all n samples agree)."""

    max_new_tokens: int = _max_new_tokens_field()
    constrain: str = _constrain_field()
    elements: str = _elements_field()
    max_atoms: int = _max_atoms_field()

    def picker(self) -> PickNext:
        return make_picker(greedy=True)

    def generate(self, model: Any, tokenizer: Any, prompts: Sequence[str], n: int, *,
                 generator: torch.Generator | None = None, indices: Sequence[Sequence[int]] | None = None,
                 **kwargs: Any) -> list[list[Sample]]:
        """Decode each prompt once and return that text for every requested sample."""
        wanted = [list(range(n)) for _ in prompts] if indices is None else [list(i) for i in indices]
        keep = [p for p, idx in enumerate(wanted) if idx]
        once = super().generate(model, tokenizer, [prompts[p] for p in keep], 1, generator=generator,
                                indices=[[wanted[p][0]] for p in keep], **kwargs)
        results: list[list[Sample]] = [[] for _ in prompts]
        for p, (sample,) in zip(keep, once):
            results[p] = [attrs.evolve(sample, extra={**sample.extra, "index": i}) for i in wanted[p]]
        return results
