"""The ASGI app of ``crystalforge serve``: the page, its JSON API, live progress and downloads.

API (documented by OpenAPI at ``/docs``)::

    POST   /api/runs                      submit a run -> {"id": ...} (HTTP 202)
    GET    /api/runs                      every run folder under the runs folder
    GET    /api/runs/{id}                 status, settings, progress, ranked candidates with every check
    GET    /api/runs/{id}/files/{name}    a file of the run (CIF; NAME.vasp / NAME.extxyz converted; run.zip)
    DELETE /api/runs/{id}                 cancel a queued or running run
    GET    /api/runs/{id}/events          live progress (server-sent events)
    GET    /api/plugins                   what the form offers (strategies, scorers, validators, options)

Bad input is answered with HTTP 4xx and ``{"detail": "<the CLI's one-line message>"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any

import attrs
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from ..errors import CrystalforgeError
from . import jobs
from .queue import Job, JobQueue, QueueFull

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,200}$")


@attrs.define
class Limits:
    """What one request may ask for."""

    max_n: int = 100
    max_queued: int = 8
    max_body: int = 64 * 1024
    max_compositions: int = 8


class RunBody(BaseModel):
    """A run to generate: the settings of ``crystalforge run``."""

    compositions: list[str] | str = Field(..., description="formulas, e.g. ['CaTiO3'] (a string may list several)",
                                          examples=[["CaTiO3"]])
    spacegroup: str | int | None = Field(None, description="space-group symbol or number, or none", examples=["Pm-3m"])
    z: int | None = Field(None, description="formula units per cell")
    n: int = Field(4, description="candidates per composition")
    search: str = Field("top-k", description="search strategy (GET /api/plugins)")
    search_options: dict[str, Any] = Field(default_factory=dict)
    scorer: str | None = Field(None, description="scorer to rank by, or none")
    scorer_options: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    require: list[str] = Field(default_factory=list, description="extra checks that must pass for validity")


class RunCreated(BaseModel):
    id: str


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with HTTP 413."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = _error(413, f"request body over the {self.limit}-byte limit")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await too_big(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await too_big(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


class TokenGuard:
    """ASGI middleware: every ``/api/`` call must carry the token (header or ``?token=``)."""

    def __init__(self, app, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            request = Request(scope)
            given = request.headers.get("x-crystalforge-token") or request.query_params.get("token") or ""
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not secrets.compare_digest(given.encode(), self.token.encode()):
                return await _error(401, "this server needs its token: open the URL it printed "
                                         "(…/?token=…) or send the X-Crystalforge-Token header")(scope, receive, send)
        return await self.app(scope, receive, send)


class WebState:
    """What the app serves from: the runs folder, the plugins, the model and the job queue."""

    def __init__(self, runs_dir: Path, plugin_manager, model, device: str, limits: Limits,
                 batch_size: int) -> None:
        self.runs_dir = runs_dir
        self.plugin_manager = plugin_manager
        self.model = model
        self.device = device
        self.limits = limits
        self.batch_size = batch_size
        self.queue = JobQueue(self._execute, max_queued=limits.max_queued, on_final=self._record_final)
        self._mark_interrupted()

    # -- jobs ------------------------------------------------------------------------------
    def submit(self, body: RunBody) -> Job:
        compositions = body.compositions
        if isinstance(compositions, str):
            compositions = [c for c in re.split(r"[\s,;]+", compositions) if c]
        request = jobs.RunRequest(
            compositions=tuple(c.strip() for c in compositions if c.strip()),
            spacegroup=None if body.spacegroup in (None, "") else str(body.spacegroup),
            z=body.z, n=body.n, search=body.search, search_options=dict(body.search_options),
            scorer=body.scorer or None, scorer_options=dict(body.scorer_options), seed=body.seed,
            require=tuple(body.require))
        specs = jobs.check_request(request, self.plugin_manager, self.limits.max_n, self.limits.max_compositions)
        stem = specs[0].key if len(specs) == 1 else f"{specs[0].key}+{len(specs) - 1}"
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}-{secrets.token_hex(2)}"[:120]
        job = Job(id=run_id, total=request.n * len(specs), payload=request)
        self.queue.submit(job)
        jobs.write_status(self.runs_dir / run_id, self._status_record(job))
        return job

    def _execute(self, job: Job) -> None:
        jobs.write_status(self.runs_dir / job.id, self._status_record(job))

        def on_chunk(done: int, valid: int) -> None:
            self.queue.update(job, done=done, valid=valid)

        jobs.run_job(model=self.model, plugin_manager=self.plugin_manager, request=job.payload,
                     out_dir=self.runs_dir / job.id, device=self.device, batch_size=self.batch_size,
                     on_chunk=on_chunk, cancelled=job.cancel_event)

    def _record_final(self, job: Job) -> None:
        jobs.write_status(self.runs_dir / job.id, self._status_record(job))

    def _status_record(self, job: Job) -> dict[str, Any]:
        request: jobs.RunRequest = job.payload
        return {"source": "web", "status": job.status, "error": job.error, "request": attrs.asdict(request),
                "total": job.total, "submitted_at": job.submitted_at, "started_at": job.started_at,
                "finished_at": job.finished_at,
                "lower_is_better": jobs.lower_is_better(self.plugin_manager, request.scorer, request.scorer_options)}

    def _mark_interrupted(self) -> None:
        """Runs left queued or running by a previous server process are over: say so."""
        if not self.runs_dir.is_dir():
            return
        for folder in self.runs_dir.iterdir():
            status = jobs.read_status(folder) if folder.is_dir() else {}
            if status.get("status") in ("queued", "running"):
                status["status"] = "interrupted"
                status["error"] = "the server stopped before this run finished"
                jobs.write_status(folder, status)

    # -- reading runs ------------------------------------------------------------------------
    def folder(self, run_id: str) -> Path:
        if not jobs.valid_run_id(run_id):
            raise HTTPException(404, f"no run {run_id!r}")
        folder = self.runs_dir / run_id
        if not jobs.is_run_folder(folder) or folder.is_symlink():
            raise HTTPException(404, f"no run {run_id!r}")
        return folder

    def summary(self, folder: Path, with_candidates: bool) -> dict[str, Any]:
        status = jobs.read_status(folder)
        manifest = jobs.read_manifest(folder)
        job = self.queue.get(folder.name)
        settings = manifest.get("settings") or {}
        request = status.get("request") or {}
        prompts = manifest.get("prompts") or []
        compositions = request.get("compositions") or [p.get("composition") for p in prompts]
        n = request.get("n") or manifest.get("n")
        total = status.get("total") or ((n or 0) * max(1, len(prompts)))
        count, valid = jobs.count_candidates(folder)
        if job is not None:
            state, error, progress = job.status, job.error, job.progress()
        else:
            state = status.get("status") or ("done" if total and count >= total else "incomplete")
            error = status.get("error")
            progress = {"done": count, "total": total, "valid": valid, "rate": None, "elapsed": None}
            started, finished = status.get("started_at"), status.get("finished_at")
            if started and finished and finished > started and count:
                progress["elapsed"] = round(finished - started, 2)
                progress["rate"] = round(count / (finished - started), 3)
        scorer = settings.get("scorer") or request.get("scorer")
        out: dict[str, Any] = {
            "id": folder.name, "status": state, "error": error, "source": status.get("source", "cli"),
            "compositions": compositions, "spacegroup": request.get("spacegroup") or (
                prompts[0].get("spacegroup") if prompts else None),
            "n": n, "settings": settings or {k: request.get(k) for k in ("seed", "search", "search_options",
                                                                         "scorer", "scorer_options", "require")},
            "progress": progress, "candidates_count": count, "valid_count": valid,
            "queue_position": self.queue.position(job) if job is not None else None,
            "submitted_at": status.get("submitted_at") or folder.stat().st_mtime,
            "scorer": scorer, "score_unit": _run_unit(manifest, self.plugin_manager, scorer),
        }
        if with_candidates:
            lower = status.get("lower_is_better", jobs.lower_is_better(
                self.plugin_manager, scorer, settings.get("scorer_options") or {}))
            out["lower_is_better"] = lower
            out["candidates"] = jobs.read_candidates(folder, lower)
        return out


def _run_unit(manifest: dict[str, Any], plugin_manager, scorer: str | None) -> str | None:
    """Return the unit a run's scores are in: the one its manifest recorded from the scorer it
    built (``zmq`` with ``unit=eV/atom``), else the scorer kind's declared unit."""
    recorded = manifest.get("score_unit")
    if scorer and recorded:
        return str(recorded)
    return jobs.score_unit(plugin_manager, scorer)


def create_app(*, runs_dir: str | Path, plugin_manager=None, model=None, model_path: str | None = None,
               device: str = "cpu", token: str | None = None, limits: Limits | None = None,
               batch_size: int = 8) -> FastAPI:
    """Return the ASGI app serving ``runs_dir`` (created if missing).

    ``model`` is a loaded GPT; when None it is loaded once here from ``model_path`` (None:
    the embedded default). With ``token`` set every ``/api/`` call must carry it.

    Raises:
        CheckpointError: the model cannot be loaded.
    """
    if plugin_manager is None:
        from ..plugins import make_plugin_manager

        plugin_manager = make_plugin_manager()
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    if model is None:
        from ..components import create_model

        model = create_model(plugin_manager, model_path, device=device)  # a registered name or a checkpoint
    device = str(next(model.parameters()).device)
    state = WebState(runs.resolve(), plugin_manager, model, device, limits or Limits(), batch_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.queue.stop()

    app = FastAPI(title="crystalforge", version=_version(), docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Generate crystal structures, watch the runs and download the results. "
                              "Errors are HTTP 4xx with {\"detail\": one line}.")
    app.state.web = state
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(CrystalforgeError)
    async def _library_error(request: Request, exc: CrystalforgeError):
        return _error(429 if isinstance(exc, QueueFull) else 400, _message(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        text = first.get("msg", "invalid request")
        return _error(422, f"{where}: {text}" if where else text)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="crystalforge API",
                                   swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="/static/vendor/swagger-ui/favicon-32x32.png")

    @app.get("/api/plugins", summary="What the form offers: strategies, scorers, validators and their options")
    def plugins() -> dict[str, Any]:
        return {**jobs.components(state.plugin_manager),
                "limits": attrs.asdict(state.limits), "device": state.device}

    @app.post("/api/runs", status_code=202, response_model=RunCreated, summary="Submit a run",
              responses={400: {"description": "bad composition, space group, plugin or option"},
                         413: {"description": "body too large"}, 429: {"description": "queue full"}})
    def create_run(body: RunBody) -> RunCreated:
        return RunCreated(id=state.submit(body).id)

    @app.get("/api/runs", summary="List every run folder, newest first")
    def list_runs() -> list[dict[str, Any]]:
        folders = [f for f in state.runs_dir.iterdir()
                   if not f.is_symlink() and jobs.is_run_folder(f) and jobs.valid_run_id(f.name)]
        items = [state.summary(f, with_candidates=False) for f in folders]
        return sorted(items, key=lambda item: -(item["submitted_at"] or 0))

    @app.get("/api/runs/{run_id}", summary="A run: status, settings, progress, ranked candidates with every check")
    def get_run(run_id: str) -> dict[str, Any]:
        return state.summary(state.folder(run_id), with_candidates=True)

    @app.delete("/api/runs/{run_id}", summary="Cancel a queued or running run (its files stay)")
    def cancel_run(run_id: str) -> dict[str, Any]:
        folder = state.folder(run_id)
        job = state.queue.get(run_id)
        if job is None or job.final:
            raise HTTPException(409, f"run {run_id!r} is not queued or running in this server")
        state.queue.cancel(run_id)
        return {"id": run_id, "status": "cancelling" if job.status == "running" else job.status,
                "folder": str(folder)}

    @app.get("/api/runs/{run_id}/files/{name}", summary="Download a file of the run",
             description="NAME.cif as written; NAME.vasp (POSCAR) or NAME.extxyz converted from NAME.cif; "
                         "run.zip: the whole run folder. Only plain files directly in the run folder.")
    def get_file(run_id: str, name: str):
        folder = state.folder(run_id)
        if not _FILE_NAME.match(name) or ".." in name:
            raise HTTPException(400, f"bad file name {name!r}: a plain file name of the run folder is expected")
        path = folder / name
        disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
        if path.is_file() and not path.is_symlink() and path.resolve().parent == folder.resolve():
            media = "chemical/x-cif" if name.endswith(".cif") else None
            return FileResponse(path, media_type=media, headers=disposition)
        if name == "run.zip":
            return Response(jobs.zip_run(folder), media_type="application/zip",
                            headers={"Content-Disposition": f'attachment; filename="{folder.name}.zip"'})
        converted = jobs.converted_file(folder, name)
        if converted is None:
            raise HTTPException(404, f"run {run_id!r} has no file {name!r}")
        text, media = converted
        return Response(text, media_type=media, headers=disposition)

    @app.get("/api/runs/{run_id}/events", summary="Live progress as server-sent events (JSON data)")
    async def events(run_id: str, request: Request):
        folder = state.folder(run_id)

        async def stream():
            seen = -1
            last_beat = time.monotonic()
            while True:
                job = state.queue.get(run_id)
                if job is None or job.changed != seen:
                    seen = job.changed if job is not None else seen
                    data = state.summary(folder, with_candidates=False)
                    yield f"event: progress\ndata: {json.dumps(data, default=str)}\n\n"
                    if job is None or job.final:
                        yield "event: end\ndata: {}\n\n"
                        return
                if await request.is_disconnected():
                    return
                if time.monotonic() - last_beat > 10:
                    last_beat = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    if token:
        app.add_middleware(TokenGuard, token=token)
    app.add_middleware(BodyLimit, limit=state.limits.max_body)  # outermost: before anything reads the body
    return app


def _version() -> str:
    from .. import __version__

    return __version__
