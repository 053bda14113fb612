"""Run folders: candidates written as files, resumable, with a ranked ``summary.csv``.

A folder holds ``<name>.cif`` per candidate, ``candidates.rank<R>.jsonl`` (one record
per candidate, appended as each chunk is ready), ``manifest.json`` (the settings that
must match to resume), ``summary.csv`` (ranked) and whatever extra tables the search
strategy hands back (:meth:`artifacts`, e.g. MCTS's ``results.csv``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import attrs

from ..util import plain_cell, truthy, write_csv
from .pipeline import Pipeline
from .prompts import PromptSpec, safe_name, spec_count
from .ranking import rank_key, scorer_lower_is_better

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
    #: the candidates this process generated in this call (resumed ones are only rows)
    candidates: list[Any] = attrs.field(factory=list)

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
) -> RunResult:
    """Generate ``n`` candidates per spec into ``out_dir``, resuming what is already there.

    Each candidate is written atomically as ``<name>.cif`` (the post-processed CIF, or the
    raw text when post-processing failed) and recorded in ``candidates.rank<R>.jsonl``;
    candidates already recorded with their file present are kept and counted, not redone.
    Work is sharded across ``context`` (a :class:`~crystalforge.generation.shard.DistContext`);
    rank 0 writes ``summary.csv`` (ranked) and ``manifest.json``. ``on_chunk(candidates)``
    is called after each chunk's files are written (progress; an exception it raises,
    e.g. a cancellation, stops the run and keeps what was written).

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
    wanted = [(spec, i) for spec in specs for i in range(spec_count(spec, n))]
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
                       candidates=made)
    if context.is_main:
        result.summary_path = out / SUMMARY
        write_summary(result.summary_path, ranked)
    context.barrier()
    return result


def write_summary(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write summary rows as CSV, atomically: leading facts, one column per check, then results."""
    known = set(_LEADING_COLUMNS) | set(_TRAILING_COLUMNS) | {"written_at"}
    checks: list[str] = []
    for row in rows:
        checks.extend(k for k in row if k not in known and k not in checks)
    write_csv(path, rows, [*_LEADING_COLUMNS, *checks, *_TRAILING_COLUMNS])


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
