"""Seeded CIF mutants and a crash-proof harness that runs them through crystalforge.

Used by ``tests/test_fuzz.py`` (a small run in CI) and ``bench/fuzz.py`` (a large one).
Each mutation family takes a real CIF and a ``random.Random`` and returns hostile text:
byte flips, truncation, lost or duplicated lines, NaN/inf, zero/negative/huge numbers,
degenerate angles, huge atom counts, unicode, binary, very long lines, absurd symmetry
operators. :func:`run_mutants` feeds them to a child process (``python fuzzing.py child``)
one call at a time and watches it, so a SIGSEGV, a hang or an escaped exception is seen
and attributed to its mutant; the child is restarted after each death. The child only
uses the public API (``load_tokenizer``, ``preprocess_cif``, ``postprocess_cif``,
``validate``, ``CrystalforgeError``), so the same harness measures older versions too.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
TARGETS = ("tokenize", "preprocess", "postprocess", "validate")

_NUMBER_RE = re.compile(r"(?<![\w.])-?\d+\.\d+|(?<=\s)\d+(?=\s|$)")
_CELL_KEYS = ("_cell_length_a", "_cell_length_b", "_cell_length_c",
              "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")


def source_cifs(per_file: int = 4) -> list[str]:
    """Return real CIFs from tests/data: the first ``per_file`` of Perov-5 and of Carbon-24."""
    csv.field_size_limit(2**31 - 1)
    out = []
    for name in ("perov_5_head200.csv", "carbon_24_head200.csv"):
        with open(DATA / name, newline="") as handle:
            for i, row in enumerate(csv.DictReader(handle)):
                if i >= per_file:
                    break
                out.append(row["cif"])
    return out


# -- mutation families -------------------------------------------------------------------------

def _replace_number(rng: random.Random, text: str, choices: list[str]) -> str:
    spots = list(_NUMBER_RE.finditer(text))
    if not spots:
        return text + rng.choice(choices)
    for _ in range(rng.randint(1, 3)):
        spot = rng.choice(spots)
        text = text[: spot.start()] + rng.choice(choices) + text[spot.end():]
        spots = list(_NUMBER_RE.finditer(text)) or spots[:0]
        if not spots:
            break
    return text


def _set_field(text: str, key: str, value: str) -> str:
    return re.sub(rf"({re.escape(key)}[ \t]+)\S+", lambda m: m.group(1) + value, text, count=1)


def byte_flips(rng, text):
    data = bytearray(text.encode("utf-8"))
    for _ in range(rng.randint(1, 12)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return data.decode("latin-1")


def truncation(rng, text):
    return text[: rng.randrange(len(text))]


def line_loss(rng, text):
    lines = text.splitlines()
    for _ in range(rng.randint(1, 6)):
        if lines:
            del lines[rng.randrange(len(lines))]
    return "\n".join(lines) + "\n"


def line_duplication(rng, text):
    lines = text.splitlines()
    k = rng.randrange(len(lines))
    return "\n".join(lines[:k] + [lines[k]] * rng.choice([2, 5, 50, 2000]) + lines[k:]) + "\n"


def nan_inf(rng, text):
    return _replace_number(rng, text, ["nan", "inf", "-inf", "NaN", "Infinity", "1e309", "-1e400", "nan(3)"])


def zero_negative(rng, text):
    text = _replace_number(rng, text, ["0", "0.0", "-0.0", "-4.2793", "-1", "-90.0"])
    if rng.random() < 0.5:
        text = _set_field(text, rng.choice(_CELL_KEYS[:3]), rng.choice(["0", "-3.5", "0.0000001"]))
    return text


def huge_numbers(rng, text):
    return _replace_number(rng, text, ["1e300", "9" * 400, "1e-300", "123456789012345678901234567890.5",
                                       "4" + "0" * 60, "1e35", "0." + "0" * 300 + "1"])


def degenerate_angles(rng, text):
    angles = rng.choice([("0", "90", "90"), ("180", "90", "90"), ("-90", "90", "90"), ("120", "120", "120"),
                         ("60", "60", "180"), ("1e-9", "90", "90"), ("179.99999", "90", "90"), ("360", "90", "90"),
                         ("90", "90", "0.0001"), ("45", "45", "90")])
    for key, value in zip(_CELL_KEYS[3:], angles):
        text = _set_field(text, key, value)
    return text


def huge_atom_counts(rng, text):
    choice = rng.randrange(4)
    if choice == 0:  # thousands of site rows
        lines = text.rstrip("\n").splitlines()
        return "\n".join(lines + [lines[-1]] * rng.choice([600, 3000, 6000])) + "\n"
    if choice == 1:
        return _set_field(text, "_cell_formula_units_Z", rng.choice(["1000000000", "0", "-1", "99999"]))
    if choice == 2:  # formula counts
        return re.sub(r"(_chemical_formula_sum\s+')([A-Z][a-z]?)\d*", lambda m: m.group(1) + m.group(2) + "1000000",
                      text, count=1)
    return re.sub(r"^(\s*[A-Z][a-z]?\s+\S+\s+)\d+", lambda m: m.group(1) + "100000", text, count=3, flags=re.M)


_UNICODE = ["é", "Å", "\u202e", "\ufeff", "\u0301", "１", "５", "．", "😀", "\u2028", "\u00a0", "ß", "İ", "\udcff"]


def unicode_text(rng, text):
    if rng.random() < 0.3:  # fullwidth digits: Python's float() reads them
        return text.translate({ord(str(d)): chr(0xFF10 + d) for d in range(10)})
    chars = list(text)
    for _ in range(rng.randint(1, 10)):
        chars.insert(rng.randrange(len(chars) + 1), rng.choice(_UNICODE))
    return "".join(chars)


def binary(rng, text):
    blob = bytes(rng.randrange(256) for _ in range(rng.choice([16, 512, 4096])))
    if rng.random() < 0.3:
        return blob.decode("latin-1")
    k = rng.randrange(len(text))
    return text[:k] + blob.decode("latin-1") + text[k:]


def long_lines(rng, text):
    filler = rng.choice(["1 ", "x", " ", "0.1234 ", "'"]) * (rng.choice([3_000, 60_000, 180_000]) // 2)
    lines = text.splitlines()
    k = rng.randrange(len(lines))
    if rng.random() < 0.2:
        return text.replace("\n", " ")
    return "\n".join(lines[:k] + [lines[k] + filler] + lines[k + 1:]) + "\n"


def symmetry_operators(rng, text):
    choice = rng.randrange(3)
    if choice == 0:
        return text.replace("'x, y, z'", rng.choice(["'x+1e300, y, z'", "'x, y, z, w'", "'nan, y, z'", "'x/0, y, z'",
                                                     "'" + "x+" * 500 + "x, y, z'"]), 1)
    if choice == 1:
        extra = "".join(f"  {i}  'x, y, z+{i}/7'\n" for i in range(2, rng.choice([50, 400, 3000])))
        return text.replace("  1  'x, y, z'\n", "  1  'x, y, z'\n" + extra, 1)
    return _set_field(text, "_symmetry_space_group_name_H-M", rng.choice(["'Q 9 9'", "'P 1 1 1 1 1'", "''", "'\x00'"]))


FAMILIES: dict[str, Callable[[random.Random, str], str]] = {
    "byte_flips": byte_flips, "truncation": truncation, "line_loss": line_loss,
    "line_duplication": line_duplication, "nan_inf": nan_inf, "zero_negative": zero_negative,
    "huge_numbers": huge_numbers, "degenerate_angles": degenerate_angles, "huge_atom_counts": huge_atom_counts,
    "unicode": unicode_text, "binary": binary, "long_lines": long_lines, "symmetry_operators": symmetry_operators,
}


def make_mutants(seed: int, per_family: int, sources: list[str] | None = None) -> list[dict]:
    """Return ``per_family`` mutants of every family: ``{"id", "family", "text"}``, seeded."""
    rng = random.Random(seed)
    sources = sources or source_cifs()
    mutants = []
    for family, mutate in FAMILIES.items():
        for k in range(per_family):
            text = mutate(rng, rng.choice(sources))
            mutants.append({"id": f"{family}-{k}", "family": family, "text": text})
    return mutants


def impossible_cell(text: str) -> bool:
    """Whether the CIF states a physically impossible cell: a length or angle that is not a
    finite number, a non-positive length, an angle outside (0, 180), or zero volume."""
    values = []
    for key in _CELL_KEYS:
        match = re.search(rf"^[ \t]*{key}[ \t]+(\S+)", text, re.M)
        if match is None:
            return False  # no cell stated: nothing to judge from the text
        try:
            values.append(float(re.sub(r"\(\d+\)$", "", match.group(1))))
        except (ValueError, OverflowError):
            return True
    if not all(math.isfinite(v) for v in values) or min(values[:3]) <= 0:
        return True
    if not all(0 < v < 180 for v in values[3:]):
        return True
    ca, cb, cg = (math.cos(math.radians(v)) for v in values[3:])
    return 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg <= 1e-12


# -- the harness -------------------------------------------------------------------------------

def run_mutants(mutants: list[dict], targets=TARGETS, *, call_limit: float = 20.0, pythonpath: str | None = None,
                check_timeout: float = 10.0) -> list[dict]:
    """Run every (mutant, target) call in a watched child process; return one record each.

    A record: ``id``, ``family``, ``target``, ``outcome`` (``ok``, ``error``, ``escaped``,
    ``crash``, ``hang``), ``detail``, ``seconds`` and, for ``validate``, ``valid`` and
    ``impossible_cell``. A child that dies or runs a call past ``call_limit`` seconds is
    killed and restarted at the next call.
    """
    import tempfile

    calls = [(i, target) for i in range(len(mutants)) for target in targets]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8",
                                     errors="surrogatepass") as handle:
        json.dump({"mutants": mutants, "calls": calls, "check_timeout": check_timeout}, handle)
        job = handle.name
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    records: list[dict] = []
    start = 0
    try:
        while start < len(calls):
            child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "child", job, str(start)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0)
            current, began, buffer = None, None, b""
            ready_deadline = time.monotonic() + 120  # import + warm-up
            while True:
                limit = (began + call_limit) if began is not None else ready_deadline
                readable, _, _ = select.select([child.stdout], [], [], max(0.0, limit - time.monotonic()))
                if not readable:  # a call (or the start-up) ran past its limit
                    child.kill()
                    child.wait()
                    if current is None:
                        raise RuntimeError("fuzz child did not start")
                    records.append(_record(mutants, calls[current], "hang", f"over {call_limit:g} s", call_limit))
                    start = current + 1
                    break
                chunk = os.read(child.stdout.fileno(), 1 << 16)
                if not chunk:  # the child ended
                    code = child.wait()
                    if current is not None:  # died inside a call
                        records.append(_record(mutants, calls[current], "crash", f"exit code {code}",
                                               time.monotonic() - began))
                        start = current + 1
                    else:
                        start = len(calls)
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        message = json.loads(line)
                    except ValueError:  # not the protocol's: ignore
                        continue
                    if "start" in message:
                        current, began = message["start"], time.monotonic()
                    else:
                        records.append(message)
                        current, began = None, None
                        ready_deadline = time.monotonic() + call_limit
    finally:
        os.unlink(job)
    return records


def _record(mutants, call, outcome, detail, seconds):
    index, target = call
    return {"id": mutants[index]["id"], "family": mutants[index]["family"], "target": target,
            "outcome": outcome, "detail": detail, "seconds": round(seconds, 3)}


def _child(job: str, start: int) -> None:
    """Run calls ``start...`` of the job, printing a start line and a result line for each."""
    with open(job, encoding="utf-8", errors="surrogatepass") as handle:
        spec = json.load(handle)
    # the protocol gets its own copy of stdout; anything the code under test prints (or its
    # C libraries write to fd 1) goes to /dev/null instead of corrupting the protocol
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, "w")
    os.environ.setdefault("CRYSTALFORGE_CHECK_TIMEOUT", str(spec["check_timeout"]))
    import crystalforge as cf
    from crystalforge.errors import CrystalforgeError

    tokenizer = cf.load_tokenizer()
    targets = {target for _, target in spec["calls"][start:]}
    warm = source_cifs(1)[0]
    try:  # imports and caches before timing
        if targets & {"preprocess", "validate"}:
            warm = cf.preprocess_cif(warm)
        if "validate" in targets:
            cf.validate(cf.postprocess_cif(warm))
    except CrystalforgeError:  # a build whose preprocess fails still gets fuzzed
        pass
    functions = {"tokenize": tokenizer.encode, "preprocess": cf.preprocess_cif,
                 "postprocess": cf.postprocess_cif, "validate": cf.validate}
    for position in range(start, len(spec["calls"])):
        index, target = spec["calls"][position]
        mutant = spec["mutants"][index]
        out.write(json.dumps({"start": position}).encode() + b"\n")
        out.flush()
        began = time.monotonic()
        record = {"id": mutant["id"], "family": mutant["family"], "target": target}
        try:
            result = functions[target](mutant["text"])
            record.update(outcome="ok", detail="")
            if target == "validate":
                record["valid"] = bool(result.is_valid)
                record["impossible_cell"] = impossible_cell(mutant["text"])
        except CrystalforgeError as exc:
            record.update(outcome="error", detail=f"{type(exc).__name__}: {str(exc)[:160]}")
        except Exception as exc:  # noqa: BLE001 - exactly what the fuzz suite looks for
            record.update(outcome="escaped", detail=f"{type(exc).__name__}: {str(exc)[:160]}")
        record["seconds"] = round(time.monotonic() - began, 3)
        out.write(json.dumps(record).encode() + b"\n")
        out.flush()


def summarize(records: list[dict]) -> dict:
    """Return counts per outcome, the slowest call and the impossible cells called valid."""
    outcomes: dict[str, int] = {}
    for record in records:
        outcomes[record["outcome"]] = outcomes.get(record["outcome"], 0) + 1
    slowest = max(records, key=lambda r: r["seconds"], default=None)
    return {
        "calls": len(records), "outcomes": outcomes,
        "slowest": None if slowest is None else {k: slowest[k] for k in ("id", "target", "seconds")},
        "impossible_valid": [r["id"] for r in records if r.get("valid") and r.get("impossible_cell")],
        "failures": [r for r in records if r["outcome"] in ("crash", "hang", "escaped")],
    }


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "child":
    _child(sys.argv[2], int(sys.argv[3]))
