"""The generation pipeline shared by ``crystalforge.generate`` and ``crystalforge run``.

prompt specs -> search strategy (batched, KV-cached) -> raw text -> ``postprocess_cif``
-> validity report -> optional scorer -> :class:`Candidate`.

Work is done in chunks of at most ``batch_size`` samples so a caller can write each
chunk as soon as it is ready (the CLI does, which is what makes runs resumable).
Failures of one candidate (post-processing, parsing, validation) are recorded on the
candidate, never raised.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import attrs

from ..errors import CompositionError, CrystalforgeError, DataError, OptionError
from .candidate import Candidate

logger = logging.getLogger(__name__)


# -- prompt specs ------------------------------------------------------------------------
@attrs.frozen
class PromptSpec:
    """One prompt to generate from: what was asked and the exact prompt text.

    ``key`` names the prompt's candidates (``<key>_<index>``): ``<formula>_<spacegroup or any>``
    for compositions, the file stem for prompt files.
    """

    composition: str
    formula: str
    spacegroup: str | None
    prompt: str
    key: str
    z: int | None = None


def _safe(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_.+=" else "_" for c in text.strip())
    return cleaned.strip(".") or "prompt"


def candidate_stem(formula: str, spacegroup: str | None, index: int) -> str:
    """Return the deterministic name of a candidate: ``<formula>_<spacegroup or any>_<index>``."""
    return f"{spec_key(formula, spacegroup)}_{index}"


def spec_key(formula: str, spacegroup: str | None) -> str:
    """Return ``<formula>_<spacegroup or any>`` usable as a file stem (``/`` becomes ``_``)."""
    return _safe(f"{formula}_{spacegroup.replace('/', '_') if spacegroup else 'any'}")


def make_spec(composition: str, spacegroup: str | int | None = None, z: int | None = None) -> PromptSpec:
    """Return the prompt spec of a composition (reduced or cell formula) and optional space group.

    Raises:
        CompositionError: malformed formula, unknown element or bad ``z``.
        SpaceGroupError: unknown space group.
    """
    from ..cif.extract import normalize_space_group
    from ..cif.prompt import make_prompt, prompt_formula

    symbol = normalize_space_group(spacegroup) if spacegroup not in (None, "") else None
    _check_elements(composition)
    prompt = make_prompt(composition, symbol, z)
    formula = prompt_formula(composition, z)
    return PromptSpec(composition=composition, formula=formula, spacegroup=symbol, prompt=prompt,
                      key=spec_key(formula, symbol), z=z)


def _check_elements(composition: str) -> None:
    """Raise CompositionError for symbols pymatgen reads as dummy species (``Xx``, ``Qq``),
    exponents, zero or fractional counts and oversized cells (one gate: check_composition)."""
    from pymatgen.core import Element

    from ..cif.composition import check_composition

    for element in check_composition(composition).elements:
        if not isinstance(element, Element):
            symbol = getattr(element, "symbol", str(element))
            raise CompositionError(f"composition {composition!r} names an unknown element {symbol!r}")


def make_specs(
    compositions: str | Sequence[str], spacegroup: str | int | None = None, z: int | None = None
) -> list[PromptSpec]:
    """Return one spec per composition (all checked before any work), duplicates dropped.

    Raises:
        CompositionError, SpaceGroupError: on the first bad input.
    """
    if isinstance(compositions, str):
        compositions = [compositions]
    if not compositions:
        raise CompositionError("no composition given: name at least one, e.g. CaTiO3")
    return dedupe_specs([make_spec(c, spacegroup, z) for c in compositions])


def dedupe_specs(specs: Sequence[PromptSpec]) -> list[PromptSpec]:
    """Return ``specs`` without repeated keys (a repeat would name the same files)."""
    seen: dict[str, PromptSpec] = {}
    for spec in specs:
        if spec.key in seen:
            logger.warning("prompt %s given twice; generating it once", spec.key)
            continue
        seen[spec.key] = spec
    return list(seen.values())


def spec_from_prompt_text(text: str, name: str) -> PromptSpec:
    """Return the spec of a ready-made prompt text (a ``data_`` line, maybe more).

    Raises:
        CompositionError: the text has no ``data_`` line with a readable formula.
    """
    lines = [line.strip() for line in text.splitlines()]
    first = next((line for line in lines if line), "")
    if not first.startswith("data_"):
        raise CompositionError(f"prompt {name}: does not start with a data_ line")
    formula = first[len("data_"):].strip()
    _check_elements(formula)
    spacegroup = None
    for line in lines:
        if line.startswith("_symmetry_space_group_name_H-M"):
            spacegroup = line.split(None, 1)[1].strip().strip("'\"") if len(line.split()) > 1 else None
    prompt = "\n".join(line for line in lines if line) + "\n"
    return PromptSpec(composition=formula, formula=formula, spacegroup=spacegroup, prompt=prompt,
                      key=_safe(Path(name).name.split(".")[0] or formula))


def read_prompts(path: str | os.PathLike, spacegroup: str | None = None, z: int | None = None) -> list[PromptSpec]:
    """Return the prompt specs of a prompts file, folder or tar archive.

    A text file holds one ``COMPOSITION [SPACEGROUP]`` per line (blank lines and ``#``
    comments skipped; ``spacegroup`` is the default for lines without one). A folder or
    tar archive holds one ready-made prompt text per file, named after the file.

    Raises:
        DataError: the path does not exist or cannot be read.
        CompositionError, SpaceGroupError: a bad line, naming its line number.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        return dedupe_specs([spec_from_prompt_text(f.read_text(errors="replace"), f.name) for f in files])
    if not p.exists():
        raise DataError(f"No such prompts file or folder: {p}")
    if p.name.lower().endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(p, "r:*") as tar:
                members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
                texts = [(m.name, tar.extractfile(m).read().decode("utf-8", "replace")) for m in members]  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{p}: not a readable tar archive ({exc})") from None
        return dedupe_specs([spec_from_prompt_text(text, name) for name, text in texts])
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot read prompts file ({exc})") from None
    specs = []
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise CompositionError(f"{p.name} line {number}: expected 'COMPOSITION [SPACEGROUP]', got {line.strip()!r}")
        try:
            specs.append(make_spec(fields[0], fields[1] if len(fields) == 2 else spacegroup, z))
        except CrystalforgeError as exc:
            raise type(exc)(f"{p.name} line {number}: {exc}") from None
    if not specs:
        raise DataError(f"{p}: no prompts in the file")
    return dedupe_specs(specs)


# -- building components -----------------------------------------------------------------
def build_strategy(plugin_manager, search: str, options: Mapping[str, Any] | None = None):
    """Return the search strategy ``search`` built with ``options``.

    Raises:
        UnknownComponentError: no such strategy. OptionError: a bad option.
    """
    return plugin_manager.registry("search").create(search, **dict(options or {}))


def build_scorer(plugin_manager, scorer: Any, options: Mapping[str, Any] | None = None):
    """Return a scorer: ``None`` stays None, a name is built from the registry, an object is used as is."""
    if scorer is None or scorer == "":
        return None
    if isinstance(scorer, str):
        return plugin_manager.registry("scorer").create(scorer, **dict(options or {}))
    return scorer


def resolve_device(device: str | None) -> str:
    """Return ``device`` with ``auto`` (or None) resolved: cuda when available, else cpu."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


# -- the pipeline --------------------------------------------------------------------------
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
    workers: int = 1  # processes validating candidates

    def validate(self, cif: str):
        """Return the validity report of a CIF (None when validation is off)."""
        if self.checks is None:
            return None
        from ..validation.report import run_checks

        return run_checks(cif, self.checks)

    def _validate_raw(self, text: str):
        """Post-process then validate generated text (what tree searches steer by)."""
        cif, _ = postprocess_safely(text)
        return self.validate(cif if cif is not None else text)

    def run(
        self, work: Sequence[tuple[PromptSpec, Sequence[int]]], *, progress_bar: Any = None
    ) -> Iterator[list[Candidate]]:
        """Yield candidates chunk by chunk for ``(spec, sample indices)`` work items.

        Chunks hold at most ``batch_size`` samples, prompt-major, in the order given.
        """
        import torch

        generator = torch.Generator().manual_seed(int(self.seed))
        takes_indices = "indices" in inspect.signature(self.strategy.generate).parameters
        items = [(spec, int(i)) for spec, indices in work for i in indices]
        step = max(1, self.batch_size) if takes_indices else None
        for chunk in _chunks(items, step):
            samples = self._generate(chunk, generator, takes_indices)
            candidates = [self._candidate(spec, index, sample) for (spec, index), sample in samples]
            self._validate_all(candidates)
            self._score(candidates)
            if progress_bar is not None:
                progress_bar.update(len(candidates))
                progress_bar.set_postfix(valid=sum(c.is_valid for c in candidates), refresh=False)
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
        cif, error = postprocess_safely(sample.text)
        candidate = Candidate(
            composition=spec.composition, formula=spec.formula, spacegroup=spec.spacegroup, index=index,
            raw=sample.text, cif=cif, postprocess_error=error, n_tokens=sample.n_tokens,
            finished=sample.finished, name=f"{spec.key}_{index}",
            extra={k: v for k, v in sample.extra.items() if k != "index"},
        )
        return candidate

    def _validate_all(self, candidates: list[Candidate]) -> None:
        if self.checks is None or not candidates:
            return
        if self.workers <= 1 or len(candidates) == 1:
            for candidate in candidates:
                candidate.report = self.validate(candidate.text)
            return
        from ..parallel import imap_progress
        from ..validation.report import failed_report

        global _WORKER_CHECKS
        _WORKER_CHECKS = self.checks  # forked workers inherit the built validators
        try:
            results = imap_progress(_validate_in_worker, [c.text for c in candidates], workers=self.workers,
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
        scorable = [c for c in candidates if c.cif is not None and math.isnan(c.score)]
        scores = list(self.scorer.score_many([c.cif for c in scorable])) if scorable else []
        for candidate, score in zip(scorable, scores):
            try:
                candidate.score = float(score)
            except (TypeError, ValueError):
                candidate.score = math.nan


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


def postprocess_safely(text: str) -> tuple[str | None, str | None]:
    """Return ``(postprocessed cif, None)`` or ``(None, reason)``; never raises."""
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
    device: str | None = "cpu",
    dtype: str | None = None,
    batch_size: int = 32,
    plugin_manager: Any = None,
    validate: bool = True,
    require: Sequence[str] = (),
    progress: bool = False,
    workers: int = 1,
) -> Pipeline:
    """Return a :class:`Pipeline`; ``model`` is a GPT, a checkpoint path, or None (embedded default).

    Everything that can be wrong with the settings (unknown strategy, scorer, option or
    check; missing checkpoint) raises here, before any generation.

    Raises:
        UnknownComponentError, OptionError, CheckpointError: bad settings.
    """
    from ..cif.tokenizer import default_tokenizer

    if batch_size < 1:
        raise OptionError(f"batch size must be at least 1, got {batch_size}")
    if plugin_manager is None:
        from ..plugins import make_plugin_manager

        plugin_manager = make_plugin_manager()
    device = resolve_device(device)
    strategy = build_strategy(plugin_manager, search, search_options)
    checks = None
    if validate:
        from ..validation.report import validators

        checks = validators(plugin_manager, require)
    built_scorer = build_scorer(plugin_manager, scorer, scorer_options)
    try:
        if callable(getattr(built_scorer, "check_alive", None)):
            built_scorer.check_alive()  # a dead scoring server is reported now, not per request
        if model is None or isinstance(model, (str, os.PathLike)):
            from ..model.checkpoint import load_model

            model = load_model(model, device=device, dtype=dtype)
        else:
            device = str(next(model.parameters()).device)
    except BaseException:
        if built_scorer is not None and isinstance(scorer, str):
            built_scorer.close()
        raise
    return Pipeline(model=model, tokenizer=default_tokenizer(), strategy=strategy, seed=seed,
                    batch_size=batch_size, device=device, scorer=built_scorer, checks=checks, progress=progress,
                    workers=max(1, int(workers)))


def rank_key(lower_is_better: bool = True) -> Callable[[Mapping[str, Any]], tuple]:
    """Return a sort key for summary rows: valid first, then by score (nan/None last)."""

    def key(row: Mapping[str, Any]) -> tuple:
        valid = _truthy(row.get("is_valid"))
        score = _float(row.get("score"))
        has_score = score is not None and not math.isnan(score)
        ordered = (score if lower_is_better else -score) if has_score else 0.0
        return (not valid, not has_score, ordered, str(row.get("composition", "")), int(row.get("index", 0) or 0))

    return key


def rank_candidates(candidates: Sequence[Candidate], lower_is_better: bool = True) -> list[Candidate]:
    """Return candidates ranked: valid first, then best score first (``lower_is_better`` sets the direction)."""
    key = rank_key(lower_is_better)
    return sorted(candidates, key=lambda c: key({"is_valid": c.is_valid, "score": c.score,
                                                "composition": c.composition, "index": c.index}))


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# -- runs into an output folder (the CLI) ------------------------------------------------
MANIFEST = "manifest.json"
SUMMARY = "summary.csv"
ROWS_GLOB = "candidates*.jsonl"
#: settings that must match for a folder to be resumed (else the names would lie)
RESUME_SETTINGS = ("seed", "search", "search_options", "model")
_LEADING_COLUMNS = ("rank", "name", "composition", "formula", "spacegroup_asked", "spacegroup_found", "index")
_TRAILING_COLUMNS = ("bond_length_score", "is_valid", "failed", "score", "volume", "n_tokens", "finished",
                     "error", "file")


@attrs.define
class RunResult:
    """What a folder run produced: every row of the run's candidates, ranked."""

    out_dir: Path
    rows: list[dict[str, Any]]
    generated: int
    resumed: int
    lower_is_better: bool = True
    summary_path: Path | None = None

    @property
    def valid(self) -> int:
        return sum(1 for row in self.rows if _truthy(row.get("is_valid")))


def read_rows(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Return the recorded rows of a run folder by candidate name (latest record wins).

    Rows whose ``.cif`` file is missing are dropped (that candidate will be redone); a
    torn last line of an interrupted run is skipped.
    """
    import json

    rows: dict[str, dict[str, Any]] = {}
    for path in sorted(out_dir.glob(ROWS_GLOB)):
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict) or "name" not in row:
                continue
            current = rows.get(row["name"])
            if current is None or row.get("written_at", 0) >= current.get("written_at", 0):
                rows[row["name"]] = row
    return {name: row for name, row in rows.items() if row.get("file") and (out_dir / row["file"]).is_file()}


def check_manifest(out_dir: Path, settings: Mapping[str, Any]) -> None:
    """Raise ConfigError when ``out_dir`` holds a run made with different settings."""
    import json

    from ..errors import ConfigError

    path = out_dir / MANIFEST
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text()).get("settings", {})
    except ValueError:
        return
    for key in RESUME_SETTINGS:
        if key in previous and previous[key] != _jsonable(settings.get(key)):
            raise ConfigError(
                f"{out_dir} holds a run with {key}={previous[key]!r}, not {settings.get(key)!r}; "
                "use another --out folder (or the same settings to resume)"
            )


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def run_to_folder(
    pipeline: Pipeline,
    specs: Sequence[PromptSpec],
    n: int,
    out_dir: str | os.PathLike,
    *,
    settings: Mapping[str, Any],
    context: Any = None,
) -> RunResult:
    """Generate ``n`` candidates per spec into ``out_dir``, resuming what is already there.

    Each candidate is written atomically as ``<name>.cif`` (the post-processed CIF, or the
    raw text when post-processing failed) and recorded in ``candidates.rank<R>.jsonl``;
    candidates already recorded with their file present are kept and counted, not redone.
    Work is sharded across ``context`` (a :class:`~crystalforge.generation.shard.DistContext`);
    rank 0 writes ``summary.csv`` (ranked) and ``manifest.json``.

    Raises:
        ConfigError: the folder holds a run made with other settings.
    """
    import json
    import time

    from tqdm.auto import tqdm

    from ..cif.io import atomic_write_text, remove_stale_temp_files
    from .shard import DistContext, shard

    context = context or DistContext()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_manifest(out, settings)
    if context.is_main:  # temp files of a run killed mid-write; nobody writes before the barrier
        remove_stale_temp_files(out)
    done = read_rows(out)
    wanted = [(spec, i) for spec in specs for i in range(n)]
    missing = [(spec, i) for spec, i in wanted if f"{spec.key}_{i}" not in done]
    context.barrier()  # everyone has read the folder before anything new is written
    if context.is_main:
        manifest = {"format": 1, "settings": _jsonable(dict(settings)), "n": n,
                    "prompts": [attrs.asdict(spec) for spec in specs]}
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    mine = shard(missing, context.rank, context.world_size)
    work: list[tuple[PromptSpec, list[int]]] = []
    for spec, index in mine:
        if work and work[-1][0] is spec:
            work[-1][1].append(index)
        else:
            work.append((spec, [index]))

    rows_path = out / f"candidates.rank{context.rank}.jsonl"
    new_rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(mine), desc="generating" if not context.distributed else f"rank {context.rank}",
               unit="structure", disable=not pipeline.progress, dynamic_ncols=True, position=context.rank)
    try:
        with open(rows_path, "a") as handle:
            for candidates in pipeline.run(work, progress_bar=bar):
                for candidate in candidates:
                    candidate.file = f"{candidate.name}.cif"
                    atomic_write_text(out / candidate.file, candidate.text)
                    row = candidate.to_row()
                    row["written_at"] = time.time()
                    handle.write(json.dumps(row, default=str) + "\n")
                    new_rows.append(row)
                handle.flush()
                os.fsync(handle.fileno())
    finally:
        bar.close()

    rollouts = getattr(pipeline.strategy, "results", None)
    if rollouts:  # tree searches record every scored rollout: keep them beside the candidates
        from ..search.mcts import write_results

        name = "results.csv" if not context.distributed else f"results.rank{context.rank}.csv"
        write_results(str(out / name), rollouts)
    gathered = context.all_gather(new_rows)
    merged = dict(done)
    for rows in gathered:
        for row in rows:
            merged[row["name"]] = row
    names = {f"{spec.key}_{i}" for spec, i in wanted}
    lower = bool(getattr(pipeline.scorer, "lower_is_better", True))
    ranked = sorted((row for name, row in merged.items() if name in names), key=rank_key(lower))
    for position, row in enumerate(ranked, 1):
        row["rank"] = position
    result = RunResult(out_dir=out, rows=ranked, generated=sum(len(r) for r in gathered),
                       resumed=len([1 for spec, i in wanted if f"{spec.key}_{i}" in done]), lower_is_better=lower)
    if context.is_main:
        result.summary_path = out / SUMMARY
        write_summary(result.summary_path, ranked)
    context.barrier()
    return result


def write_summary(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write summary rows as CSV, atomically: leading facts, one column per check, then results."""
    import csv
    import io

    from ..cif.io import atomic_write_text

    known = set(_LEADING_COLUMNS) | set(_TRAILING_COLUMNS) | {"written_at"}
    checks: list[str] = []
    for row in rows:
        checks.extend(k for k in row if k not in known and k not in checks)
    columns = [*_LEADING_COLUMNS, *checks, *_TRAILING_COLUMNS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    atomic_write_text(path, buffer.getvalue())


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return value
