"""``crystalforge.generate``: the whole generation pipeline as one function call.

It is the single implementation: ``crystalforge run`` parses its options and calls it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .candidate import Candidate

logger = logging.getLogger(__name__)


class Candidates(list):
    """The ranked candidates of :func:`generate` (a list), and the run folder's result when
    ``out`` was given (:attr:`run`: every row of the folder, resumed ones included)."""

    run: Any = None


def generate(
    composition: Any = None,
    spacegroup: str | int | Sequence[str | int | None] | None = None,
    n: int = 10,
    search: str = "top-k",
    scorer: Any = None,
    model: Any = None,
    seed: int = 0,
    z: int | None = None,
    search_options: Mapping[str, Any] | None = None,
    scorer_options: Mapping[str, Any] | None = None,
    device: str = "auto",
    batch_size: int = 32,
    plugin_manager: Any = None,
    validate: bool = True,
    require: Sequence[str] = (),
    progress: bool = False,
    workers: int | None = 1,
    *,
    dtype: str | None = None,
    prompts: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    tokenizer: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    validator_options: Mapping[str, Mapping[str, Any]] | None = None,
    on_chunk: Callable[[list[Candidate]], None] | None = None,
    rescore: bool = False,
    unique: bool = False,
    unconditional: bool = False,
    system: str | None = None,
    max_atoms: int | None = None,
) -> Candidates:
    """Generate ``n`` candidate structures per composition, validated, scored and ranked.

    Args:
        composition: a formula (reduced ``"CaTiO3"`` or cell ``"Ca2Ti2O6"``), a pymatgen
            ``Composition`` or ``Structure`` (its composition), element counts
            (``{"Ca": 1, "Ti": 1, "O": 3}``), or a list mixing these.
        spacegroup: a space-group symbol or number for every composition; a list with one
            per composition (None items: no space group); ``"from-structure"``
            (:data:`crystalforge.FROM_STRUCTURE`): each Structure's own space group, the
            formula then being that of its conventional cell; or None.
        n: candidates per composition.
        search: a registered search strategy (``crystalforge list search``).
        scorer: a registered scorer name (built and closed here), a scorer object (the
            caller's to close), or None.
        model: a loaded model, a registered model name, a checkpoint path, or None for the
            embedded default model.
        seed: the run's seed; a candidate's text depends only on (seed, prompt, index)
            for the sampling strategies, whatever ``batch_size`` is.
        z: formula units per cell (the prompt's formula is the reduced one times ``z``).
        search_options, scorer_options, model_options: component options (strings are converted).
        device: ``auto`` (cuda when available), ``cpu``, ``cuda``, ``cuda:1``, ...; a loaded
            model stays where it is.
        dtype: model dtype (``float32``, ``bfloat16``, ``float16``; default float32).
        batch_size: samples decoded together.
        plugin_manager: where components come from (default: a new one).
        validate: attach a validity report to every candidate.
        require: validator names that must pass for ``is_valid`` beyond the default ones.
        progress: show a progress bar.
        workers: processes validating candidates (validation can cost more than generation);
            ``None``: all CPUs, one per few candidates (:func:`crystalforge.parallel.auto_workers`).
        prompts: a prompts file (``COMPOSITION [SPACEGROUP]`` lines), or a folder or tar
            archive of prompt texts, added to ``composition``.
        out: write a run folder there (candidate files, ``summary.csv``, manifest); a
            folder made with the same settings is resumed. Under torchrun the prompts are
            shared out across processes.
        tokenizer: a registered tokenizer (default: CrystaLLM's).
        validator_options: options per check, ``{check: {key: value}}``.
        on_chunk: called with each chunk of new candidates once they are judged (and, with
            ``out``, written): progress reports; an exception it raises stops the run.
        rescore: with ``out``, score the folder's kept candidates again with ``scorer``
            (allowed when the folder differs in the scorer and its options only) and
            record the new scorer in its manifest.
        unique: group equivalent structures (same reduced composition, pymatgen's
            ``StructureMatcher``): each candidate's ``group`` (1 is the best-ranked
            candidate's group), and with ``out`` a ``group`` column in ``summary.csv``.
        unconditional: de novo generation: the prompt is ``data_`` alone and the model
            writes the composition, then the rest (no ``composition`` or ``prompts``).
        system: de novo generation within a chemical system (``"Li-Fe-P-O"``): prompt
            ``data_``, and the logits masks let no other element be written anywhere (any
            subset of the system may appear); stoichiometry, Z and space group are the model's.
        max_atoms: with ``unconditional`` or ``system``, the most atoms per cell: the formula
            the model writes is bounded by the mask; with the stoichiometry constraint (the
            default ``constrain=all``) the sites follow that formula.

    Returns:
        The candidates ranked by the one ranking rule (valid first, then best score first
        in the scorer's direction). Post-processing and validation failures are recorded
        on each candidate (``postprocess_error``, ``report``, ``structure_error``), never
        raised. With ``out``, ``result.run`` holds the folder's ranked rows and paths.

    Raises:
        CompositionError, SpaceGroupError: a bad composition or space group, an input of
            another type, or a space-group list whose length is not the compositions' (before
            any work; the message is the CLI's for the same formula).
        UnknownComponentError, OptionError: a bad component, option or check name.
        CheckpointError: the model cannot be loaded.
        ConfigError: ``out`` holds a run made with other settings (``rescore`` allows
            another scorer only), or ``rescore`` without ``out``.
    """
    from ..errors import CompositionError, OptionError
    from .components import resolve_device
    from .pipeline import make_pipeline
    from .inputs import same_spacegroup_for_all
    from .prompts import dedupe_specs, read_prompts, spec_count
    from .ranking import rank_candidates, scorer_lower_is_better

    if n < 1:
        raise OptionError(f"n must be at least 1, got {n}")
    if rescore and out is None:
        raise OptionError("rescore needs a run folder to rescore (out=..., --out)")
    # every input is checked before the model is loaded
    if unconditional or system is not None or max_atoms is not None:
        specs, search_options = _denovo(composition, prompts, spacegroup, z, unconditional, system, max_atoms,
                                        search_options)
    else:
        specs = _specs_of_inputs(composition, spacegroup, z)
    if prompts is not None:
        specs += read_prompts(prompts, spacegroup if same_spacegroup_for_all(spacegroup) else None, z)
    if not specs:
        raise CompositionError("no composition given: name one (e.g. CaTiO3) or pass a prompts file")
    specs = dedupe_specs(specs)
    _warn_about_reach(model, specs)
    settings = dict(model=model, search=search, search_options=search_options, scorer=scorer,
                    scorer_options=scorer_options, seed=seed, dtype=dtype, batch_size=batch_size,
                    plugin_manager=plugin_manager, validate=validate, require=require, progress=progress,
                    workers=workers, tokenizer=tokenizer, model_options=model_options,
                    validator_options=validator_options)
    device = resolve_device(device)
    if out is not None:
        return _generate_to_folder(specs, n, Path(out), device, settings, on_chunk, rescore=rescore, unique=unique)
    pipeline = make_pipeline(device=device, **settings)
    try:
        candidates: list[Candidate] = []
        work = [(spec, range(spec_count(spec, n))) for spec in specs]
        for chunk in _run_with_bar(pipeline, work, sum(len(indices) for _, indices in work), progress):
            candidates.extend(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
    finally:
        _close_if_owned(pipeline, scorer)
    ranked = rank_candidates(candidates, scorer_lower_is_better(pipeline.scorer))
    if unique:
        from .unique import group_ids

        for candidate, group in zip(ranked, group_ids([c.structure for c in ranked])):
            candidate.group = group
    return Candidates(ranked)


def _specs_of_inputs(composition: Any, spacegroup: Any, z: int | None) -> list:
    """Return the prompt specs of ``generate``'s compositions (strings, pymatgen objects,
    element counts; see :mod:`.inputs`), none when no composition is given."""
    from collections.abc import Mapping as MappingABC

    from .inputs import composition_targets
    from .prompts import make_specs

    if composition is None or (isinstance(composition, (str, list, tuple, MappingABC)) and not composition):
        return []
    specs = []
    for formula, group in composition_targets(composition, spacegroup):
        specs.extend(make_specs(formula, group, z))
    return specs


def _denovo(composition, prompts, spacegroup, z, unconditional: bool, system: str | None,
            max_atoms: int | None, search_options):
    """Return the de novo spec and the search options that make the masks enforce the
    chemical system and atom bound (see :func:`generate`).

    Raises:
        OptionError: de novo mixed with compositions, prompts, a space group or Z; both
            targets at once; a bad ``max_atoms``; search options that say otherwise.
        CompositionError: a bad chemical system.
    """
    from ..errors import OptionError
    from .prompts import make_denovo_spec

    if unconditional and system is not None:
        raise OptionError("unconditional and system exclude each other: a system already lets the model "
                          "pick the composition within it")
    if not unconditional and system is None:
        raise OptionError("max_atoms bounds de novo generation only (unconditional or system); a composition "
                          "fixes the atoms of its cell")
    if composition or prompts is not None:
        raise OptionError("de novo generation (unconditional or system) takes no composition or prompts file")
    if spacegroup not in (None, "") or z is not None:
        raise OptionError("de novo generation leaves the space group and Z to the model; drop spacegroup and z")
    if max_atoms is not None and (isinstance(max_atoms, bool) or not isinstance(max_atoms, int) or max_atoms < 1):
        raise OptionError(f"max_atoms must be a whole number of at least 1, got {max_atoms!r}")
    spec = make_denovo_spec(system)
    options = dict(search_options or {})
    wanted = {"elements": spec.composition if system is not None else None, "max_atoms": max_atoms}
    for key, value in wanted.items():
        if value is None:
            continue
        if key in options and str(options[key]) != str(value):
            raise OptionError(f"search option {key}={options[key]!r} disagrees with the de novo target ({value})")
        options[key] = value
    return [spec], options


def _generate_to_folder(specs, n: int, out: Path, device: str, settings: dict, on_chunk=None, *,
                        rescore: bool = False, unique: bool = False) -> Candidates:
    from .pipeline import make_pipeline
    from .ranking import rank_candidates
    from .runfolder import run_to_folder
    from .shard import distributed_context, rank_device

    context = distributed_context(device)
    try:
        pipeline = make_pipeline(device=rank_device(device, context), **settings)
        model = settings["model"]
        manifest = {
            "seed": settings["seed"], "search": settings["search"],
            "search_options": _typed_options(pipeline.strategy, settings["search_options"]),
            "model": _model_label(model), "scorer": settings["scorer"] if isinstance(settings["scorer"], str)
            else (type(settings["scorer"]).__name__ if settings["scorer"] is not None else None),
            "scorer_options": _typed_options(pipeline.scorer, settings["scorer_options"]),
            "require": sorted(settings["require"]),
            "model_options": dict(settings["model_options"] or {}), "tokenizer": settings["tokenizer"] or "crystallm",
            "dtype": settings["dtype"] or "float32", "validate": bool(settings["validate"]),
            "validator_options": {k: dict(v) for k, v in (settings["validator_options"] or {}).items()},
        }
        try:
            run = run_to_folder(pipeline, specs, n, out, settings=manifest, context=context, on_chunk=on_chunk,
                                rescore=rescore, unique=unique)
        finally:
            _close_if_owned(pipeline, settings["scorer"])
    finally:
        context.close()
    result = Candidates(rank_candidates(run.candidates, run.lower_is_better))
    result.run = run
    return result


def _typed_options(component: Any, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the options as the built component holds them (``"1"`` from the CLI and ``1``
    from Python are one setting), the given value where the component does not expose it."""
    typed = {}
    for key, value in (options or {}).items():
        try:
            typed[key] = getattr(component, key, value)
        except Exception:  # noqa: BLE001 - a property that raises: keep what was given
            typed[key] = value
    return typed


def _warn_about_reach(model: Any, specs) -> None:
    """Log, once per composition, where it asks for what the model never saw (its data card)."""
    from ..errors import CrystalforgeError
    from ..model.datacard import DataCard, load_data_card, reach_warnings

    card = DataCard.unknown()
    if model is None or isinstance(model, (str, os.PathLike)) and Path(model).exists():
        try:
            card = load_data_card(model)
        except CrystalforgeError:
            pass  # the model load reports an unreadable checkpoint
    said: set[tuple[str, str]] = set()
    for spec in specs:
        if spec.target != "composition":
            continue
        try:
            lines = reach_warnings(card, spec.formula, spec.spacegroup)
        except CrystalforgeError:
            continue
        for line in lines:
            if (spec.composition, line) not in said:
                said.add((spec.composition, line))
                logger.warning("%s: %s", spec.composition, line)


def _model_label(model: Any) -> str:
    """Return how the manifest names the model (resuming needs the same one)."""
    if model is None or (isinstance(model, str) and model == ""):
        return "default"
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        return str(path.resolve()) if path.exists() else str(model)
    return type(model).__name__


def _run_with_bar(pipeline, work, total: int, progress: bool):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="generating", unit="structure", disable=not progress, dynamic_ncols=True)
    try:
        yield from pipeline.run(work, progress_bar=bar)
    finally:
        bar.close()


def _close_if_owned(pipeline, scorer: Any) -> None:
    """Close the scorer when generate built it from a name (an object is the caller's)."""
    if isinstance(scorer, str) and pipeline.scorer is not None:
        pipeline.scorer.close()  # the kernel's adapter always has close()
