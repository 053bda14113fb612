"""Logits processors: masks that keep generated CIF text plausible.

Two constraints, usable alone or together (strategy option ``constrain``):

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

A processor is bound to a batch with ``start(row_prompts)`` and then follows each row
token by token (see :class:`crystalforge.search.decode.BoundProcessor`). Masks never
remove every token of a row: if they would, the row is left unconstrained for that step.
"""

from __future__ import annotations

import re
from typing import Sequence

import attrs
import torch

#: values of the ``constrain`` option of the sampling strategies
CONSTRAINTS = ("none", "composition", "grammar", "both")

NUMERIC_KEYS = (
    "_cell_length_a", "_cell_length_b", "_cell_length_c",
    "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma",
    "_cell_volume", "_symmetry_Int_Tables_number", "_cell_formula_units_Z",
)
FORMULA_KEYS = ("_chemical_formula_sum", "_chemical_formula_structural")
SPACE_GROUP_KEY = "_symmetry_space_group_name_H-M"
LOOP_PREFIXES = {"_atom_site_": "atom_site", "_atom_type_": "atom_type", "_symmetry_equiv_pos_": "symops"}

INTEGER_KEYS = ("_symmetry_Int_Tables_number", "_cell_formula_units_Z")
#: what each column of the atom-site loop holds
SITE_COLUMNS = {
    "_atom_site_type_symbol": "element",
    "_atom_site_label": "label",
    "_atom_site_symmetry_multiplicity": "integer",
    "_atom_site_fract_x": "decimal",
    "_atom_site_fract_y": "decimal",
    "_atom_site_fract_z": "decimal",
    "_atom_site_occupancy": "decimal",
}

# A mask is named by the token groups it allows (see TokenClasses.group).
Mask = tuple[str, ...]
FREE: Mask = ("all",)


@attrs.frozen
class TokenClasses:
    """Token ids of the vocabulary grouped by their role in a CIF."""

    vocab_size: int
    elements: tuple[int, ...]
    digits: tuple[int, ...]
    space_groups: tuple[int, ...]
    keywords: dict[int, str]
    space: int
    newline: int
    dot: int
    minus: int
    plus: int
    quote: int
    loop: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "TokenClasses":
        itos = tokenizer.itos
        stoi = tokenizer.stoi
        return cls(
            vocab_size=len(itos),
            elements=tuple(i for i, t in enumerate(itos) if re.fullmatch(r"[A-Z][a-z]?", t)),
            digits=tuple(i for i, t in enumerate(itos) if re.fullmatch(r"[0-9]", t)),
            space_groups=tuple(i for i, t in enumerate(itos) if t.endswith("_sg")),
            keywords={i: t for i, t in enumerate(itos) if t.startswith("_")},
            space=stoi[" "], newline=stoi["\n"], dot=stoi["."], minus=stoi["-"], plus=stoi["+"],
            quote=stoi["'"], loop=stoi["loop_"],
        )


def _group(classes: TokenClasses, name: str) -> tuple[int, ...]:
    c = classes
    if name == "all":
        return tuple(range(c.vocab_size))
    if name == "keys":
        return tuple(c.keywords)
    if name == "sg_key":
        return tuple(i for i, t in c.keywords.items() if t == SPACE_GROUP_KEY)
    if name in ("elements", "digits", "space_groups"):
        return getattr(c, name)
    return (getattr(c, name),)  # single tokens: space, newline, dot, minus, plus, quote, loop


class _LineState:
    """Where one row stands in the CIF grammar, updated token by token."""

    __slots__ = ("classes", "first", "last", "length", "section", "in_header", "site_rows", "loop_keys",
                 "column", "column_length", "has_dot")

    def __init__(self, classes: TokenClasses) -> None:
        self.classes = classes
        self.first: int | None = None  # first token of the current line
        self.last: int | None = None
        self.length = 0  # tokens on the current line
        self.section: str | None = None  # loop we are in: atom_site, atom_type, symops
        self.in_header = False  # between loop_ and the loop's first data row
        self.site_rows = 0
        self.loop_keys: list[str] = []  # header keys of the current loop
        self.column = 0  # space-separated field of the current line
        self.column_length = 0  # tokens in that field so far
        self.has_dot = False  # that field has a decimal point

    def feed(self, token: int) -> None:
        c = self.classes
        if token == c.newline:
            if self.length and self.section == "atom_site" and not self.in_header:
                self.site_rows += 1
            self.first, self.last, self.length = None, token, 0
            self.column, self.column_length, self.has_dot = 0, 0, False
            return
        if self.length == 0:
            self.first = token
            keyword = c.keywords.get(token)
            if token == c.loop:
                self.section, self.in_header, self.loop_keys = None, True, []
            elif keyword is not None:
                section = next((s for p, s in LOOP_PREFIXES.items() if keyword.startswith(p)), None)
                if self.in_header and section is not None:
                    self.section = section  # another key of the loop header
                    self.loop_keys.append(keyword)
                else:  # a plain key line ends any loop
                    self.section, self.in_header, self.loop_keys = None, False, []
            else:
                self.in_header = False  # the loop's data rows begin
        if token == c.space:
            self.column, self.column_length, self.has_dot = self.column + 1, 0, False
        else:
            self.column_length += 1
            self.has_dot = self.has_dot or token == c.dot
        self.last = token
        self.length += 1

    def _typed_site_loop(self) -> bool:
        return bool(self.loop_keys) and self.loop_keys[0] == "_atom_site_type_symbol"

    def mask(self) -> Mask:
        """Return the token groups allowed next."""
        c = self.classes
        site_rows = self.section == "atom_site" and not self.in_header
        if self.length == 0:
            if site_rows:
                if not self._typed_site_loop():
                    return FREE
                return ("elements", "newline") if self.site_rows else ("elements",)
            if self.in_header:
                return ("keys", "elements", "digits")
            if self.section == "atom_type":
                return ("elements", "sg_key")
            if self.section == "symops":
                return ("keys", "loop", "digits")
            return ("keys", "loop")
        first = self.first
        keyword = c.keywords.get(first) if first is not None else None
        if first == c.loop or (keyword is not None and keyword.startswith(tuple(LOOP_PREFIXES))):
            return ("newline",)
        if keyword in NUMERIC_KEYS:
            if self.length == 1:
                return ("space",)
            if self.column_length == 0:
                return ("digits",)
            if keyword in INTEGER_KEYS or self.has_dot:
                return ("digits", "newline")
            return ("digits", "dot", "newline")
        if keyword == SPACE_GROUP_KEY:
            if self.length == 1:
                return ("space", "space_groups")
            if self.last == c.space:
                return ("space_groups",)
            return ("newline",)
        if keyword in FORMULA_KEYS:
            if self.length == 1:
                return ("space",)
            return ("elements", "digits", "space", "quote", "dot", "newline")
        if site_rows:
            return self._site_field()
        if self.section == "atom_type" and not self.in_header:
            return ("digits", "space", "dot", "minus", "plus", "newline")
        return FREE

    def _site_field(self) -> Mask:
        """The mask inside a row of the atom-site loop, by the column's type."""
        if not self._typed_site_loop():
            return FREE
        if self.column >= len(self.loop_keys):
            return ("newline",)
        kind = SITE_COLUMNS.get(self.loop_keys[self.column])
        end = "newline" if self.column == len(self.loop_keys) - 1 else "space"
        n = self.column_length
        if kind is None:
            return FREE
        if kind == "element":
            return ("elements",) if n == 0 else (end,)
        if kind == "label":  # element symbol then a number: Ca0, O2
            return ("elements",) if n == 0 else ("digits",) if n == 1 else ("digits", end)
        if kind == "integer":
            return ("digits",) if n == 0 else ("digits", end)
        if n == 0:  # decimal
            return ("digits", "minus")
        if self.last == self.classes.minus:
            return ("digits",)
        return ("digits", end) if self.has_dot else ("digits", "dot", end)


def prompt_elements(prompt_ids: Sequence[int], classes: TokenClasses) -> set[int]:
    """Return the element token ids on the prompt's first (``data_``) line."""
    elements = set(classes.elements)
    found = set()
    for token in prompt_ids:
        if token == classes.newline:
            break
        if token in elements:
            found.add(token)
    return found


@attrs.define
class CIFConstraints:
    """Logits processor masking out-of-composition elements and/or CIF grammar errors.

    Args:
        tokenizer: the tokenizer whose ids the model emits.
        composition: mask element tokens absent from each row's prompt formula.
        grammar: apply the line grammar (see the module docstring).
    """

    tokenizer: object
    composition: bool = True
    grammar: bool = True
    classes: TokenClasses = attrs.field(init=False)
    _rows: dict = attrs.field(init=False, factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        self.classes = TokenClasses.from_tokenizer(self.tokenizer)

    def mask_row(self, mask: Mask) -> torch.Tensor:
        """Return the ``[V]`` bool row allowing the token groups of ``mask`` (cached)."""
        row = self._rows.get(mask)
        if row is None:
            row = torch.zeros(self.classes.vocab_size, dtype=torch.bool)
            for name in mask:
                row[list(_group(self.classes, name))] = True
            self._rows[mask] = row
        return row

    def start(self, row_prompts: Sequence[Sequence[int]]) -> "BoundCIFConstraints":
        """Return the per-batch state for rows with these prompts (one entry per row)."""
        return BoundCIFConstraints(self, [list(p) for p in row_prompts])


class BoundCIFConstraints:
    """:class:`CIFConstraints` following one batch of rows."""

    def __init__(self, spec: CIFConstraints, row_prompts: list[list[int]]) -> None:
        self.spec = spec
        self.classes = spec.classes
        self.states = []
        for prompt in row_prompts:
            state = _LineState(self.classes)
            for token in prompt:
                state.feed(token)
            self.states.append(state)
        self.element_mask: torch.Tensor | None = None
        if spec.composition:
            forbidden = torch.zeros(len(row_prompts), self.classes.vocab_size, dtype=torch.bool)
            all_elements = torch.tensor(self.classes.elements, dtype=torch.long)
            for row, prompt in enumerate(row_prompts):
                allowed = prompt_elements(prompt, self.classes)
                if allowed:  # no formula in the prompt: nothing to constrain by
                    forbidden[row, all_elements] = True
                    forbidden[row, sorted(allowed)] = False
            self.element_mask = ~forbidden  # [B, V] True = allowed

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        allowed = torch.ones_like(logits, dtype=torch.bool)
        if self.spec.grammar:
            allowed = torch.stack([self.spec.mask_row(s.mask()) for s in self.states]).to(logits.device)
        if self.element_mask is not None:
            allowed = allowed & self.element_mask.to(logits.device)
        # never leave a row with nothing to pick
        empty = ~allowed.any(dim=-1)
        if bool(empty.any()):
            allowed[empty] = True
        return logits.masked_fill(~allowed, float("-inf"))

    def advance(self, tokens: list[int]) -> None:
        for state, token in zip(self.states, tokens):
            state.feed(token)

    def keep(self, rows: list[int]) -> None:
        self.states = [self.states[r] for r in rows]
        if self.element_mask is not None:
            self.element_mask = self.element_mask[rows]

    def masks(self) -> list[Mask]:
        """Return the token groups each row may take next (for tests and debugging)."""
        return [s.mask() for s in self.states]


def make_processor(constrain: str, tokenizer) -> CIFConstraints | None:
    """Return the processor for a ``constrain`` value, or None for ``"none"``.

    Raises:
        ValueError: ``constrain`` is not one of :data:`CONSTRAINTS`.
    """
    if constrain not in CONSTRAINTS:
        raise ValueError(f"constrain must be one of {', '.join(CONSTRAINTS)}, got {constrain!r}")
    if constrain == "none":
        return None
    return CIFConstraints(
        tokenizer, composition=constrain in ("composition", "both"), grammar=constrain in ("grammar", "both")
    )
