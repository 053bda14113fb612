"""CrystaLLM-compatible CIF tokenizer.

Same tokens, same ids, same order as CrystaLLM's vocabulary (``assets/vocab.json``), so
published checkpoints and tokenized datasets work unchanged. Tokenizing:

1. runs of spaces and tabs collapse to one space;
2. a space-group symbol that ends the ``_symmetry_space_group_name_H-M`` line becomes
   its ``<symbol>_sg`` token (``Pm`` the group is not ``Pm`` the element);
3. the text is split by longest match against the vocabulary; any other run of word
   characters becomes one ``<unk>``, as does each of ``; ! ?``; anything else is dropped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from importlib import resources
from typing import Iterable, Sequence

import numpy as np

from ..errors import TokenizerError

UNK = "<unk>"
SG_SUFFIX = "_sg"
SPACE_GROUP_KEY = "_symmetry_space_group_name_H-M"


@functools.lru_cache(maxsize=1)
def load_vocabulary() -> tuple[str, ...]:
    """Return the CrystaLLM vocabulary, tokens in id order (371 tokens, ``<unk>`` last)."""
    data = json.loads(resources.files("crystalforge.assets").joinpath("vocab.json").read_text())
    return tuple(data["tokens"])


def space_group_symbols() -> tuple[str, ...]:
    """Return the space-group symbols the vocabulary knows (without the ``_sg`` suffix)."""
    return tuple(t[: -len(SG_SUFFIX)] for t in load_vocabulary() if t.endswith(SG_SUFFIX))


class CIFTokenizer:
    """Tokenizer over a fixed vocabulary, CrystaLLM-compatible by default.

    Args:
        tokens: the vocabulary in id order; the built-in CrystaLLM vocabulary when omitted.
    """

    def __init__(self, tokens: Sequence[str] | None = None) -> None:
        self.itos: tuple[str, ...] = tuple(tokens) if tokens is not None else load_vocabulary()
        if len(set(self.itos)) != len(self.itos):
            raise TokenizerError("vocabulary has duplicate tokens")
        if UNK not in self.itos:
            raise TokenizerError(f"vocabulary has no {UNK} token")
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        self.unk_id = self.stoi[UNK]
        self.newline_id = self.stoi["\n"]
        self.space_groups = tuple(t[: -len(SG_SUFFIX)] for t in self.itos if t.endswith(SG_SUFFIX))
        # Longest alternatives first: Python's regex alternation takes the first that
        # matches, so this is longest match against the vocabulary.
        vocab_tokens = sorted((t for t in self.itos if t != UNK), key=len, reverse=True)
        alternation = "|".join(re.escape(t) for t in vocab_tokens)
        self._token_re = re.compile(rf"{alternation}|\w+|[;!?]")
        groups = "|".join(re.escape(s) for s in sorted(self.space_groups, key=len, reverse=True))
        self._sg_re = re.compile(rf"({re.escape(SPACE_GROUP_KEY)} *)({groups})[ \t]*(?=\n|$)", re.M)
        self._blank_re = re.compile(r"[ \t]+")
        # Decoding table: _sg tokens decode to the bare symbol.
        self._decode_table = [
            t[: -len(SG_SUFFIX)] if t.endswith(SG_SUFFIX) else t for t in self.itos
        ]
        self.vocab_hash = vocabulary_hash(self.itos)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def normalize(self, text: str) -> str:
        """Return ``text`` as the tokenizer sees it before splitting.

        Blank runs collapse to one space and the space-group symbol of the H-M line is
        marked with its ``_sg`` suffix.
        """
        text = self._blank_re.sub(" ", text)
        return self._sg_re.sub(lambda m: f"{m.group(1)}{m.group(2)}{SG_SUFFIX}", text)

    def tokenize(self, text: str) -> list[str]:
        """Return the tokens of ``text``; unknown word runs and ``; ! ?`` become ``<unk>``."""
        stoi = self.stoi
        return [t if t in stoi else UNK for t in self._token_re.findall(self.normalize(text))]

    def encode(self, text: str) -> list[int]:
        """Return the token ids of ``text``."""
        stoi, unk = self.stoi, self.unk_id
        return [stoi.get(t, unk) for t in self._token_re.findall(self.normalize(text))]

    def encode_array(self, text: str) -> np.ndarray:
        """Return the token ids of ``text`` as a ``uint16`` array (the dataset format)."""
        return np.asarray(self.encode(text), dtype=np.uint16)

    def decode(self, ids: Iterable[int]) -> str:
        """Return the text of ``ids``; ``_sg`` tokens decode to the bare symbol.

        Raises:
            TokenizerError: an id outside the vocabulary.
        """
        table = self._decode_table
        size = len(table)
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < size:
                raise TokenizerError(f"token id {i} is outside the vocabulary (size {size})")
            out.append(table[i])
        return "".join(out)

    def normalized_text(self, text: str) -> str:
        """Return the text that ``decode(encode(text))`` gives when ``text`` has no ``<unk>``."""
        return self.decode(self.encode(text))

    def __repr__(self) -> str:
        return f"CIFTokenizer(vocab_size={self.vocab_size}, hash={self.vocab_hash})"


def vocabulary_hash(tokens: Sequence[str]) -> str:
    """Return a short stable hash of a vocabulary (token order included)."""
    return hashlib.sha256(json.dumps(list(tokens)).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> CIFTokenizer:
    """Return the shared CrystaLLM-compatible tokenizer instance."""
    return CIFTokenizer()
