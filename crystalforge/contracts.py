"""The plugin contracts: one typed Protocol per plugin kind, and the result types.

A plugin imports what it implements from the top level::

    import crystalforge as cf

    class MyScorer:                      # structural: no base class needed
        lower_is_better = True
        def score(self, cif: str) -> float: ...

Each Protocol lists the members crystalforge calls. Members marked *optional* get a
default from the kernel: the registry hands out components through
:func:`crystalforge.components.adapt`, so callers never test for them (a scorer without
``score_many`` still has one). A
component is checked against its contract when the registry creates it; a missing
member is one line naming the component, its plugin and the member
(:func:`check_contract`).

The result types live where they are produced and are re-exported here: :class:`Sample`
(what a search strategy returns), :class:`ScoreResult` (what a scorer may say beyond its
number), :class:`CheckResult`, :class:`ValidationContext` and
:class:`ValidityReport` (what validators receive and build).
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from .errors import PluginError
from .scoring.result import ScoreResult, as_score_result
from .search.base import Sample
from .validation.report import CheckResult, ValidationContext, ValidityReport

__all__ = [
    "Tokenizer", "KVCache", "ModelConfig", "LanguageModel", "SearchStrategy", "Scorer", "Validator",
    "Sample", "ScoreResult", "CheckResult", "ValidationContext", "ValidityReport", "Table",
    "CONTRACTS", "OPTIONAL", "required_members", "missing_member", "check_contract",
]

#: A table a strategy hands back (``artifacts()``): rows of column -> value, written as CSV.
Table = Sequence[Mapping[str, Any]]


# -- tokenizer ---------------------------------------------------------------------------
class Tokenizer(Protocol):
    """Turns CIF text into token ids and back.

    ``itos`` lists the tokens in id order and ``stoi`` maps them back; ``newline_id`` is
    the id of ``"\\n"`` (two in a row end a CIF, which is how generation stops).
    ``vocab_hash`` is a short stable hash of ``itos``, stored in checkpoints so a model
    is never used with a tokenizer it was not trained with. The sampling strategies'
    logits constraints read ``itos``/``stoi`` by token text (element symbols, CIF
    keywords, ``<symbol>_sg`` space groups, as CrystaLLM's vocabulary has them); with a
    vocabulary of other tokens, sample with ``constrain=none``.
    """

    itos: Sequence[str]
    stoi: Mapping[str, int]
    newline_id: int
    vocab_hash: str

    @property
    def vocab_size(self) -> int:
        """Number of tokens (``len(itos)``)."""

    def tokenize(self, text: str) -> list[str]:
        """Return the tokens of ``text``."""

    def encode(self, text: str) -> list[int]:
        """Return the token ids of ``text``."""

    def decode(self, ids: Iterable[int]) -> str:
        """Return the text of ``ids``."""


# -- language model ----------------------------------------------------------------------
class KVCache(Protocol):
    """Keys and values of decoded columns, created by :meth:`LanguageModel.new_cache`.

    Rows may hold left-padded prompts of different lengths; ``length`` is the number of
    filled columns (the same for every row). Search strategies branch with ``clone()``
    (MCTS) and reshape the batch with ``select(rows)`` (expand a prompt to ``n`` rows,
    drop finished rows). The built-in :class:`crystalforge.model.cache.KVCache` also
    exposes its tensors (``keys``, ``values``, ``valid``, ``positions``).
    """

    length: int

    @property
    def batch_size(self) -> int:
        """Number of rows held."""

    @property
    def max_len(self) -> int:
        """Number of columns the cache can hold."""

    def clone(self) -> "KVCache":
        """Return an independent copy."""

    def select(self, rows: Any) -> "KVCache":
        """Return a new cache holding ``rows`` (a sequence or LongTensor; rows may repeat)."""


class ModelConfig(Protocol):
    """The sizes a model must state: its context window and vocabulary size."""

    block_size: int
    vocab_size: int


class LanguageModel(Protocol):
    """An autoregressive model over token ids, with a KV-cache API for batched decoding.

    The built-in ``gpt`` model (:class:`crystalforge.model.gpt.GPT`, a
    ``torch.nn.Module`` in eval mode) is the reference. ``parameters()`` tells where the
    model lives (the decoding engine puts its tensors on the first parameter's device).
    """

    config: ModelConfig

    def parameters(self) -> Iterable[Any]:
        """Return the model's parameters (``torch.nn.Module.parameters``)."""

    def forward(self, idx: Any, targets: Any = None) -> tuple[Any, Any]:
        """Return ``(logits [B, T, V], loss or None)`` for the whole sequence ``idx [B, T]``."""

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """Return an empty cache of ``batch_size`` rows (``max_len`` columns, default ``block_size``)."""

    def forward_cached(self, idx: Any, cache: KVCache, pad_mask: Any = None) -> Any:
        """Append ``idx [B, T]`` to ``cache`` and return their logits ``[B, T, V]``.

        ``pad_mask [B, T]`` (bool) is False on left padding, which is never attended to
        and does not count as a position.
        """


# -- search strategy ---------------------------------------------------------------------
class SearchStrategy(Protocol):
    """Decodes candidate CIF texts from a model, batched and KV-cached.

    ``generate`` returns, for each prompt, its samples (tree searches may return more or
    fewer than ``n``: the best they found). Every random number comes from
    ``generator`` (a seeded CPU ``torch.Generator``). ``scorer`` (an adapted
    :class:`Scorer`) and ``validate(text) -> ValidityReport`` are given to strategies
    that steer by them (MCTS); sampling strategies ignore them.

    Optional:

    - ``generate(..., indices=...)``: one list of sample indices per prompt, replacing
      ``range(n)``. A strategy that accepts it is asked for exactly the samples a run
      still needs (resumable runs, ``torchrun`` shards) and must make a sample depend
      only on (seed, prompt, index). See :func:`crystalforge.components.accepts_indices`.
    - ``artifacts() -> Mapping[str, Table]``: extra tables the strategy produced (MCTS:
      ``"results"``, every scored rollout); a run folder writes each as
      ``<name>.csv``. Default: none (:func:`crystalforge.components.search_artifacts`).
    """

    def generate(
        self,
        model: LanguageModel,
        tokenizer: Tokenizer,
        prompts: Sequence[str],
        n: int,
        *,
        generator: Any,
        device: Any = "cpu",
        batch_size: int = 32,
        scorer: "Scorer | None" = None,
        validate: Callable[[str], ValidityReport] | None = None,
        progress: bool = True,
    ) -> list[list[Sample]]:
        """Return ``n`` samples per prompt, prompt by prompt."""

    def artifacts(self) -> Mapping[str, Table]:
        """Return extra tables by name (optional; default: none)."""
        return {}


# -- scorer ------------------------------------------------------------------------------
class Scorer(Protocol):
    """Gives a CIF a number (an energy, a property), and says which direction is good.

    Required: ``score(cif) -> float`` (``nan`` when the CIF cannot be scored; never
    raise for a bad CIF) and ``lower_is_better`` (energies: True).

    Optional, with kernel defaults: ``unit`` (shown beside scores, e.g. ``"eV/atom"``;
    default ``""``: unitless), ``score_many(cifs)`` (default: loops over ``score``;
    override to batch), ``score_details(cifs)`` (one :class:`ScoreResult` per CIF: the
    score plus extra columns and the relaxed structure when the scorer relaxes; default:
    ``score_many``'s numbers with nothing else) and ``close()`` (release sockets, models;
    default: nothing). ``score``/``score_many`` always return plain numbers (search
    strategies steer by them); only generation asks for details. A class may subclass
    this Protocol explicitly to inherit the defaults.
    """

    lower_is_better: bool
    unit: str = ""

    def score(self, cif: str) -> float:
        """Return the score of one CIF text, or ``nan`` when it cannot be scored."""

    def score_many(self, cifs: Iterable[str]) -> list[float]:
        """Return one score per CIF, in order (optional; default: loops over ``score``)."""
        return [self.score(cif) for cif in cifs]

    def score_details(self, cifs: Iterable[str]) -> list[ScoreResult]:
        """Return one :class:`ScoreResult` per CIF, in order (optional; default: the numbers of
        ``score_many`` with no extras and no structure)."""
        return [as_score_result(value) for value in self.score_many(cifs)]

    def close(self) -> None:
        """Release resources held by the scorer (optional, idempotent; default: nothing)."""


# -- validator ---------------------------------------------------------------------------
class Validator(Protocol):
    """One check of a CIF that joins every candidate's validity report.

    ``context`` is shared by all checks of one CIF (``context.structure`` is parsed once;
    ``None`` with ``context.parse_error`` when unreadable). Never raise for a bad CIF:
    return ``CheckResult(name, passed=False, message=why)``. Options are the fields of
    the validator's attrs class or dataclass, settable as ``CHECK.KEY=VALUE``.
    """

    def check(self, cif: str, context: ValidationContext) -> CheckResult:
        """Return the outcome of the check on ``cif``."""


#: The contract of each plugin kind (the keys of :data:`crystalforge.registry.KINDS`).
CONTRACTS: dict[str, type] = {
    "tokenizer": Tokenizer,
    "model": LanguageModel,
    "search": SearchStrategy,
    "scorer": Scorer,
    "validator": Validator,
}

#: Members a component may leave out: the kernel supplies them (:func:`crystalforge.components.adapt`).
OPTIONAL: dict[str, frozenset[str]] = {
    "tokenizer": frozenset(),
    "model": frozenset(),
    "search": frozenset({"artifacts"}),
    "scorer": frozenset({"unit", "score_many", "score_details", "close"}),
    "validator": frozenset(),
}


def _protocol_members(protocol: type) -> dict[str, Any]:
    """Return ``{member: annotation or None}`` declared in a Protocol's own body."""
    hints = typing.get_type_hints(protocol)
    members: dict[str, Any] = {name: hints.get(name) for name in protocol.__dict__.get("__annotations__", {})}
    for name, value in protocol.__dict__.items():
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property)):
            members.setdefault(name, None)
    return members


def required_members(kind: str) -> tuple[str, ...]:
    """Return the members a component of ``kind`` must have, in declaration order.

    Members typed by another contract Protocol (a model's ``config``) are listed with
    their own members as dotted names (``config.block_size``).
    """
    return _required(CONTRACTS[kind], OPTIONAL[kind])


def _required(protocol: type, optional: frozenset[str]) -> tuple[str, ...]:
    names: list[str] = []
    for name, hint in _protocol_members(protocol).items():
        if name in optional:
            continue
        names.append(name)
        if inspect.isclass(hint) and getattr(hint, "_is_protocol", False):
            names.extend(f"{name}.{sub}" for sub in _required(hint, frozenset()))
    return tuple(names)


def missing_member(kind: str, obj: Any) -> str | None:
    """Return the first required member of ``kind`` that ``obj`` lacks, or None."""
    methods = {name for name, value in CONTRACTS[kind].__dict__.items() if inspect.isfunction(value)}
    for dotted in required_members(kind):
        target: Any = obj
        for part in dotted.split("."):
            try:
                target = getattr(target, part)
            except Exception:  # noqa: BLE001 - a property that raises is as good as missing
                return dotted
        if dotted in methods and not callable(target):
            return dotted
    return None


def check_contract(kind: str, obj: Any, name: str = "?", plugin: str = "?") -> None:
    """Raise :class:`PluginError` when ``obj`` lacks a required member of its kind's contract.

    Raises:
        PluginError: ``"scorer 'foo' from plugin 'bar' lacks required member 'score'"``.
    """
    member = missing_member(kind, obj)
    if member is not None:
        raise PluginError(f"{kind} '{name}' from plugin '{plugin}' lacks required member '{member}'")
