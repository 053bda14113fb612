"""A model's data card: what it saw in training, so a request outside that can be flagged.

The card lists the elements, space groups and numbers of formula units (Z) of the training
CIFs, the largest cell (atoms) and the longest CIF (tokens), the dataset names and the
number of structures. ``crystalforge train`` computes it from the tokenized dataset and
stores it in the checkpoint under :data:`CHECKPOINT_KEY` as plain dicts, lists, strings and
ints (a ``weights_only`` load reads it; CrystaLLM's loaders ignore the extra key). A
checkpoint without one (CrystaLLM's) has an *unknown* card, which never warns.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import CheckpointError, DataError

log = logging.getLogger(__name__)

#: the checkpoint key holding the card
CHECKPOINT_KEY = "data_card"
#: the format tag of :meth:`DataCard.to_dict`
CARD_FORMAT = "crystalforge-data-card/1"
#: the embedded default model's card, beside its checkpoint
EMBEDDED_CARD = Path(__file__).resolve().parent.parent / "assets" / "default_model" / "data_card.json"

# tokens of a CIF in the canonical training form: a fixed part, one atom-properties row and
# formula entries per element, one row per symmetry-distinct site. Fitted on the default
# model's 4,655 training CIFs (Perov-5, Carbon-24): no CIF is shorter than this estimate,
# and it is 4.5 tokens short on average (20 at most)
_TOKENS_FIXED = 131
_TOKENS_PER_ELEMENT = 29
_TOKENS_PER_SITE = 32

#: train.bin is scanned in chunks of this many tokens
_CHUNK = 1 << 24

_SPLIT_NAMES = {"train", "val", "valid", "validation", "test", "all", "data", "cifs"}
_SUFFIXES = (".tar.gz", ".pkl.gz", ".csv", ".tgz", ".tar", ".pkl", ".gz")


@dataclass
class DataCard:
    """What a model saw in training. ``known`` is False for a checkpoint without a card.

    ``elements``, ``space_groups`` and ``z_values`` map each value to the number of
    training structures with it.
    """

    known: bool = True
    datasets: list[str] = field(default_factory=list)
    n_structures: int = 0
    elements: dict[str, int] = field(default_factory=dict)
    space_groups: dict[str, int] = field(default_factory=dict)
    z_values: dict[int, int] = field(default_factory=dict)
    max_atoms: int = 0
    max_tokens: int = 0

    @classmethod
    def unknown(cls) -> "DataCard":
        """Return the card of a model whose training data is not recorded."""
        return cls(known=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the card as plain JSON/``weights_only``-safe values (Z keys as strings)."""
        if not self.known:
            return {"format": CARD_FORMAT, "known": False}
        return {
            "format": CARD_FORMAT, "known": True, "datasets": list(self.datasets),
            "n_structures": int(self.n_structures),
            "elements": {str(k): int(v) for k, v in sorted(self.elements.items())},
            "space_groups": {str(k): int(v) for k, v in sorted(self.space_groups.items())},
            "z_values": {str(k): int(v) for k, v in sorted(self.z_values.items())},
            "max_atoms": int(self.max_atoms), "max_tokens": int(self.max_tokens),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "DataCard":
        """Return the card stored by :meth:`to_dict`; None gives the unknown card.

        Raises:
            DataError: ``data`` is not a card of a known format.
        """
        if data is None:
            return cls.unknown()
        if not isinstance(data, Mapping) or data.get("format") != CARD_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise DataError(f"not a data card (format {found!r}; expected {CARD_FORMAT!r})")
        if not data.get("known", True):
            return cls.unknown()
        try:
            return cls(
                known=True, datasets=[str(d) for d in data.get("datasets", [])],
                n_structures=int(data.get("n_structures", 0)),
                elements={str(k): int(v) for k, v in data.get("elements", {}).items()},
                space_groups={str(k): int(v) for k, v in data.get("space_groups", {}).items()},
                z_values={int(k): int(v) for k, v in data.get("z_values", {}).items()},
                max_atoms=int(data.get("max_atoms", 0)), max_tokens=int(data.get("max_tokens", 0)),
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise DataError(f"malformed data card: {exc}") from None

    def merged(self, other: "DataCard") -> "DataCard":
        """Return the card of a model trained on both cards' data (unknown if either is)."""
        if not (self.known and other.known):
            return DataCard.unknown()
        if self.to_dict() == other.to_dict():  # the same data seen again
            return DataCard.from_dict(self.to_dict())
        return DataCard(
            known=True, datasets=list(dict.fromkeys([*self.datasets, *other.datasets])),
            n_structures=self.n_structures + other.n_structures,
            elements=dict(Counter(self.elements) + Counter(other.elements)),
            space_groups=dict(Counter(self.space_groups) + Counter(other.space_groups)),
            z_values=dict(Counter(self.z_values) + Counter(other.z_values)),
            max_atoms=max(self.max_atoms, other.max_atoms), max_tokens=max(self.max_tokens, other.max_tokens),
        )

    def summary(self) -> str:
        """Return one line describing the card (``unknown training data`` when unknown)."""
        if not self.known:
            return "unknown training data"
        zs = sorted(self.z_values)
        z_text = f"Z {zs[0]}-{zs[-1]}" if zs else "no Z"
        return (f"{_datasets_text(self)}: {self.n_structures:,} structures, {len(self.elements)} elements, "
                f"{len(self.space_groups)} space groups, {z_text}, up to {self.max_atoms} atoms "
                f"and {self.max_tokens:,} tokens per CIF")


def _datasets_text(card: DataCard) -> str:
    return ", ".join(card.datasets) if card.datasets else "unnamed data"


# --- computing a card ----------------------------------------------------------------------

_DATA_RE = re.compile(r"^data_(\S+)", re.M)
_SUM_RE = re.compile(r"^_chemical_formula_sum[ \t]+'?([^'\n]+?)'?[ \t]*$", re.M)
_SG_RE = re.compile(r"^_symmetry_space_group_name_H-M[ \t]+'?([^'\n]+?)'?[ \t]*$", re.M)
_Z_RE = re.compile(r"^_cell_formula_units_Z[ \t]+(\d+)", re.M)
_COUNT_RE = re.compile(r"([A-Z][a-z]?)[ \t]*(\d+(?:\.\d+)?)?")


def _formula_counts(formula: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for symbol, amount in _COUNT_RE.findall(formula):
        counts[symbol] = counts.get(symbol, 0.0) + (float(amount) if amount else 1.0)
    return counts


def dataset_name(source: str | os.PathLike) -> str:
    """Return a short dataset name for a source path: ``data/perov_5/val.csv`` gives ``perov_5``."""
    path = Path(str(source).rstrip("/\\"))
    name = path.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.lower() in _SPLIT_NAMES and path.parent.name:
        return path.parent.name
    return name or str(source)


def card_from_texts(cifs: list[tuple[str, int]], datasets: list[str]) -> DataCard:
    """Return the card of training CIF texts given as ``(text, token count)`` pairs.

    Each CIF contributes its ``data_`` or ``_chemical_formula_sum`` formula, its
    ``_symmetry_space_group_name_H-M`` symbol and its ``_cell_formula_units_Z``. The text
    needs to reach only as far as ``_cell_formula_units_Z``.
    """
    elements: Counter[str] = Counter()
    space_groups: Counter[str] = Counter()
    z_values: Counter[int] = Counter()
    max_atoms = max_tokens = 0
    for text, n_tokens in cifs:
        max_tokens = max(max_tokens, int(n_tokens))
        found = _SUM_RE.search(text) or _DATA_RE.search(text)
        counts = _formula_counts(found.group(1)) if found else {}
        elements.update(counts.keys())
        max_atoms = max(max_atoms, int(round(sum(counts.values()))))
        if (sg := _SG_RE.search(text)) is not None:
            space_groups[sg.group(1).strip()] += 1
        if (z := _Z_RE.search(text)) is not None:
            z_values[int(z.group(1))] += 1
    return DataCard(known=True, datasets=list(datasets), n_structures=len(cifs), elements=dict(elements),
                    space_groups=dict(space_groups), z_values=dict(z_values), max_atoms=max_atoms,
                    max_tokens=max_tokens)


def card_from_dataset(dataset_dir: str | os.PathLike, datasets: list[str] | None = None) -> DataCard:
    """Return the card of the training split of a tokenized dataset folder.

    Reads ``train.bin``, ``starts.pkl`` and ``meta.pkl`` (CrystaLLM's layout) and decodes
    each CIF's header up to ``_cell_formula_units_Z``. Dataset names are ``datasets`` when
    given, else the sources recorded in the folder's ``manifest.json``, else the folder name.

    Raises:
        DataError: a file is missing or unusable.
    """
    import numpy as np

    from ..data.tokenize import BIN_DTYPE, load_meta, load_starts
    from ..cif.tokenizer import SG_SUFFIX

    folder = Path(dataset_dir)
    bin_path = folder / "train.bin"
    if not bin_path.is_file():
        raise DataError(f"{folder}: no train.bin; point to a tokenized dataset folder")
    meta = load_meta(folder / "meta.pkl")
    itos_map = meta.get("itos")
    if not isinstance(itos_map, Mapping):
        raise DataError(f"{folder / 'meta.pkl'}: no 'itos' table to decode train.bin with")
    itos = np.array([str(itos_map.get(i, "")).removesuffix(SG_SUFFIX) for i in range(int(meta["vocab_size"]))],
                    dtype=object)
    ids = np.memmap(bin_path, dtype=BIN_DTYPE, mode="r") if bin_path.stat().st_size else np.zeros(0, BIN_DTYPE)
    if len(ids) and int(ids.max()) >= len(itos):
        raise DataError(f"{bin_path}: token id {int(ids.max())} is outside meta.pkl's vocabulary")
    starts_path = folder / "starts.pkl"
    if starts_path.is_file():
        starts = load_starts(starts_path)
    else:  # CIFs begin at their data_ token
        data_id = next((i for i, token in enumerate(itos) if token == "data_"), -1)
        starts = np.flatnonzero(np.asarray(ids) == data_id)
    ends = np.append(starts[1:], len(ids)).astype(np.int64)[: len(starts)]
    # decode each CIF only up to a little past its _cell_formula_units_Z line
    z_id = next((i for i, token in enumerate(itos) if token == "_cell_formula_units_Z"), -1)
    z_positions = np.concatenate([np.flatnonzero(ids[i:i + _CHUNK] == z_id) + i for i in range(0, len(ids), _CHUNK)]
                                 + [np.array([np.iinfo(np.int64).max], dtype=np.int64)])
    z_after = z_positions[np.searchsorted(z_positions, starts)]
    stops = np.where(z_after < ends, np.minimum(z_after + 16, ends), ends)
    heads = [("".join(itos[ids[start:stop]]), end - start)
             for start, stop, end in zip(starts.tolist(), stops.tolist(), ends.tolist())]
    return card_from_texts(heads, datasets if datasets is not None else _recorded_datasets(folder))


def _recorded_datasets(folder: Path) -> list[str]:
    try:
        sources = json.loads((folder / "manifest.json").read_text()).get("sources") or []
    except (OSError, ValueError, AttributeError):
        sources = []
    names = [dataset_name(s) for s in sources if isinstance(s, str)]
    return list(dict.fromkeys(names)) or [folder.resolve().name]


# --- reading a card ---------------------------------------------------------------------------


def card_from_checkpoint(ckpt: Mapping[str, Any]) -> DataCard:
    """Return the card stored in a checkpoint dict; unknown when it has none or it is unreadable."""
    data = ckpt.get(CHECKPOINT_KEY)
    if data is None:
        return DataCard.unknown()
    try:
        return DataCard.from_dict(data)
    except DataError as exc:
        log.warning("ignoring the checkpoint's data card: %s", exc)
        return DataCard.unknown()


def embedded_data_card() -> DataCard:
    """Return the data card of the embedded default model (``assets/default_model/data_card.json``).

    Raises:
        CheckpointError: the card file is missing or malformed.
    """
    try:
        return DataCard.from_dict(json.loads(EMBEDDED_CARD.read_text()))
    except (OSError, ValueError, DataError) as exc:
        raise CheckpointError(f"cannot read the embedded model's data card {EMBEDDED_CARD}: {exc}") from None


def load_data_card(path: str | os.PathLike | None = None) -> DataCard:
    """Return the data card of a checkpoint (a ``ckpt.pt`` or its folder); None: the embedded model.

    Raises:
        CheckpointError: the checkpoint is missing or unreadable.
    """
    from .checkpoint import DEFAULT_MODEL_DIR, load_checkpoint, resolve_checkpoint_path

    if path is None or str(path) == "":
        return embedded_data_card()
    file = resolve_checkpoint_path(path)
    if file.resolve() == (DEFAULT_MODEL_DIR / "ckpt.pt").resolve():
        return embedded_data_card()
    return card_from_checkpoint(load_checkpoint(file))


# --- warnings ------------------------------------------------------------------------------


def estimate_cif_tokens(cell_counts: Mapping[str, int], n_sites: int | None = None) -> int:
    """Return about how many tokens a CIF of this cell takes in the training form.

    ``n_sites`` is the number of symmetry-distinct sites; by default one per element, which
    makes the estimate a lower bound.
    """
    n_elements = len(cell_counts)
    sites = n_elements if n_sites is None else max(int(n_sites), n_elements)
    return _TOKENS_FIXED + _TOKENS_PER_ELEMENT * n_elements + _TOKENS_PER_SITE * sites


def reach_warnings(card: DataCard, formula: Mapping[str, float] | str,
                   spacegroup: str | int | None = None) -> list[str]:
    """Return one short line per element, space group or cell size outside what the model saw.

    ``formula`` is the cell to generate (``"Na4Cl4"`` or ``{"Na": 4, "Cl": 4}``). Empty for an
    unknown card and for a request inside the training data.

    Raises:
        CompositionError: the formula cannot be read.
        SpaceGroupError: unknown space group.
    """
    from ..cif.extract import normalize_space_group
    from ..cif.wyckoff import cell_counts

    counts = cell_counts(formula)
    symbol = normalize_space_group(spacegroup) if spacegroup not in (None, "") else None
    if not card.known:
        return []
    data = _datasets_text(card)
    lines = [f"the model never saw {element} in training (its data: {data}; {len(card.elements)} elements)"
             for element in counts if element not in card.elements]
    if symbol is not None and symbol not in card.space_groups:
        lines.append(f"the model never saw space group {symbol} in training "
                     f"(its data: {data}; {len(card.space_groups)} space groups)")
    atoms = sum(counts.values())
    if atoms > card.max_atoms:
        lines.append(f"the model never saw a cell of {atoms} atoms in training (its largest: {card.max_atoms})")
    else:
        tokens = estimate_cif_tokens(counts)
        if card.max_tokens and tokens > card.max_tokens:
            lines.append(f"a CIF of this cell needs at least about {tokens} tokens; the longest the model "
                         f"saw had {card.max_tokens}")
    return lines


#: the numbers of formula units CrystaLLM's web service tries when none is given
DEFAULT_Z_SCAN = (1, 2, 3, 4, 6, 8)


def z_candidates(reduced_counts: Mapping[str, float] | str, spacegroup: str | int | None = None,
                 card: DataCard | None = None, z_values: tuple[int, ...] = DEFAULT_Z_SCAN,
                 max_atoms: int | None = None) -> list[int]:
    """Return the Z values to spread candidates over when the user gives none, ascending.

    Those of ``z_values`` whose cell (``reduced_counts`` times Z) fits ``spacegroup`` (see
    :func:`crystalforge.cif.wyckoff.feasible_z`; any Z fits without a space group) and has at
    most ``max_atoms`` atoms, by default the largest cell of a known ``card``. When none of
    ``z_values`` fits, the three smallest Z up to :data:`~crystalforge.cif.wyckoff.DEFAULT_MAX_Z`
    that do. Empty when no Z fits at all (:func:`~crystalforge.cif.wyckoff.infeasibility_reason`
    says why).

    Raises:
        CompositionError: the formula cannot be read.
        SpaceGroupError: unknown space group.
    """
    from ..cif.wyckoff import DEFAULT_MAX_Z, cell_counts, feasible_z

    counts = cell_counts(reduced_counts)
    if max_atoms is None and card is not None and card.known and card.max_atoms:
        max_atoms = card.max_atoms
    atoms = sum(counts.values())

    def fitting(zs) -> list[int]:
        if spacegroup in (None, ""):
            return [z for z in sorted(set(zs)) if z >= 1 and (max_atoms is None or z * atoms <= max_atoms)]
        return feasible_z(counts, spacegroup, zs, max_atoms=max_atoms)

    return fitting(z_values) or fitting(range(1, DEFAULT_MAX_Z + 1))[:3]


__all__ = [
    "DEFAULT_Z_SCAN",
    "CARD_FORMAT",
    "CHECKPOINT_KEY",
    "DataCard",
    "card_from_checkpoint",
    "card_from_dataset",
    "card_from_texts",
    "dataset_name",
    "embedded_data_card",
    "estimate_cif_tokens",
    "load_data_card",
    "reach_warnings",
    "z_candidates",
]
