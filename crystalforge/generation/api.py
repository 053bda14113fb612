"""``crystalforge.generate``: the whole generation pipeline as one function call."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .candidate import Candidate
from .runner import make_pipeline, make_specs


def generate(
    composition: str | Sequence[str],
    spacegroup: str | int | None = None,
    n: int = 10,
    search: str = "top-k",
    scorer: Any = None,
    model: Any = None,
    seed: int = 0,
    z: int | None = None,
    search_options: Mapping[str, Any] | None = None,
    scorer_options: Mapping[str, Any] | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    plugin_manager: Any = None,
    validate: bool = True,
    require: Sequence[str] = (),
    progress: bool = False,
    workers: int = 1,
) -> list[Candidate]:
    """Generate ``n`` candidate structures per composition.

    Args:
        composition: a formula (reduced ``"CaTiO3"`` or cell ``"Ca2Ti2O6"``) or a list of them.
        spacegroup: a space-group symbol or number for every composition, or None.
        n: candidates per composition.
        search: a registered search strategy (``crystalforge list search``).
        scorer: a registered scorer name, a scorer object, or None.
        model: a loaded GPT, a checkpoint path, or None for the embedded default model.
        seed: the run's seed; a candidate's text depends only on (seed, prompt, index)
            for the sampling strategies, whatever ``batch_size`` is.
        z: formula units per cell (the prompt's formula is the reduced one times ``z``).
        search_options, scorer_options: component options (strings are converted).
        device: ``cpu``, ``cuda``, ``cuda:1``, ... or ``auto``; ignored when ``model`` is loaded.
        batch_size: samples decoded together.
        plugin_manager: where strategies, scorers and validators come from (default: a new one).
        validate: attach a validity report to every candidate.
        require: validator names that must pass for ``is_valid`` beyond the default ones.
        progress: show a progress bar.
        workers: processes validating candidates (validation can cost more than generation).

    Returns:
        The candidates in prompt order, then index order (``rank_candidates`` ranks them).
        Post-processing and validation failures are recorded on each candidate
        (``postprocess_error``, ``report``, ``structure_error``), never raised.

    Raises:
        CompositionError, SpaceGroupError: a bad composition or space group (before any work).
        UnknownComponentError, OptionError: a bad strategy, scorer, option or check name.
        CheckpointError: the model cannot be loaded.
    """
    from tqdm.auto import tqdm

    from ..errors import OptionError

    if n < 1:
        raise OptionError(f"n must be at least 1, got {n}")
    specs = make_specs(composition, spacegroup, z)
    pipeline = make_pipeline(
        model=model, search=search, search_options=search_options, scorer=scorer,
        scorer_options=scorer_options, seed=seed, device=device, batch_size=batch_size,
        plugin_manager=plugin_manager, validate=validate, require=require, progress=progress,
        workers=workers,
    )
    owns_scorer = isinstance(scorer, str)
    candidates: list[Candidate] = []
    bar = tqdm(total=n * len(specs), desc="generating", unit="structure", disable=not progress, dynamic_ncols=True)
    try:
        for chunk in pipeline.run([(spec, range(n)) for spec in specs], progress_bar=bar):
            candidates.extend(chunk)
    finally:
        bar.close()
        if owns_scorer and pipeline.scorer is not None:
            pipeline.scorer.close()
    return candidates
