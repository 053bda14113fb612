"""The CIF line grammar the logits masks follow, token by token.

:class:`TokenClasses` groups the vocabulary by role; :class:`LineState` follows one row's
tokens and says which token groups may come next (the ``grammar`` constraint) and how
many atoms each element has left (the ``stoichiometry`` constraint, from the prompt's
formula: :class:`Stoichiometry`). :mod:`crystalforge.search.logits` turns these into masks.
"""

from __future__ import annotations

import re
from typing import Sequence

import attrs

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

# A mask is named by the token groups it allows (see token_group): group names, or single
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
    data: int = -1  # the ``data_`` token (-1: the vocabulary has none)
    #: element id -> Pauling electronegativity (NaN for the noble gases pymatgen gives none)
    electronegativity: dict[int, float] = attrs.field(factory=dict)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "TokenClasses":
        itos = tokenizer.itos
        stoi = tokenizer.stoi
        elements = tuple(i for i, t in enumerate(itos) if re.fullmatch(r"[A-Z][a-z]?", t))
        return cls(
            vocab_size=len(itos),
            elements=elements,
            digits=tuple(i for i, t in enumerate(itos) if re.fullmatch(r"[0-9]", t)),
            space_groups=tuple(i for i, t in enumerate(itos) if t.endswith("_sg")),
            keywords={i: t for i, t in enumerate(itos) if t.startswith("_")},
            space=stoi[" "], newline=stoi["\n"], dot=stoi["."], minus=stoi["-"], plus=stoi["+"],
            quote=stoi["'"], loop=stoi["loop_"],
            digit_ids=tuple(stoi[str(d)] for d in range(10)),
            digit_value={stoi[str(d)]: d for d in range(10)},
            data=stoi.get("data_", -1),
            electronegativity=_electronegativities(itos, elements),
        )


def _electronegativities(itos: Sequence[str], elements: Sequence[int]) -> dict[int, float]:
    import warnings

    from pymatgen.core.periodic_table import Element

    values = {}
    with warnings.catch_warnings():  # pymatgen warns for the noble gases, which have none
        warnings.simplefilter("ignore")
        for i in elements:
            try:
                values[i] = float(Element(itos[i]).X)
            except ValueError:
                values[i] = float("nan")
    return values


def token_group(classes: TokenClasses, name: str | int) -> tuple[int, ...]:
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


class LineState:
    """Where one row stands in the CIF grammar, updated token by token."""

    __slots__ = ("classes", "first", "last", "length", "section", "in_header", "site_rows", "loop_keys",
                 "column", "column_length", "has_dot", "stoichiometry", "forced", "remaining", "row_element",
                 "field_value", "data_line", "formula_used", "formula_total", "max_atoms", "formula_last")

    def __init__(self, classes: TokenClasses, stoichiometry: "Stoichiometry | None" = None,
                 max_atoms: int = 0) -> None:
        self.classes = classes
        self.stoichiometry = stoichiometry
        # the data_ line, while the model writes it (de novo prompts end in ``data_``)
        self.data_line = False
        self.formula_used: frozenset[int] = frozenset()  # elements the data_ line has named
        self.formula_total = 0  # atoms of the data_ line's finished element counts
        self.formula_last: int | None = None  # the data_ line's last element
        self.max_atoms = max_atoms  # most atoms the data_ line may add up to (0: no bound)
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
        if self.data_line:
            self._feed_data_line(token)
        elif token == c.data and self.length == 0 and self.last is None:
            self.data_line = True
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

    def _feed_data_line(self, token: int) -> None:
        c = self.classes
        if token in c.digit_value:
            return  # the count is read from field_value when it ends
        if self.field_value:
            self.formula_total += self.field_value
        if token == c.newline:
            self.data_line = False
        else:
            self.formula_used = self.formula_used | {token}
            self.formula_last = token

    def adopt(self, stoichiometry: "Stoichiometry") -> None:
        """Follow ``stoichiometry`` from now on (a data_ line the model has just written)."""
        self.stoichiometry = stoichiometry
        self.remaining = dict(stoichiometry.counts)

    def data_line_mask(self) -> Mask | None:
        """Return what may come next on a data_ line the model writes (None: not on one).

        The line is element symbols each followed by a whole count (no leading zero, each
        element once, in order of rising electronegativity), as the training form writes
        the cell formula (pymatgen's ``Composition.formula``); with ``max_atoms`` the
        counts add up to at most that.
        """
        if not self.data_line:
            return None
        c = self.classes
        budget = self.max_atoms - self.formula_total if self.max_atoms else 10**9
        floor = c.electronegativity.get(self.formula_last, float("nan")) if self.formula_last is not None else None
        # NaN compares false, so a noble gas neither sets nor obeys the order
        elements = tuple(e for e in c.elements if e not in self.formula_used
                         and (floor is None or not c.electronegativity[e] < floor))
        if self.last == c.data:
            return elements
        if self.last not in c.digit_value:  # after an element symbol: its count, at least 1
            return tuple(c.digit_ids[d] for d in range(1, min(9, budget) + 1))
        value = self.field_value
        digits = tuple(c.digit_ids[d] for d in range(10) if value * 10 + d <= budget)
        return (*digits, *(elements if value < budget else ()), "newline")

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


def first_line(prompt_ids: Sequence[int], newline: int) -> tuple[int, ...]:
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

        text = tokenizer.decode(list(first_line(prompt_ids, tokenizer.stoi["\n"]))).strip()
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
