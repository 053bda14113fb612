"""The generation pipeline: prompt specs in, judged candidates out.

prompt specs -> search strategy (batched, KV-cached) -> raw text -> ``postprocess_cif``
-> validity report -> optional scorer -> :class:`Candidate`.

Work is done in chunks of at most ``batch_size`` samples so a caller can write each
chunk as soon as it is ready (what makes run folders resumable). Each generated text is
post-processed and validated once: a tree search that judged it while searching leaves
its verdict in the pipeline's memo. Failures of one candidate (post-processing, parsing,
validation) are recorded on the candidate, never raised.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Iterator, Mapping, Sequence

import attrs

from ..errors import CrystalforgeError, OptionError
from .candidate import Candidate
from ..components import accepts_indices
from .components import (make_model, make_scorer, make_strategy, make_tokenizer, make_validators,
                         resolve_device)
from .prompts import PromptSpec

logger = logging.getLogger(__name__)


@attrs.define
class Pipeline:
    """Everything needed to turn prompt specs into candidates.

    Build it with :func:`make_pipeline`; call :meth:`run` with work items.
    """

    model: Any
    tokenizer: Any
    strategy: Any
    seed: int = 0
    batch_size: int = 32
    device: str = "cpu"
    scorer: Any = None
    checks: list | None = None  # built validators (crystalforge.validation.report.validators)
    progress: bool = True
    workers: int | None = None  # processes validating candidates; None: all CPUs (parallel.auto_workers)
    #: raw text -> (cif, postprocess error, report) of texts judged in the current chunk
    _judged: dict[str, tuple[str | None, str | None, Any]] = attrs.field(factory=dict, init=False, repr=False)

    def validate(self, cif: str):
        """Return the validity report of a CIF (None when validation is off)."""
        if self.checks is None:
            return None
        from ..validation.report import run_checks

        return run_checks(cif, self.checks)

    def judge(self, text: str) -> tuple[str | None, str | None, Any]:
        """Return ``(cif, postprocess error, report)`` of generated text, each text judged once."""
        known = self._judged.get(text)
        if known is None:
            cif, error = postprocess_safely(text)
            known = (cif, error, self.validate(cif if cif is not None else text))
            self._judged[text] = known
        return known

    def _validate_raw(self, text: str):
        """Post-process then validate generated text (what tree searches steer by)."""
        return self.judge(text)[2]

    def run(
        self, work: Sequence[tuple[PromptSpec, Sequence[int]]], *, progress_bar: Any = None
    ) -> Iterator[list[Candidate]]:
        """Yield candidates chunk by chunk for ``(spec, sample indices)`` work items.

        Chunks hold at most ``batch_size`` samples, prompt-major, in the order given.
        """
        import torch

        generator = torch.Generator().manual_seed(int(self.seed))
        takes_indices = accepts_indices(self.strategy)
        items = [(spec, int(i)) for spec, indices in work for i in indices]
        step = max(1, self.batch_size) if takes_indices else None
        valid_so_far = 0  # the bar shows every valid candidate of this run, not the last chunk's
        for chunk in _chunks(items, step):
            self._judged.clear()
            samples = self._generate(chunk, generator, takes_indices)
            candidates = [self._candidate(spec, index, sample) for (spec, index), sample in samples]
            self._validate_all(candidates)
            self._score(candidates)
            self._judged.clear()
            if progress_bar is not None:
                progress_bar.update(len(candidates))
                valid_so_far += sum(c.is_valid for c in candidates)
                progress_bar.set_postfix(valid=valid_so_far, refresh=False)
            yield candidates

    def _generate(self, chunk, generator, takes_indices):
        specs = list(dict.fromkeys(spec for spec, _ in chunk))
        indices = [[i for s, i in chunk if s is spec] for spec in specs]
        common = dict(generator=generator, device=self.device, batch_size=self.batch_size,
                      scorer=self.scorer, validate=self._validate_raw if self.checks is not None else None,
                      progress=False)
        if takes_indices:
            results = self.strategy.generate(self.model, self.tokenizer, [s.prompt for s in specs],
                                             max(len(i) for i in indices), indices=indices, **common)
        else:  # strategies without per-index seeding (tree searches): n per prompt
            results = self.strategy.generate(self.model, self.tokenizer, [s.prompt for s in specs],
                                             len(indices[0]), **common)
        out = []
        for spec, wanted, samples in zip(specs, indices, results):
            if len(samples) < len(wanted):
                logger.warning("search returned %d of %d samples for %s", len(samples), len(wanted), spec.key)
            out.extend(((spec, index), sample) for index, sample in zip(wanted, samples))
        return out

    def _candidate(self, spec: PromptSpec, index: int, sample) -> Candidate:
        known = self._judged.get(sample.text)
        cif, error = known[:2] if known is not None else postprocess_safely(sample.text)
        candidate = Candidate(
            composition=spec.composition, formula=spec.formula, spacegroup=spec.spacegroup, index=index,
            raw=sample.text, cif=cif, postprocess_error=error, n_tokens=sample.n_tokens,
            finished=sample.finished, name=f"{spec.key}_{index}",
            extra={k: v for k, v in sample.extra.items() if k != "index"},
        )
        if spec.target != "composition":  # de novo: named after the formula the model wrote
            from .prompts import denovo_naming

            candidate.formula, candidate.stem = denovo_naming(candidate.name, candidate.text)
        if known is not None:
            candidate.report = known[2]
        return candidate

    def _validate_all(self, candidates: list[Candidate]) -> None:
        if self.checks is None:
            return
        candidates = [c for c in candidates if c.report is None]  # judged while searching: done
        if not candidates:
            return
        from ..parallel import auto_workers, imap_progress

        # worker processes only where there is enough work to pay for starting them
        workers = auto_workers(len(candidates), self.workers)
        if workers <= 1 or len(candidates) == 1:
            for candidate in candidates:
                candidate.report = self.validate(candidate.text)
            return
        from ..validation.report import failed_report

        global _WORKER_CHECKS
        _WORKER_CHECKS = self.checks  # forked workers inherit the built validators
        try:
            results = imap_progress(_validate_in_worker, [c.text for c in candidates], workers=workers,
                                    progress=False, chunksize=1, crash_label="the CIF parser")
            for candidate, (ok, report) in zip(candidates, results):
                # a worker that died on an item (e.g. SIGSEGV in C code): its checks fail with
                # the reason; validating it again here could take this process down too
                candidate.report = report if ok else failed_report(self.checks, str(report))
        finally:
            _WORKER_CHECKS = None

    def _score(self, candidates: list[Candidate]) -> None:
        if self.scorer is None or not candidates:
            return
        # text that could not even be post-processed is not worth a (maybe remote) scorer call
        # a tree search already scored its candidates: reuse a finite score, don't pay twice
        for candidate in candidates:
            known = candidate.extra.get("score")
            candidate.score = float(known) if isinstance(known, (int, float)) and math.isfinite(known) else math.nan
            candidate.score_unit = self.scorer.unit
        scorable = [c for c in candidates if c.cif is not None and math.isnan(c.score)]
        results = list(self.scorer.score_details([c.cif for c in scorable])) if scorable else []
        for candidate, result in zip(scorable, results):
            apply_score(candidate, result)


def apply_score(candidate: Candidate, result: Any) -> None:
    """Record a scorer's result on a candidate: the score, its extras and the relaxed
    structure as CIF text (a plain number is a result with nothing else)."""
    from ..scoring.result import as_score_result

    result = as_score_result(result)
    candidate.score = result.value
    candidate.score_extras = dict(result.extras)
    candidate.relaxed_cif = structure_text(result.structure)


def structure_text(structure: Any) -> str | None:
    """Return a scorer's structure (pymatgen ``Structure`` or CIF text) as CIF text, None for None."""
    if structure is None or isinstance(structure, str):
        return structure
    from .export import to_cif

    try:
        return to_cif(structure)
    except Exception as exc:  # noqa: BLE001 - a scorer's odd structure costs its file, not the run
        logger.warning("cannot write the scorer's structure as CIF: %s", exc)
        return None


_WORKER_CHECKS: list | None = None


def _validate_in_worker(cif: str):
    """Validate in a worker process (validators inherited by fork, else the default ones)."""
    from ..validation.report import run_checks, validators

    return run_checks(cif, _WORKER_CHECKS if _WORKER_CHECKS is not None else validators())


def _chunks(items: list, size: int | None) -> Iterator[list]:
    if size is None:  # one prompt per chunk
        start = 0
        while start < len(items):
            end = start
            while end < len(items) and items[end][0] is items[start][0]:
                end += 1
            yield items[start:end]
            start = end
        return
    for start in range(0, len(items), size):
        yield items[start : start + size]


@functools.lru_cache(maxsize=4096)
def postprocess_safely(text: str) -> tuple[str | None, str | None]:
    """Return ``(postprocessed cif, None)`` or ``(None, reason)``; never raises.

    Memoised, so a text a tree search post-processed while searching is not redone.
    """
    from ..cif.postprocess import postprocess_cif

    try:
        return postprocess_cif(text), None
    except CrystalforgeError as exc:
        return None, str(exc) or type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - generated text is hostile input
        return None, f"{type(exc).__name__}: {exc}"[:300]


def make_pipeline(
    *,
    model: Any = None,
    search: str = "top-k",
    search_options: Mapping[str, Any] | None = None,
    scorer: Any = None,
    scorer_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str | None = "auto",
    dtype: str | None = None,
    batch_size: int = 32,
    plugin_manager: Any = None,
    validate: bool = True,
    require: Sequence[str] = (),
    progress: bool = False,
    workers: int | None = 1,
    tokenizer: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    validator_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Pipeline:
    """Return a :class:`Pipeline` built from the registries (see :mod:`.components`).

    ``model`` is a model object, a registered model name, a checkpoint path, or None (the
    embedded default). Everything that can be wrong with the settings (unknown component,
    option or check; missing checkpoint) raises here, before any generation.

    Raises:
        UnknownComponentError, OptionError, CheckpointError: bad settings.
    """
    if batch_size < 1:
        raise OptionError(f"batch size must be at least 1, got {batch_size}")
    if plugin_manager is None:
        from ..plugins import make_plugin_manager

        plugin_manager = make_plugin_manager()
    device = resolve_device(device)
    strategy = make_strategy(search, search_options, plugin_manager)
    built_tokenizer = make_tokenizer(tokenizer, plugin_manager)
    checks = make_validators(plugin_manager, require, validator_options) if validate else None
    built_scorer = make_scorer(scorer, scorer_options, plugin_manager)
    try:
        if callable(getattr(built_scorer, "check_alive", None)):
            built_scorer.check_alive()  # a dead scoring server is reported now, not per request
        built_model = make_model(model, device=device, dtype=dtype, options=model_options,
                                 plugin_manager=plugin_manager)
    except BaseException:
        if built_scorer is not None and isinstance(scorer, str):
            built_scorer.close()
        raise
    device = str(next(built_model.parameters()).device)  # a loaded model stays where it is
    return Pipeline(model=built_model, tokenizer=built_tokenizer, strategy=strategy, seed=seed,
                    batch_size=batch_size, device=device, scorer=built_scorer, checks=checks, progress=progress,
                    workers=None if workers is None else max(1, int(workers)))
