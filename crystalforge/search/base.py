"""What every search strategy returns, and the call it answers.

A strategy is a component (attrs class whose fields are its options) with::

    generate(model, tokenizer, prompts, n, *, generator, device="cpu", batch_size=32,
             scorer=None, validate=None, progress=True) -> list[list[Sample]]

returning, for each prompt, ``n`` samples (tree searches may return fewer or more: the
best candidates they found). ``scorer`` and ``validate`` are given to strategies that
steer by them (MCTS); sampling strategies ignore them. A strategy may also have
``artifacts() -> {file name: rows}``: extra tables the run folder writes as CSV (MCTS:
``results.csv``, every scored rollout).
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define
class Sample:
    """One generated CIF text, before post-processing.

    Attributes:
        text: the decoded text, prompt included, up to and including the end marker.
        n_tokens: number of tokens generated after the prompt.
        finished: whether the end-of-CIF marker was reached (else ``max_new_tokens`` ran out).
        extra: strategy-specific facts (MCTS: ``score``, ``reward``, ``simulation``, ...).
    """

    text: str
    n_tokens: int
    finished: bool = True
    extra: dict[str, Any] = attrs.field(factory=dict)
