"""Logits processors: masks that keep generated CIF text plausible.

Three constraints, usable alone or together (strategy option ``constrain``: one name, a
comma-separated list, ``both`` for composition + grammar, ``all`` for the three):

``composition``
    Element tokens absent from the prompt's ``data_`` formula are masked at every generated
    position. Element tokens only ever stand for chemical elements in the canonical CIF
    form (space groups have their own ``_sg`` tokens), so this only bites where a symbol
    may appear: the generated atom-properties block, the formula lines and the atom-site
    loop.

``grammar``
    A light line grammar of the canonical CIF form: after a numeric key such as
    ``_cell_length_a`` a space and one number (digits, at most one ``.``; integers for
    ``_symmetry_Int_Tables_number`` and ``_cell_formula_units_Z``); after the space-group
    key one space-group token then a newline; a loop header key or ``loop_`` is followed
    by a newline; outside loop rows a line starts with a key or ``loop_``; each row of
    the atom-site loop holds one field per header key, typed by the key (element symbol,
    label such as ``Ca0``, integer multiplicity, decimal coordinates and occupancy), the
    last one ending the line; the CIF may end (empty line) only after the atom-site loop
    has rows.

``stoichiometry``
    What the prompt's ``data_`` formula decides is written as it decides it: the
    ``_chemical_formula_structural`` (reduced formula), ``_chemical_formula_sum`` and
    ``_cell_formula_units_Z`` values are forced token by token (exactly what pymatgen's
    ``CifWriter`` writes for that formula), and in the atom-site loop the multiplicities
    of each element's sites add up to the element's count: a site may not claim more
    atoms than its element has left, an element with none left starts no row, and the
    CIF cannot end while atoms are missing. The model still chooses the cell, the
    sites' Wyckoff multiplicities and every coordinate.

De novo prompts (``data_`` alone, ``crystalforge run --unconditional`` / ``--system``):
while the model writes the ``data_`` line, ``grammar`` keeps it in the training form
(element symbols in rising electronegativity, each once, each with a count); when the
line ends, ``composition`` and ``stoichiometry`` follow the formula written as they
follow a prompt's. Two settings apply whatever ``constrain`` says: ``elements`` (a
chemical system, ``Li-Fe-P-O``: every other element token is masked at every position,
never relaxed) and ``max_atoms`` (the counts of a ``data_`` line the model writes add up
to at most that).

A processor is bound to a batch with ``start(row_prompts)`` and then follows each row
token by token (see :class:`crystalforge.search.decode.BoundProcessor`). Masks never
remove every token of a row: if they would, the row is left unconstrained for that step.
"""

from __future__ import annotations

from typing import Sequence

import attrs
import torch

from ..cif.composition import parse_system
from .grammar import (FREE, LineState, Mask, Stoichiometry, TokenClasses, first_line, prompt_elements,
                      token_group)

#: the individual constraints; the ``constrain`` option names one, several (comma-separated)
#: or an alias of :data:`CONSTRAINT_ALIASES`
CONSTRAINT_NAMES = ("composition", "grammar", "stoichiometry")
CONSTRAINT_ALIASES = {"none": (), "both": ("composition", "grammar"), "all": CONSTRAINT_NAMES}
#: values of the ``constrain`` option of the sampling strategies (lists of names work too)
CONSTRAINTS = ("none", *CONSTRAINT_NAMES, "both", "all")

@attrs.define
class CIFConstraints:
    """Logits processor masking out-of-composition elements, CIF grammar errors and/or
    text that disagrees with the prompt's formula.

    Args:
        tokenizer: the tokenizer whose ids the model emits.
        composition: mask element tokens absent from each row's prompt formula.
        grammar: apply the line grammar (see the module docstring).
        stoichiometry: force the formula lines and Z, and make site multiplicities add up
            to the prompt's formula (see the module docstring).
        elements: the chemical system: element symbols allowed anywhere in the text, every
            other element token masked at every position (empty: no restriction).
        max_atoms: most atoms the formula of a data_ line the model writes may add up to
            (0: no bound).
    """

    tokenizer: object
    composition: bool = True
    grammar: bool = True
    stoichiometry: bool = False
    elements: tuple[str, ...] = attrs.field(default=(), converter=lambda v: _symbols(v))
    max_atoms: int = 0
    classes: TokenClasses = attrs.field(init=False)
    _rows: dict = attrs.field(init=False, factory=dict, repr=False)
    _stoichiometries: dict = attrs.field(init=False, factory=dict, repr=False)
    _system: torch.Tensor | None = attrs.field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        self.classes = TokenClasses.from_tokenizer(self.tokenizer)
        if self.elements:
            self._system = torch.ones(self.classes.vocab_size, dtype=torch.bool)
            self._system[list(self.classes.elements)] = False
            self._system[[self.tokenizer.stoi[e] for e in self.elements]] = True

    def mask_row(self, mask: Mask) -> torch.Tensor:
        """Return the ``[V]`` bool row allowing the token groups of ``mask`` (cached)."""
        row = self._rows.get(mask)
        if row is None:
            row = torch.zeros(self.classes.vocab_size, dtype=torch.bool)
            for name in mask:
                row[list(token_group(self.classes, name))] = True
            self._rows[mask] = row
        return row

    def stoichiometry_of(self, prompt_ids: Sequence[int]) -> Stoichiometry | None:
        """Return the (cached) :class:`Stoichiometry` of a prompt, None when it has no formula."""
        key = first_line(prompt_ids, self.classes.newline)
        if key not in self._stoichiometries:
            self._stoichiometries[key] = Stoichiometry.from_prompt(prompt_ids, self.tokenizer)
        return self._stoichiometries[key]

    def start(self, row_prompts: Sequence[Sequence[int]]) -> "BoundCIFConstraints":
        """Return the per-batch state for rows with these prompts (one entry per row)."""
        return BoundCIFConstraints(self, [list(p) for p in row_prompts])


class BoundCIFConstraints:
    """:class:`CIFConstraints` following one batch of rows.

    A row whose prompt ends inside its ``data_`` line (``data_`` alone: de novo
    generation) gets the composition and stoichiometry constraints of the formula it
    writes, from the newline that ends that line on.
    """

    def __init__(self, spec: CIFConstraints, row_prompts: list[list[int]]) -> None:
        self.spec = spec
        self.classes = spec.classes
        newline = self.classes.newline
        self.states = []
        # tokens of each row's data_ line while it is still being written, else None
        self.pending: list[list[int] | None] = []
        for prompt in row_prompts:
            complete = newline in prompt
            self.pending.append(None if complete else list(prompt))
            stoichiometry = spec.stoichiometry_of(prompt) if spec.stoichiometry and complete else None
            state = LineState(self.classes, stoichiometry, max_atoms=spec.max_atoms)
            for token in prompt:
                state.feed(token)
            self.states.append(state)
        self.element_mask: torch.Tensor | None = None
        if spec.composition:
            forbidden = torch.zeros(len(row_prompts), self.classes.vocab_size, dtype=torch.bool)
            for row, prompt in enumerate(row_prompts):
                if newline in prompt:
                    self._only(forbidden, row, prompt_elements(prompt, self.classes))
            self.element_mask = ~forbidden  # [B, V] True = allowed

    def _only(self, forbidden: torch.Tensor, row: int, allowed: set[int]) -> None:
        if allowed:  # no formula: nothing to constrain by
            forbidden[row, list(self.classes.elements)] = True
            forbidden[row, sorted(allowed)] = False

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        allowed = torch.ones_like(logits, dtype=torch.bool)
        if self.spec.grammar or self.spec.stoichiometry or self.spec.max_atoms:
            allowed = torch.stack([self._row_mask(s) for s in self.states]).to(logits.device)
        if self.element_mask is not None:
            allowed = allowed & self.element_mask.to(logits.device)
        # never leave a row with nothing to pick
        empty = ~allowed.any(dim=-1)
        if bool(empty.any()):
            allowed[empty] = True
        if self.spec._system is not None:  # the chemical system is never relaxed
            allowed = allowed & self.spec._system.to(logits.device)
            empty = ~allowed.any(dim=-1)
            if bool(empty.any()):
                allowed[empty] = self.spec._system.to(logits.device)
        return logits.masked_fill(~allowed, float("-inf"))

    def _row_mask(self, state: LineState) -> torch.Tensor:
        row = self.spec.mask_row(state.mask() if self.spec.grammar else FREE)
        for extra in (state.stoichiometry_mask(), state.data_line_mask()):
            if extra is not None:
                row = row & self.spec.mask_row(extra)
        return row

    def advance(self, tokens: list[int]) -> None:
        for row, (state, token) in enumerate(zip(self.states, tokens)):
            state.feed(token)
            line = self.pending[row]
            if line is None:
                continue
            line.append(token)
            if token == self.classes.newline:  # the row has written its formula: follow it
                self.pending[row] = None
                if self.element_mask is not None:
                    forbidden = ~self.element_mask
                    self._only(forbidden, row, prompt_elements(line, self.classes))
                    self.element_mask = ~forbidden
                if self.spec.stoichiometry:
                    stoichiometry = self.spec.stoichiometry_of(line)
                    if stoichiometry is not None:
                        state.adopt(stoichiometry)

    def keep(self, rows: list[int]) -> None:
        self.states = [self.states[r] for r in rows]
        self.pending = [self.pending[r] for r in rows]
        if self.element_mask is not None:
            self.element_mask = self.element_mask[rows]


def _symbols(elements: str | Sequence[str] | None) -> tuple[str, ...]:
    """Return the symbols of a chemical system given as ``"Li-Fe-P-O"`` or as a list."""
    if isinstance(elements, str):
        return parse_system(elements) if elements.strip() else ()
    return tuple(elements or ())


def parse_constraints(constrain: str) -> tuple[str, ...]:
    """Return the constraint names a ``constrain`` value stands for, in canonical order.

    ``constrain`` is an alias (``none``, ``both``, ``all``), one name of
    :data:`CONSTRAINT_NAMES`, or a comma-separated list of names.

    Raises:
        ValueError: an unknown name.
    """
    names: set[str] = set()
    for part in (p.strip() for p in str(constrain).split(",")):
        if part in CONSTRAINT_ALIASES:
            names.update(CONSTRAINT_ALIASES[part])
        elif part in CONSTRAINT_NAMES:
            names.add(part)
        else:
            raise ValueError(f"constrain must be one of {', '.join(CONSTRAINTS)} or a comma-separated list of "
                             f"{', '.join(CONSTRAINT_NAMES)}; got {constrain!r}")
    return tuple(n for n in CONSTRAINT_NAMES if n in names)


def make_processor(constrain: str, tokenizer, elements: str | Sequence[str] = "",
                   max_atoms: int = 0) -> CIFConstraints | None:
    """Return the processor for a ``constrain`` value, a chemical system and an atom bound,
    or None when nothing is constrained.

    ``elements`` (a chemical system such as ``"Li-Fe-P-O"`` or a list of symbols) and
    ``max_atoms`` apply whatever ``constrain`` says (``none`` included).

    Raises:
        ValueError: ``constrain`` names an unknown constraint (see :func:`parse_constraints`).
        CompositionError: ``elements`` is not a chemical system the tokenizer can write.
    """
    names = parse_constraints(constrain)
    symbols = _symbols(elements)
    if not names and not symbols and not max_atoms:
        return None
    return CIFConstraints(tokenizer, composition="composition" in names, grammar="grammar" in names,
                          stoichiometry="stoichiometry" in names, elements=symbols, max_atoms=int(max_atoms or 0))
