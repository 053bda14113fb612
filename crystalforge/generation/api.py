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
    composition: str | Sequence[str] | None = None,
    spacegroup: str | int | None = None,
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
) -> Candidates:
    """Generate ``n`` candidate structures per composition, validated, scored and ranked.

    Args:
        composition: a formula (reduced ``"CaTiO3"`` or cell ``"Ca2Ti2O6"``) or a list of them.
        spacegroup: a space-group symbol or number for every composition, or None.
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

    Returns:
        The candidates ranked by the one ranking rule (valid first, then best score first
        in the scorer's direction). Post-processing and validation failures are recorded
        on each candidate (``postprocess_error``, ``report``, ``structure_error``), never
        raised. With ``out``, ``result.run`` holds the folder's ranked rows and paths.

    Raises:
        CompositionError, SpaceGroupError: a bad composition or space group (before any work).
        UnknownComponentError, OptionError: a bad component, option or check name.
        CheckpointError: the model cannot be loaded.
        ConfigError: ``out`` holds a run made with other settings.
    """
    from ..errors import CompositionError, OptionError
    from .components import resolve_device
    from .pipeline import make_pipeline
    from .prompts import dedupe_specs, make_specs, read_prompts, spec_count
    from .ranking import rank_candidates, scorer_lower_is_better

    if n < 1:
        raise OptionError(f"n must be at least 1, got {n}")
    # every input is checked before the model is loaded
    specs = make_specs(composition, spacegroup, z) if composition else []
    if prompts is not None:
        specs += read_prompts(prompts, spacegroup, z)
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
        return _generate_to_folder(specs, n, Path(out), device, settings, on_chunk)
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
    return Candidates(rank_candidates(candidates, scorer_lower_is_better(pipeline.scorer)))


def _generate_to_folder(specs, n: int, out: Path, device: str, settings: dict, on_chunk=None) -> Candidates:
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
            "search_options": dict(settings["search_options"] or {}),
            "model": _model_label(model), "scorer": settings["scorer"] if isinstance(settings["scorer"], str)
            else (type(settings["scorer"]).__name__ if settings["scorer"] is not None else None),
            "scorer_options": dict(settings["scorer_options"] or {}), "require": list(settings["require"]),
        }
        try:
            run = run_to_folder(pipeline, specs, n, out, settings=manifest, context=context, on_chunk=on_chunk)
        finally:
            _close_if_owned(pipeline, settings["scorer"])
    finally:
        context.close()
    result = Candidates(rank_candidates(run.candidates, run.lower_is_better))
    result.run = run
    return result


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
