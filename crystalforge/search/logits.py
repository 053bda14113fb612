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

A processor is bound to a batch with ``start(row_prompts)`` and then follows each row
token by token (see :class:`crystalforge.search.decode.BoundProcessor`). Masks never
remove every token of a row: if they would, the row is left unconstrained for that step.
"""

from __future__ import annotations

import re
from typing import Sequence

import attrs
import torch

#: the individual constraints; the ``constrain`` option names one, several (comma-separated)
#: or an alias of :data:`CONSTRAINT_ALIASES`
CONSTRAINT_NAMES = ("composition", "grammar", "stoichiometry")
CONSTRAINT_ALIASES = {"none": (), "both": ("composition", "grammar"), "all": CONSTRAINT_NAMES}
#: values of the ``constrain`` option of the sampling strategies (lists of names work too)
CONSTRAINTS = ("none", *CONSTRAINT_NAMES, "both", "all")

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

# A mask is named by the token groups it allows (see _group): group names, or single
# token ids.
Mask = tuple[str | int, ...]
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
    digit_ids: tuple[int, ...] = ()  # id of the digit 0, 1, ..., 9
    digit_value: dict[int, int] = attrs.field(factory=dict)  # digit id -> its value

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
            digit_ids=tuple(stoi[str(d)] for d in range(10)),
            digit_value={stoi[str(d)]: d for d in range(10)},
        )


def _group(classes: TokenClasses, name: str | int) -> tuple[int, ...]:
    c = classes
    if isinstance(name, int):
        return (name,)
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
                 "column", "column_length", "has_dot", "stoichiometry", "forced", "remaining", "row_element",
                 "field_value")

    def __init__(self, classes: TokenClasses, stoichiometry: "Stoichiometry | None" = None) -> None:
        self.classes = classes
        self.stoichiometry = stoichiometry
        self.forced: list[int] = []  # tokens the rest of this line must be (stoichiometry)
        # atoms of each element (token id) not yet placed by a site row
        self.remaining: dict[int, int] = dict(stoichiometry.counts) if stoichiometry else {}
        self.row_element: int | None = None  # element of the current atom-site row
        self.field_value = 0  # integer value of the current field so far
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
        if self.forced:
            # a forced line is followed exactly; a row that left it (masks off) is let go
            self.forced = self.forced[1:] if token == self.forced[0] else []
        if token == c.newline:
            if self.length and self.section == "atom_site" and not self.in_header:
                self.site_rows += 1
                if self.column == self._multiplicity_column() and self.row_element in self.remaining:
                    self.remaining[self.row_element] -= self.field_value  # multiplicity was the last field
            self.first, self.last, self.length = None, token, 0
            self.column, self.column_length, self.has_dot = 0, 0, False
            return
        if self.length == 0:
            self.first = token
            self.row_element = None
            keyword = c.keywords.get(token)
            if self.stoichiometry is not None and token in self.stoichiometry.lines:
                self.forced = list(self.stoichiometry.lines[token])
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
        site_row = self.section == "atom_site" and not self.in_header
        if token == c.space:
            if site_row and self.column == self._multiplicity_column() and self.row_element in self.remaining:
                self.remaining[self.row_element] -= self.field_value
            self.column, self.column_length, self.has_dot = self.column + 1, 0, False
            self.field_value = 0
        else:
            if site_row and self.column == 0 and self.column_length == 0:
                self.row_element = token
            self.column_length += 1
            self.has_dot = self.has_dot or token == c.dot
            digit = c.digit_value.get(token)
            self.field_value = self.field_value * 10 + digit if digit is not None else 0
        self.last = token
        self.length += 1

    def _multiplicity_column(self) -> int | None:
        try:
            return self.loop_keys.index("_atom_site_symmetry_multiplicity")
        except ValueError:
            return None

    def stoichiometry_mask(self) -> Mask | None:
        """Return what the stoichiometry constraint allows next (None: no restriction)."""
        if self.stoichiometry is None:
            return None
        if self.forced:
            return (self.forced[0],)
        if self.section != "atom_site" or not self._typed_site_loop():
            return None
        c = self.classes
        left = tuple(sorted(e for e, n in self.remaining.items() if n > 0))
        if self.length == 0:
            if self.in_header:  # more header keys, or the first row (of an element with atoms left)
                return ("keys", *left)
            return left if left else ("newline",)
        if self.in_header or self.column != self._multiplicity_column():
            return None
        budget = self.remaining.get(self.row_element, 0) if self.row_element is not None else 0
        if budget <= 0:
            return None  # a row of an element the formula lacks: nothing sensible to enforce
        value = self.field_value if self.column_length else 0
        digits = tuple(c.digit_ids[d] for d in range(10)
                       if (self.column_length or d > 0) and value * 10 + d <= budget)
        ends = ("space",) if self.column_length and 1 <= value <= budget else ()
        return digits + ends if digits or ends else None

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


def _first_line(prompt_ids: Sequence[int], newline: int) -> tuple[int, ...]:
    end = next((i for i, t in enumerate(prompt_ids) if t == newline), len(prompt_ids))
    return tuple(prompt_ids[:end])


@attrs.frozen
class Stoichiometry:
    """What a prompt's ``data_`` formula fixes: atoms per element and the forced formula lines.

    Attributes:
        counts: element token id -> atoms of that element in the cell.
        lines: key token id -> the tokens that must follow the key on its line.
    """

    counts: dict[int, int]
    lines: dict[int, tuple[int, ...]]

    @classmethod
    def from_prompt(cls, prompt_ids: Sequence[int], tokenizer) -> "Stoichiometry | None":
        """Return the stoichiometry of the prompt's ``data_`` formula, or None without a readable one."""
        from ..cif.extract import parse_composition
        from ..errors import CompositionError

        text = tokenizer.decode(list(_first_line(prompt_ids, tokenizer.stoi["\n"]))).strip()
        if not text.startswith("data_"):
            return None
        try:
            composition = parse_composition(text[len("data_"):])
        except CompositionError:
            return None
        amounts = composition.get_el_amt_dict()
        if any(abs(a - round(a)) > 1e-6 or a < 1 for a in amounts.values()) or any(
                e not in tokenizer.stoi for e in amounts):
            return None
        reduced, units = composition.get_reduced_formula_and_factor()
        cell_formula = composition.formula  # CifWriter's _chemical_formula_sum, quoted when it has spaces
        values = {
            "_chemical_formula_structural": reduced,
            "_chemical_formula_sum": f"'{cell_formula}'" if " " in cell_formula else cell_formula,
            "_cell_formula_units_Z": str(int(round(units))),
        }
        return cls(
            counts={tokenizer.stoi[e]: int(round(a)) for e, a in amounts.items()},
            lines={tokenizer.stoi[key]: tuple(tokenizer.encode(f" {value}\n")) for key, value in values.items()},
        )


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
    """

    tokenizer: object
    composition: bool = True
    grammar: bool = True
    stoichiometry: bool = False
    classes: TokenClasses = attrs.field(init=False)
    _rows: dict = attrs.field(init=False, factory=dict, repr=False)
    _stoichiometries: dict = attrs.field(init=False, factory=dict, repr=False)

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

    def stoichiometry_of(self, prompt_ids: Sequence[int]) -> Stoichiometry | None:
        """Return the (cached) :class:`Stoichiometry` of a prompt, None when it has no formula."""
        key = _first_line(prompt_ids, self.classes.newline)
        if key not in self._stoichiometries:
            self._stoichiometries[key] = Stoichiometry.from_prompt(prompt_ids, self.tokenizer)
        return self._stoichiometries[key]

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
            state = _LineState(self.classes, spec.stoichiometry_of(prompt) if spec.stoichiometry else None)
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
        if self.spec.grammar or self.spec.stoichiometry:
            allowed = torch.stack([self._row_mask(s) for s in self.states]).to(logits.device)
        if self.element_mask is not None:
            allowed = allowed & self.element_mask.to(logits.device)
        # never leave a row with nothing to pick
        empty = ~allowed.any(dim=-1)
        if bool(empty.any()):
            allowed[empty] = True
        return logits.masked_fill(~allowed, float("-inf"))

    def _row_mask(self, state: _LineState) -> torch.Tensor:
        row = self.spec.mask_row(state.mask() if self.spec.grammar else FREE)
        extra = state.stoichiometry_mask()
        return row if extra is None else row & self.spec.mask_row(extra)

    def advance(self, tokens: list[int]) -> None:
        for state, token in zip(self.states, tokens):
            state.feed(token)

    def keep(self, rows: list[int]) -> None:
        self.states = [self.states[r] for r in rows]
        if self.element_mask is not None:
            self.element_mask = self.element_mask[rows]


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


def make_processor(constrain: str, tokenizer) -> CIFConstraints | None:
    """Return the processor for a ``constrain`` value, or None for ``"none"``.

    Raises:
        ValueError: ``constrain`` names an unknown constraint (see :func:`parse_constraints`).
    """
    names = parse_constraints(constrain)
    if not names:
        return None
    return CIFConstraints(tokenizer, composition="composition" in names, grammar="grammar" in names,
                          stoichiometry="stoichiometry" in names)
