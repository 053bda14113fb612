"""Run folders: candidates written as files, resumable, with a ranked ``summary.csv``.

A folder holds ``<name>.cif`` per candidate (and ``<name>_relaxed.cif`` when the scorer
relaxed it), ``candidates.rank<R>.jsonl`` (one record per candidate, appended as each
chunk is ready), ``manifest.json`` (the settings that made the files, which must match
to resume), ``summary.csv`` (ranked) and whatever extra tables the search strategy hands
back (:meth:`artifacts`, e.g. MCTS's ``results.csv``).

A folder is resumed only when every setting that shapes its results matches
(:data:`RESUME_SETTINGS`). When only the scorer differs, ``rescore`` scores the kept
candidates with the new one and the manifest records the change (``rescored``), so it
always names the scorer of the scores in ``summary.csv``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import attrs

from ..components import accepts_indices
from ..util import plain_cell, truthy, write_csv
from .pipeline import Pipeline
from .prompts import PromptSpec, safe_name, spec_count
from .ranking import rank_key, scorer_lower_is_better

MANIFEST = "manifest.json"
SUMMARY = "summary.csv"
ROWS_GLOB = "candidates*.jsonl"
#: settings that shape results: a folder is resumed only when each one matches (else its files would lie)
RESUME_SETTINGS = ("seed", "search", "search_options", "model", "model_options", "tokenizer", "dtype",
                   "validate", "require", "validator_options", "scorer", "scorer_options")
#: the settings ``rescore`` may change: they decide the scores only, not the candidates
SCORER_SETTINGS = ("scorer", "scorer_options")
_LEADING_COLUMNS = ("rank", "name", "composition", "formula", "spacegroup_asked", "spacegroup_found", "index",
                    "z")
_SCORE_COLUMNS = ("score", "score_unit")
_TRAILING_COLUMNS = ("volume", "n_tokens", "finished", "error", "file", "relaxed_file")
_RESULT_COLUMNS = ("bond_length_score", "is_valid", "failed", *_SCORE_COLUMNS, "score_extras", "group",
                   *_TRAILING_COLUMNS)


@attrs.define
class RunResult:
    """What a folder run produced: every row of the run's candidates, ranked."""

    out_dir: Path
    rows: list[dict[str, Any]]
    generated: int
    resumed: int
    lower_is_better: bool = True
    summary_path: Path | None = None
    #: the candidates this process generated in this call (resumed ones are only rows)
    candidates: list[Any] = attrs.field(factory=list)
    #: kept candidates scored again with a new scorer (``rescore``)
    rescored: int = 0
    #: the unit the scorer declared for ``score`` ("" unitless, None without a scorer)
    score_unit: str | None = None
    #: with ``unique``: the groups of equivalent structures (:func:`.unique.summarize_groups`)
    groups: list[dict[str, Any]] | None = None

    @property
    def valid(self) -> int:
        return sum(1 for row in self.rows if truthy(row.get("is_valid")))


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


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """Return the folder's manifest (``{}`` when there is none or it is unreadable)."""
    import json

    path = out_dir / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        return {}
    return manifest if isinstance(manifest, dict) else {}


def manifest_differences(out_dir: Path, settings: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Return ``{setting: (recorded, given)}`` for each of :data:`RESUME_SETTINGS` that the
    folder's manifest records with another value (settings it does not record are not compared)."""
    previous = read_manifest(out_dir).get("settings", {})
    given = _jsonable(dict(settings))
    return {key: (previous[key], given.get(key)) for key in RESUME_SETTINGS
            if key in previous and not _same_setting(previous[key], given.get(key))}


def _same_setting(recorded: Any, given: Any) -> bool:
    """Return whether two recorded settings mean the same (``"1"`` and ``1``, ``"true"`` and
    ``True``: option values of older manifests were recorded as the CLI's strings)."""
    if recorded == given:
        return True
    if isinstance(recorded, dict) and isinstance(given, dict):
        return recorded.keys() == given.keys() and all(_same_setting(recorded[k], given[k]) for k in recorded)
    if isinstance(recorded, list) and isinstance(given, list):
        return len(recorded) == len(given) and all(map(_same_setting, recorded, given))
    if recorded is None or given is None or isinstance(recorded, (dict, list)) or isinstance(given, (dict, list)):
        return False
    try:
        return float(recorded) == float(given)
    except (TypeError, ValueError):
        return str(recorded).strip().lower() == str(given).strip().lower()


def check_manifest(out_dir: Path, settings: Mapping[str, Any], rescore: bool = False) -> dict[str, tuple[Any, Any]]:
    """Return the settings that differ from the folder's manifest when resuming is honest:
    none, or (with ``rescore``) the scorer's only.

    Raises:
        ConfigError: the folder holds a run made with other settings (one line naming
            each, and offering ``--rescore`` when only the scorer differs).
    """
    from ..errors import ConfigError

    differences = manifest_differences(out_dir, settings)
    if not differences:
        return {}
    scorer_only = set(differences) <= set(SCORER_SETTINGS)
    if rescore and scorer_only:
        return differences
    recorded = ", ".join(f"{key}={old!r}" for key, (old, _) in differences.items())
    given = ", ".join(f"{key}={new!r}" for key, (_, new) in differences.items())
    if scorer_only:
        hint = "rerun with --rescore to score its kept candidates with the new scorer, or use another --out folder"
    else:
        hint = (("--rescore changes only the scorer; " if rescore else "")
                + "use another --out folder (or the same settings to resume)")
    raise ConfigError(f"{out_dir} holds a run made with {recorded}, not {given}; {hint}")


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def new_run_folder(parent: str | os.PathLike, label: str) -> Path:
    """Return a folder under ``parent`` that does not exist yet, ``<YYYYmmdd-HHMMSS>-<label>``
    (``-2``, ``-3``, ... appended when that is taken), so runs made without ``--out`` never mix."""
    import time

    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{safe_name(label)}"[:100]
    folder, count = Path(parent) / stem, 1
    while folder.exists():
        count += 1
        folder = Path(parent) / f"{stem}-{count}"
    return folder


def run_to_folder(
    pipeline: Pipeline,
    specs: Sequence[PromptSpec],
    n: int,
    out_dir: str | os.PathLike,
    *,
    settings: Mapping[str, Any],
    context: Any = None,
    on_chunk: Callable[[list[Any]], None] | None = None,
    rescore: bool = False,
    unique: bool = False,
) -> RunResult:
    """Generate ``n`` candidates per spec into ``out_dir``, resuming what is already there.

    Each candidate is written atomically as ``<name>.cif`` (the post-processed CIF, or the
    raw text when post-processing failed) and recorded in ``candidates.rank<R>.jsonl``;
    candidates already recorded with their file present are kept and counted, not redone.
    Work is sharded across ``context`` (a :class:`~crystalforge.generation.shard.DistContext`);
    rank 0 writes ``summary.csv`` (ranked) and ``manifest.json``. ``on_chunk(candidates)``
    is called after each chunk's files are written (progress; an exception it raises,
    e.g. a cancellation, stops the run and keeps what was written).

    ``rescore``: score every kept candidate again with the pipeline's scorer (allowed
    when the folder differs from ``settings`` in the scorer only), before anything new is
    made; the manifest then names the new scorer and lists the old one under ``rescored``.
    ``unique``: give each summary row the ``group`` of equivalent structures it belongs
    to (:mod:`.unique`).

    Raises:
        ConfigError: the folder holds a run made with other settings, or ``rescore``
            would change the scorer of a search that was steered by it (tree searches).
    """
    import json
    import time

    from tqdm.auto import tqdm

    from ..cif.io import atomic_write_text, remove_stale_temp_files
    from .shard import DistContext, shard

    context = context or DistContext()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    changed = check_manifest(out, settings, rescore)
    if changed and not accepts_indices(pipeline.strategy):
        from ..errors import ConfigError

        raise ConfigError(f"--rescore cannot change the scorer of {out}: its {settings.get('search')!r} search "
                          "was steered by the old scorer; use another --out folder")
    previous = read_manifest(out)
    if context.is_main:  # temp files of a run killed mid-write; nobody writes before the barrier
        remove_stale_temp_files(out)
    done = read_rows(out)
    wanted = [(spec, i) for spec in specs for i in range(spec_count(spec, n))]
    missing = [(spec, i) for spec, i in wanted if f"{spec.key}_{i}" not in done]
    context.barrier()  # everyone has read the folder before anything new is written
    rows_path = out / f"candidates.rank{context.rank}.jsonl"
    score_unit = pipeline.scorer.unit if pipeline.scorer is not None else None
    rescored = 0
    if context.is_main:
        if rescore and done:  # before the manifest names the new scorer
            rescored = len(rescore_rows(out, list(done.values()), pipeline.scorer, rows_path))
        history = list(previous.get("rescored", []))
        if changed:
            history.append({**{key: previous.get("settings", {}).get(key) for key in SCORER_SETTINGS},
                            "replaced_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        manifest = {"format": 1, "settings": _jsonable(dict(settings)), "score_unit": score_unit, "n": n,
                    "prompts": [attrs.asdict(spec) for spec in specs]}
        if history:
            manifest["rescored"] = history
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    mine = shard(missing, context.rank, context.world_size)
    work: list[tuple[PromptSpec, list[int]]] = []
    for spec, index in mine:
        if work and work[-1][0] is spec:
            work[-1][1].append(index)
        else:
            work.append((spec, [index]))

    new_rows: list[dict[str, Any]] = []
    made: list[Any] = []
    bar = tqdm(total=len(mine), desc="generating" if not context.distributed else f"rank {context.rank}",
               unit="structure", disable=not pipeline.progress, dynamic_ncols=True, position=context.rank)
    try:
        with open(rows_path, "a") as handle:
            for candidates in pipeline.run(work, progress_bar=bar):
                for candidate in candidates:
                    candidate.file = f"{candidate.stem}.cif"
                    atomic_write_text(out / candidate.file, candidate.text)
                    row = candidate.to_row()
                    row["relaxed_file"] = _write_relaxed(out, candidate.name, candidate.relaxed_cif)
                    row["written_at"] = time.time()
                    handle.write(json.dumps(row, default=str) + "\n")
                    new_rows.append(row)
                    made.append(candidate)
                handle.flush()
                os.fsync(handle.fileno())
                if on_chunk is not None:
                    on_chunk(candidates)
    finally:
        bar.close()

    write_artifacts(out, pipeline.strategy, context)
    gathered = context.all_gather(new_rows)
    merged = dict(done)
    for rows in gathered:
        for row in rows:
            merged[row["name"]] = row
    lower = scorer_lower_is_better(pipeline.scorer)
    in_order = (merged[f"{spec.key}_{i}"] for spec, i in wanted if f"{spec.key}_{i}" in merged)
    ranked = sorted(in_order, key=rank_key(lower))
    for position, row in enumerate(ranked, 1):
        row["rank"] = position
    result = RunResult(out_dir=out, rows=ranked, generated=sum(len(r) for r in gathered),
                       resumed=len([1 for spec, i in wanted if f"{spec.key}_{i}" in done]), lower_is_better=lower,
                       candidates=made, rescored=rescored, score_unit=score_unit)
    if unique:
        from .unique import group_texts, summarize_groups

        ids = group_texts([None if row.get("error") else _read_text(out / row["file"]) for row in ranked])
        for row, group in zip(ranked, ids):
            row["group"] = group
        by_name = {row["name"]: row["group"] for row in ranked}
        for candidate in made:
            candidate.group = by_name.get(candidate.name)
        result.groups = summarize_groups(ranked)
    if context.is_main:
        result.summary_path = out / SUMMARY
        write_summary(result.summary_path, ranked)
    context.barrier()
    return result


def write_summary(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write summary rows as CSV, atomically: leading facts, one column per check, the score
    and its unit, one column per scorer extra (``energy_relaxed``, ...), then the rest
    (``group`` with ``unique``)."""
    known = set(_LEADING_COLUMNS) | set(_RESULT_COLUMNS) | {"written_at"}
    checks: list[str] = []
    extras: list[str] = []
    for row in rows:
        checks.extend(k for k in row if k not in known and k not in checks)
        extras.extend(k for k in row.get("score_extras") or {} if k not in extras and k not in known)
    grouped = any("group" in row for row in rows)
    flat = [{**row, **(row.get("score_extras") or {})} for row in rows]
    write_csv(path, flat, [*_LEADING_COLUMNS, *checks, "bond_length_score", "is_valid", "failed", *_SCORE_COLUMNS,
                           *extras, *(("group",) if grouped else ()), *_TRAILING_COLUMNS])


def rescore_rows(out: Path, rows: Sequence[dict[str, Any]], scorer: Any, rows_path: Path) -> list[dict[str, Any]]:
    """Score the candidates of recorded rows again with ``scorer`` (None: no scores), update the
    rows in place, rewrite or remove their ``<name>_relaxed.cif`` and append the new records
    to ``rows_path``. Candidates whose text could not be post-processed score ``nan``, as
    in generation. Returns the rows."""
    import json
    import math
    import time

    from ..scoring.result import as_score_result
    from .pipeline import structure_text

    scorable = [row for row in rows if not row.get("error")] if scorer is not None else []
    # score everything first: an interrupted rescore leaves the folder as it was
    details = scorer.score_details([_read_text(out / row["file"]) for row in scorable]) if scorable else []
    results = {id(row): as_score_result(result) for row, result in zip(scorable, details)}
    for row in rows:
        result = results.get(id(row))
        row.update(score=None if scorer is None else result.value if result else math.nan,
                   score_unit=scorer.unit if scorer is not None else "",
                   score_extras=dict(result.extras) if result else {},
                   relaxed_file=_write_relaxed(out, row["name"], structure_text(result.structure) if result else None))
    with open(rows_path, "a") as handle:
        for row in rows:
            row["written_at"] = time.time()
            handle.write(json.dumps(row, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return list(rows)


def _write_relaxed(out: Path, name: str, cif: str | None) -> str:
    """Write (or, for None, remove) ``<name>_relaxed.cif`` atomically; return its file name or ""."""
    from ..cif.io import atomic_write_text

    path = out / f"{name}_relaxed.cif"
    if cif is None:
        path.unlink(missing_ok=True)
        return ""
    atomic_write_text(path, cif)
    return path.name


def _read_text(path: Path) -> str:
    return path.read_text(errors="replace")


def write_artifacts(out: Path, strategy: Any, context: Any) -> None:
    """Write the strategy's extra tables (``artifacts()``: name -> rows) as CSV files,
    ``NAME.csv`` (a name that already ends in ``.csv`` is kept as it is).

    Under torchrun each process writes its own (``results.rank1.csv``).
    """
    from ..components import search_artifacts

    for name, rows in search_artifacts(strategy).items():
        if not name.endswith(".csv"):
            name = f"{name}.csv"
        if context.distributed:
            stem, dot, suffix = name.rpartition(".")
            name = f"{stem}.rank{context.rank}.{suffix}" if dot else f"{name}.rank{context.rank}"
        write_csv(out / name, rows, cell=plain_cell)
