"""The crystal-structure-prediction benchmark (CDVAE / DiffCSP / CrystaLLM convention).

From a reference set, one prompt per structure: by default its composition only (the CSP
convention of CDVAE and DiffCSP), optionally with the space group detected at symprec 0.1;
``n`` candidates per prompt from any model and search strategy (or CIFs generated
elsewhere); match rate and RMSE for n=1 and the full n (see
:mod:`crystalforge.evaluation.metrics`).

References may be raw CIFs (a benchmark CSV such as the official Perov-5 / Carbon-24 test
splits) or canonical training CIFs (a ``test.tar.gz`` of ``crystalforge data prepare``). The
latter list one site per Wyckoff orbit under a collapsed ``x, y, z`` operator loop, so read
as they are they describe only the asymmetric unit (``Y1Si1O1`` for cubic ``YSiO3``): they
are restored to the full structure (:func:`crystalforge.cif.postprocess.postprocess_cif`)
before prompts are made or candidates matched. Saved candidates in that form (raw
generations not post-processed) are restored likewise.

Output folder layout (everything needed to recompute the numbers without the model)::

    OUT/references.tar.gz      the reference CIFs used (after --limit/--seed)
    OUT/prompts.csv            reference_id, composition, space_group, prompt
    OUT/generated/<id>/<k>.cif candidates, k = 000, 001, ... in generation order
    OUT/matches.csv            one row per reference
    OUT/report.json            settings and metrics

``crystalforge benchmark OUT/references.tar.gz --generated OUT/generated`` gives the same numbers.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import os
import random
import warnings
from pathlib import Path
from typing import Any, Sequence

import attrs

from ..cif.io import atomic_write_text, iter_cifs, write_cifs
from ..errors import DataError, OptionError
from .metrics import MATCH_TOLERANCES, MatchOutcome, match_task, parse_structure, summarize_matches

logger = logging.getLogger(__name__)

SYMPREC = 0.1
#: which formula a prompt gives: the canonical (CifWriter, conventional) cell the model was
#: trained on, as CrystaLLM's benchmark prompts do, or the reference's own cell (CDVAE/DiffCSP)
FORMULAS = ("canonical", "cell")


@attrs.define
class BenchmarkPrompt:
    """The prompt of one reference structure."""

    reference_id: str
    composition: str
    space_group: str | None
    prompt: str = ""
    error: str = ""


@attrs.define
class BenchmarkResult:
    """Per-reference outcomes, the metrics and the settings that produced them."""

    outcomes: list[dict[str, Any]]
    metrics: dict[str, Any]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "metrics": self.metrics}


def is_semi_symmetrized(cif: str) -> bool:
    """Return whether ``cif`` is in the canonical training form: a space group other than P1
    stated over an operator loop collapsed to the identity (or none at all), so that only
    the full operator list of the group makes it the whole structure."""
    from ..cif.extract import count_site_expansion, extract_space_group, normalize_space_group

    try:
        symbol = normalize_space_group(extract_space_group(cif))
    except Exception:  # no or unknown space group: nothing to restore
        return False
    return symbol != "P1" and count_site_expansion(cif)[1] == 1


def whole_structure_cif(cif: str) -> str:
    """Return a CIF (reference or candidate) that describes its whole structure.

    A canonical (semi-symmetrized) CIF gets its space group's full operator list back and
    loses its atom-properties block (:func:`crystalforge.cif.postprocess.postprocess_cif`);
    any other CIF is returned unchanged. Never raises: a CIF that cannot be restored is
    returned as it is (and fails later as an unreadable reference if it is one).
    """
    if not is_semi_symmetrized(cif):
        return cif
    from ..cif.postprocess import postprocess_cif

    try:
        return postprocess_cif(cif)
    except Exception as exc:
        logger.debug("cannot restore the symmetry operators of a reference: %s", exc)
        return cif


def load_references(path: str | os.PathLike, *, limit: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """Return ``(reference_id, cif)`` pairs from a benchmark CSV, folder or ``.tar.gz``.

    With ``limit``, a random subset of that size drawn with ``seed`` (kept in input order).
    Canonical training CIFs (collapsed operator loop) are restored to their full structure
    with :func:`whole_structure_cif`.

    Raises:
        DataError: the source is missing or holds no CIFs; duplicate reference ids.
        OptionError: ``limit`` is not positive.
    """
    references = [(name, text) for name, text in iter_cifs(path)]
    if not references:
        raise DataError(f"{path}: no reference CIFs found")
    ids = [name for name, _ in references]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{path}: duplicate reference id '{duplicate}'; ids must be unique")
    if limit is not None:
        if limit < 1:
            raise OptionError(f"--limit must be at least 1, got {limit}")
        if limit < len(references):
            chosen = sorted(random.Random(seed).sample(range(len(references)), limit))
            references = [references[i] for i in chosen]
    restored = [(rid, whole_structure_cif(cif)) for rid, cif in references]
    changed = sum(1 for (_, a), (_, b) in zip(references, restored) if a is not b)
    if changed:
        logger.info("%d of %d references were canonical training CIFs; full symmetry operators restored",
                    changed, len(restored))
    return restored


def reference_prompt(reference_id: str, cif: str, *, with_space_group: bool = True,
                     formula: str = "canonical") -> BenchmarkPrompt:
    """Return the prompt of one reference: its composition and detected space group.

    With ``formula="canonical"`` the composition is the ``data_`` formula of the
    reference's canonical (preprocessed) form -- the cell the model was trained on -- or,
    when preprocessing fails, the formula of the parsed cell; with ``"cell"`` always the
    formula of the reference's own cell. A canonical-form reference is read as its full
    structure (:func:`whole_structure_cif`). Never raises: a failure is kept in ``error``.
    """
    if formula not in FORMULAS:
        return BenchmarkPrompt(reference_id, "", None, error=f"unknown prompt formula {formula!r}")
    cif = whole_structure_cif(cif)
    try:
        structure = parse_structure(cif)
    except Exception as exc:
        return BenchmarkPrompt(reference_id, "", None, error=str(exc))
    composition = structure.composition.formula.replace(" ", "")
    if formula == "canonical":
        try:
            from ..cif.extract import extract_data_formula
            from ..cif.preprocess import preprocess_cif

            composition = extract_data_formula(preprocess_cif(cif))
        except Exception as exc:
            logger.debug("%s: preprocess failed (%s); using the cell formula", reference_id, exc)
    space_group = None
    if with_space_group:
        try:
            from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

            from ..cif.extract import normalize_space_group

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                symbol = SpacegroupAnalyzer(structure, symprec=SYMPREC).get_space_group_symbol()
            space_group = normalize_space_group(symbol)
        except Exception as exc:
            return BenchmarkPrompt(reference_id, composition, None, error=f"space group: {exc}")
    prompt = ""
    try:
        from ..cif.prompt import make_prompt

        prompt = make_prompt(composition, spacegroup=space_group)
    except Exception as exc:
        logger.debug("%s: make_prompt failed: %s", reference_id, exc)
    return BenchmarkPrompt(reference_id, composition, space_group, prompt)


def _prompt_task(item: tuple[str, str, bool, str]) -> BenchmarkPrompt:
    reference_id, cif, with_space_group, formula = item
    return reference_prompt(reference_id, cif, with_space_group=with_space_group, formula=formula)


def make_prompts(references: Sequence[tuple[str, str]], *, with_space_group: bool = False, formula: str = "canonical",
                 workers: int = 1, progress: bool = True) -> list[BenchmarkPrompt]:
    """Return one :class:`BenchmarkPrompt` per reference, in order (composition only by default)."""
    from ..parallel import imap_progress

    items = [(rid, cif, with_space_group, formula) for rid, cif in references]
    prompts = []
    for (rid, _, _, _), (ok, result) in zip(items, imap_progress(_prompt_task, items, workers=workers,
                                                               total=len(items), description="prompts",
                                                               progress=progress)):
        prompts.append(result if ok else BenchmarkPrompt(rid, "", None, error=str(result)))
    return prompts


def split_generated_name(name: str) -> str:
    """Return the reference id a generated CIF belongs to.

    ``<id>/<k>`` (sub-folder per reference), ``<id>__<k>`` or plain ``<id>``.
    """
    if "/" in name:
        return name.split("/", 1)[0]
    if "__" in name:
        return name.rsplit("__", 1)[0]
    return name


def load_generated(path: str | os.PathLike) -> dict[str, list[str]]:
    """Return ``{reference_id: [candidate cif, ...]}`` from a folder or ``.tar.gz`` of CIFs.

    Candidates of one reference keep the sorted order of their file names (the first is the
    n=1 candidate). Layouts: ``<id>/<k>.cif``, ``<id>__<k>.cif`` or ``<id>.cif``. Raw
    generations (collapsed operator loop) are restored with :func:`whole_structure_cif`.

    Raises:
        DataError: the source is missing or holds no CIFs.
    """
    generated: dict[str, list[str]] = {}
    for name, text in iter_cifs(path):
        generated.setdefault(split_generated_name(name), []).append(whole_structure_cif(text))
    if not generated:
        raise DataError(f"{path}: no generated CIFs found")
    return generated


def _call_generate(prompt: BenchmarkPrompt, *, n: int, model: Any, search: str, seed: int,
                   search_options: dict[str, Any], plugin_manager: Any, batch_size: int | None = None) -> list[str]:
    """Generate ``n`` candidates for one prompt with :func:`crystalforge.generate` (no validation: faster)."""
    from ..generation.api import generate

    accepted = inspect.signature(generate).parameters
    kwargs: dict[str, Any] = {"spacegroup": prompt.space_group, "n": n, "search": search, "model": model,
                              "seed": seed}
    optional = {"plugin_manager": plugin_manager, "search_options": search_options or None,
                "progress": False, "validate": False, "batch_size": batch_size}
    for key, value in optional.items():
        if key in accepted and value is not None:
            kwargs[key] = value
    candidates = generate(prompt.composition, **kwargs)
    return [getattr(c, "cif", "") or "" for c in candidates]


def generate_for_prompts(prompts: Sequence[BenchmarkPrompt], *, n: int, model: Any, search: str = "top-k",
                         seed: int = 0, search_options: dict[str, Any] | None = None, plugin_manager: Any = None,
                         out: Path | None = None, progress: bool = True,
                         batch_size: int | None = None) -> dict[str, list[str]]:
    """Generate ``n`` candidates per prompt; save them under ``out/generated`` as they come.

    Prompt ``i`` uses seed ``seed + i``, so a subset reruns identically. A prompt whose
    generation fails gets no candidates (counted unmatched) and the error is logged.
    """
    from tqdm.auto import tqdm

    generated: dict[str, list[str]] = {}
    for index, prompt in enumerate(tqdm(prompts, desc="generate", disable=not progress)):
        if prompt.error or not prompt.composition:
            generated[prompt.reference_id] = []
            continue
        try:
            cifs = _call_generate(prompt, n=n, model=model, search=search, seed=seed + index,
                                  search_options=search_options or {}, plugin_manager=plugin_manager,
                                  batch_size=batch_size)
        except OptionError:
            raise
        except Exception as exc:
            logger.warning("%s: generation failed: %s", prompt.reference_id, exc)
            cifs = []
        generated[prompt.reference_id] = cifs
        if out is not None:
            folder = out / "generated" / prompt.reference_id
            write_cifs(folder, [(f"{k:03d}", text) for k, text in enumerate(cifs)])
    return generated


def score_candidates(references: Sequence[tuple[str, str]], generated: dict[str, list[str]], *,
                     n: int | None = None, workers: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    """Return one match outcome (dict) per reference, using at most ``n`` candidates each."""
    from ..parallel import imap_progress

    items = [(rid, cif, list(generated.get(rid, []))[: n if n else None]) for rid, cif in references]
    outcomes = []
    for (rid, _, cands), (ok, result) in zip(items, imap_progress(match_task, items, workers=workers,
                                                                   total=len(items), description="match",
                                                                   progress=progress)):
        if ok:
            outcomes.append(result)
        else:
            outcomes.append(MatchOutcome(reference_id=rid, n_candidates=len(cands), error=str(result)).to_dict())
    return outcomes


def _matches_csv(outcomes: Sequence[dict[str, Any]], prompts: Sequence[BenchmarkPrompt] | None) -> str:
    by_id = {p.reference_id: p for p in prompts or ()}
    buffer = io.StringIO()
    columns = ["reference_id", "composition", "space_group", "n_candidates", "n_valid", "n_eligible",
               "matched_first", "rms_first", "matched", "rms_best", "best_index", "error"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for outcome in outcomes:
        prompt = by_id.get(outcome["reference_id"])
        row = dict(outcome)
        row["composition"] = prompt.composition if prompt else ""
        row["space_group"] = (prompt.space_group or "") if prompt else ""
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def _prompts_csv(prompts: Sequence[BenchmarkPrompt]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["reference_id", "composition", "space_group", "prompt", "error"])
    for p in prompts:
        writer.writerow([p.reference_id, p.composition, p.space_group or "", p.prompt, p.error])
    return buffer.getvalue()


def run_benchmark(
    references: str | os.PathLike,
    *,
    generated: str | os.PathLike | None = None,
    model: Any = None,
    model_path: str | None = None,
    search: str = "top-k",
    search_options: dict[str, Any] | None = None,
    n: int = 20,
    with_space_group: bool = False,
    formula: str = "canonical",
    limit: int | None = None,
    seed: int = 0,
    workers: int = 1,
    out: str | os.PathLike | None = None,
    plugin_manager: Any = None,
    progress: bool = True,
    device: str = "auto",
    batch_size: int | None = None,
) -> BenchmarkResult:
    """Run the CSP benchmark and return its outcomes and metrics (match rate, RMSE; n=1 and n).

    With ``generated`` (a folder or ``.tar.gz`` laid out per reference id) no model is used;
    otherwise ``n`` candidates per reference are generated with ``model`` (or the checkpoint
    at ``model_path`` on ``device`` (``auto``: CUDA when present), default: the embedded model) and ``search``. With ``out`` the
    references, prompts, candidates, per-reference matches and ``report.json`` are saved.
    Prompts hold the composition only (the CSP convention) unless ``with_space_group``;
    ``formula`` picks the canonical or the reference's own cell (see :data:`FORMULAS`).

    Raises:
        DataError: unreadable references or generated CIFs, or no generated CIF names a reference.
        OptionError: ``n`` or ``limit`` below 1, or an unknown ``formula``.
        CheckpointError: the model cannot be loaded.
    """
    if n < 1:
        raise OptionError(f"-n must be at least 1, got {n}")
    if formula not in FORMULAS:
        raise OptionError(f"unknown prompt formula {formula!r}; choose {' or '.join(FORMULAS)}")
    refs = load_references(references, limit=limit, seed=seed)
    out_dir = Path(out) if out is not None else None
    settings: dict[str, Any] = {
        "references": str(references), "n_references": len(refs), "n": n, "limit": limit, "seed": seed,
        "with_space_group": with_space_group, "formula": formula, "tolerances": MATCH_TOLERANCES,
    }
    prompts: list[BenchmarkPrompt] | None = None
    if generated is not None:
        candidates = load_generated(generated)
        known = {rid for rid, _ in refs}
        if not known & set(candidates):
            example = next(iter(candidates))
            raise DataError(f"{generated}: no generated CIF is named after a reference id "
                            f"(first: '{example}'); name them <id>/<k>.cif or <id>__<k>.cif")
        settings.update(generated=str(generated), model=None, search=None)
    else:
        if model is None:
            from ..generation.components import resolve_device
            from ..model.checkpoint import load_model

            model = load_model(model_path, device=resolve_device(device))
        prompts = make_prompts(refs, with_space_group=with_space_group, formula=formula, workers=workers,
                               progress=progress)
        settings.update(generated=None, model=model_path or "default", search=search,
                        search_options=search_options or {})
        candidates = generate_for_prompts(prompts, n=n, model=model, search=search, seed=seed,
                                          search_options=search_options, plugin_manager=plugin_manager,
                                          out=out_dir, progress=progress, batch_size=batch_size)
    outcomes = score_candidates(refs, candidates, n=n, workers=workers, progress=progress)
    # with saved candidates, report the n actually judged (fewer files than -n is common)
    metrics = summarize_matches(outcomes, n=None if generated is not None else n)
    result = BenchmarkResult(outcomes=outcomes, metrics=metrics, settings=settings)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_cifs(out_dir / "references.tar.gz", refs)
        if prompts is not None:
            atomic_write_text(out_dir / "prompts.csv", _prompts_csv(prompts))
        atomic_write_text(out_dir / "matches.csv", _matches_csv(outcomes, prompts))
        atomic_write_text(out_dir / "report.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def metrics_table(metrics: dict[str, Any]) -> list[str]:
    """Return the metrics as aligned text lines (match rate and RMSE for n=1 and n)."""

    def rmse(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    n = metrics["n"]
    return [
        f"references:        {metrics['n_references']}  (candidates: {metrics['n_candidates']})",
        f"{'':<18} {'n=1':>10} {f'n={n}':>10}",
        f"{'match rate':<18} {metrics['match_rate_n1']:>10.2%} {metrics['match_rate']:>10.2%}",
        f"{'RMSE':<18} {rmse(metrics['rmse_n1']):>10} {rmse(metrics['rmse']):>10}",
        f"validity rate:     {metrics['validity_rate']:.2%}  (eligible: {metrics['eligibility_rate']:.2%})",
    ]
