"""The web app's JSON API over HTTP: every endpoint and every error, with the embedded model."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from crystalforge.web.app import Limits, create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    from crystalforge.model.checkpoint import load_model

    return load_model(None, device="cpu")


@pytest.fixture(scope="module")
def manager():
    from crystalforge.plugins import make_plugin_manager

    return make_plugin_manager(entry_points=False)


def make_client(runs, model, manager, **kwargs) -> TestClient:
    kwargs.setdefault("batch_size", 2)
    return TestClient(create_app(runs_dir=runs, model=model, plugin_manager=manager, **kwargs))


def wait_final(client: TestClient, run_id: str, timeout: float = 240, headers=None) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        data = client.get(f"/api/runs/{run_id}", headers=headers).json()
        if data["status"] not in ("queued", "running"):
            return data
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, model, manager):
    """One web run (CaTiO3 in Pm-3m, n=2, random scorer) and one CLI run in the same runs folder."""
    runs = tmp_path_factory.mktemp("runs")
    from crystalforge.cli import cli

    result = CliRunner().invoke(cli, ["run", "CaTiO3", "-s", "Pm-3m", "-n", "1", "--seed", "3", "--device", "cpu",
                                      "--no-progress", "--out", str(runs / "from-cli")],
                                obj={"plugin_manager": manager})
    assert result.exit_code == 0, result.output
    with make_client(runs, model, manager) as client:
        response = client.post("/api/runs", json={"compositions": ["CaTiO3"], "spacegroup": "Pm-3m", "n": 2,
                                                  "scorer": "random", "seed": 0})
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]
        data = wait_final(client, run_id)
    assert data["status"] == "done", data
    return runs, run_id, data


def test_post_and_get_run_report_every_check(finished):
    runs, run_id, data = finished
    assert data["progress"]["done"] == data["progress"]["total"] == 2
    assert data["settings"]["search"] == "top-k" and data["settings"]["scorer"] == "random"
    assert data["score_unit"] == "arbitrary units"
    assert [c["rank"] for c in data["candidates"]] == [1, 2]
    for candidate in data["candidates"]:
        names = {check["name"] for check in candidate["checks"]}
        assert {"formula_consistency", "site_multiplicity", "bond_length", "space_group"} <= names
        assert all(check["message"] for check in candidate["checks"] if not check["passed"])
        assert candidate["spacegroup_asked"] == "Pm-3m"
        assert isinstance(candidate["score"], float)
    # valid ones rank first
    valid = [c["is_valid"] for c in data["candidates"]]
    assert valid == sorted(valid, reverse=True)
    readable = [c for c in data["candidates"] if c["structure"]]
    assert readable, "the embedded model should give at least one readable CaTiO3"
    assert readable[0]["density"] > 0 and readable[0]["formula_found"] == "CaTiO3"
    # the folder is an ordinary run folder
    assert (runs / run_id / "summary.csv").is_file() and (runs / run_id / "manifest.json").is_file()


def test_list_runs_shows_web_and_cli_runs_and_survives_restart(finished, model, manager):
    runs, run_id, _ = finished
    with make_client(runs, model, manager) as client:  # a new server on the same folder
        listed = {item["id"]: item for item in client.get("/api/runs").json()}
        assert listed[run_id]["status"] == "done" and listed[run_id]["source"] == "web"
        assert listed["from-cli"]["status"] == "done" and listed["from-cli"]["source"] == "cli"
        assert listed["from-cli"]["compositions"] == ["CaTiO3"]
        cli_run = client.get("/api/runs/from-cli").json()
        assert len(cli_run["candidates"]) == 1
        assert cli_run["candidates"][0]["checks"], "checks are computed for CLI runs too"


def test_a_run_shows_the_unit_its_scorer_was_built_with(finished, model, manager, tmp_path):
    """zmq declares no unit of its own (its protocol carries a bare number); a run made with
    ``--scorer-opt unit=eV/atom`` records that unit in its manifest and the page shows it."""
    runs, _, _ = finished
    copy = tmp_path / "runs"
    shutil.copytree(runs / "from-cli", copy / "zmq-run")
    manifest_path = copy / "zmq-run" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["settings"].update(scorer="zmq", scorer_options={"unit": "eV/atom"})
    manifest["score_unit"] = "eV/atom"
    manifest_path.write_text(json.dumps(manifest))
    with make_client(copy, model, manager) as client:
        assert client.get("/api/runs/zmq-run").json()["score_unit"] == "eV/atom"
        form = {c["name"]: c for c in client.get("/api/plugins").json()["scorer"]}
        assert form["zmq"]["unit"] == "arbitrary units"  # the kind alone still says nothing more


def test_files_cif_poscar_extxyz_zip(finished, model, manager):
    from pymatgen.core import Structure

    runs, run_id, data = finished
    good = next(c for c in data["candidates"] if c["structure"])
    with make_client(runs, model, manager) as client:
        response = client.get(f"/api/runs/{run_id}/files/{good['file']}")
        assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
        structure = Structure.from_str(response.text, fmt="cif")
        assert structure.composition.reduced_formula == "CaTiO3"
        poscar = client.get(f"/api/runs/{run_id}/files/{good['name']}.vasp")
        assert poscar.status_code == 200
        assert Structure.from_str(poscar.text, fmt="poscar").composition.reduced_formula == "CaTiO3"
        xyz = client.get(f"/api/runs/{run_id}/files/{good['name']}.extxyz")
        assert xyz.status_code == 200 and "Lattice=" in xyz.text
        archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/runs/{run_id}/files/run.zip").content))
        names = {Path(n).name for n in archive.namelist()}
        assert {good["file"], "summary.csv", "manifest.json"} <= names
        missing = client.get(f"/api/runs/{run_id}/files/nothing.cif")
        assert missing.status_code == 404 and "no file" in missing.json()["detail"]


# percent-encoded so the client does not fold the dots away before the server sees them
@pytest.mark.parametrize("name", ["%2E%2E", "...", ".hidden", "a;b", "%2e%2e%2fmanifest.json", "..%2F..%2Fetc%2Fpasswd",
                                  "%2E%2E%2F%2E%2E%2Fsecret.cif", "sub%2Fmanifest.json"])
def test_downloads_refuse_path_traversal(finished, model, manager, name):
    runs, run_id, _ = finished
    with make_client(runs, model, manager) as client:
        response = client.get(f"/api/runs/{run_id}/files/{name}")
        assert response.status_code in (400, 404)
        assert "root:" not in response.text


def test_downloads_refuse_symlinks_and_foreign_runs(finished, model, manager, tmp_path):
    runs, run_id, _ = finished
    secret = tmp_path / "secret.cif"
    secret.write_text("secret")
    link = runs / run_id / "leak.cif"
    os.symlink(secret, link)
    outside = runs / "outside"
    os.symlink(tmp_path, outside)
    try:
        with make_client(runs, model, manager) as client:
            assert client.get(f"/api/runs/{run_id}/files/leak.cif").status_code == 404
            assert client.get("/api/runs/outside").status_code == 404
            assert client.get("/api/runs/..").status_code == 404
            assert client.get("/api/runs/%2e%2e/files/passwd").status_code == 404
            assert "outside" not in {item["id"] for item in client.get("/api/runs").json()}
    finally:
        link.unlink()
        outside.unlink()


def test_events_stream_progress_then_end(finished, model, manager):
    runs, run_id, _ = finished
    with make_client(runs, model, manager) as client:
        with client.stream("GET", f"/api/runs/{run_id}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            text = "".join(response.iter_text())
    events = [block for block in text.split("\n\n") if block.startswith("event:")]
    assert events[0].startswith("event: progress") and events[-1].startswith("event: end")
    progress = json.loads(events[0].split("data: ", 1)[1])
    assert progress["status"] == "done" and progress["progress"]["done"] == 2


def test_unknown_run_is_404(tmp_path, model, manager):
    with make_client(tmp_path, model, manager) as client:
        for method, path in [("GET", "/api/runs/nope"), ("DELETE", "/api/runs/nope"), ("GET", "/api/runs/nope/files/x.cif"),
                             ("GET", "/api/runs/nope/events")]:
            response = client.request(method, path)
            assert response.status_code == 404 and response.json() == {"detail": "no run 'nope'"}


def cli_message(manager, args) -> str:
    from crystalforge.cli import cli

    result = CliRunner().invoke(cli, ["run", *args, "--device", "cpu", "--no-progress"], obj={"plugin_manager": manager})
    assert result.exit_code != 0
    return result.output.strip().splitlines()[-1].removeprefix("Error: ")


@pytest.mark.parametrize("body, args", [
    ({"compositions": ["Xq2O3"]}, ["Xq2O3"]),
    ({"compositions": ["CaTiO3"], "spacegroup": "Pm-9m"}, ["CaTiO3", "-s", "Pm-9m"]),
    ({"compositions": ["CaTiO3"], "search": "top_k"}, ["CaTiO3", "--search", "top_k"]),
    ({"compositions": ["CaTiO3"], "scorer": "chgnt"}, ["CaTiO3", "--scorer", "chgnt"]),
    ({"compositions": ["CaTiO3"], "search_options": {"top_k": "many"}}, ["CaTiO3", "-O", "top_k=many"]),
    ({"compositions": ["CaTiO3"], "search_options": {"topk": 3}}, ["CaTiO3", "-O", "topk=3"]),
    ({"compositions": ["CaTiO3"], "require": ["no_such_check"]}, ["CaTiO3", "--require", "no_such_check"]),
])
def test_bad_input_gives_the_cli_message(tmp_path, model, manager, body, args):
    with make_client(tmp_path, model, manager) as client:
        response = client.post("/api/runs", json=body)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "\n" not in detail and "Traceback" not in detail
    assert detail == cli_message(manager, args)
    assert not any(tmp_path.iterdir()), "a refused run leaves no folder"


@pytest.mark.parametrize("body, status, fragment", [
    ({"compositions": ["CaTiO3"], "n": 0}, 400, "n must be between 1 and 5, got 0"),
    ({"compositions": ["CaTiO3"], "n": 6}, 400, "n must be between 1 and 5, got 6"),
    ({"compositions": ["CaTiO3"], "n": "lots"}, 422, "n: "),
    ({"compositions": []}, 400, "no composition given"),
    ({"spacegroup": "Pm-3m"}, 422, "compositions: Field required"),
    ({"compositions": ["A", "B", "C"]}, 400, "at most 2 compositions"),
    ({"compositions": ["CaTiO3"], "scorer_options": {"seed": 1}}, 400, "scorer options given without a scorer"),
])
def test_out_of_range_and_malformed_requests(tmp_path, model, manager, body, status, fragment):
    with make_client(tmp_path, model, manager, limits=Limits(max_n=5, max_compositions=2)) as client:
        response = client.post("/api/runs", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


def test_oversized_and_non_json_bodies(tmp_path, model, manager):
    with make_client(tmp_path, model, manager, limits=Limits(max_body=1000)) as client:
        big = client.post("/api/runs", json={"compositions": ["CaTiO3"] * 400})
        assert big.status_code == 413 and big.json() == {"detail": "request body over the 1000-byte limit"}
        chunked = client.post("/api/runs", content=iter([b"{" + b" " * 600, b" " * 600 + b"}"]),
                              headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        garbage = client.post("/api/runs", content=b"{not json", headers={"content-type": "application/json"})
        assert garbage.status_code == 422 and "\n" not in garbage.json()["detail"]


def test_token_guards_every_api_call(tmp_path, model, manager):
    with make_client(tmp_path, model, manager, token="s3cret") as client:
        assert client.get("/").status_code == 200  # the page itself holds no data
        for method, path in [("GET", "/api/runs"), ("GET", "/api/plugins"), ("POST", "/api/runs"),
                             ("GET", "/api/runs/x"), ("DELETE", "/api/runs/x"), ("GET", "/api/runs/x/files/a.cif")]:
            response = client.request(method, path)
            assert response.status_code == 401 and "token" in response.json()["detail"]
            assert client.request(method, path, headers={"X-Crystalforge-Token": "wrong"}).status_code == 401
        assert client.get("/api/runs", headers={"X-Crystalforge-Token": "s3cret"}).status_code == 200
        assert client.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/api/runs?token=s3cret").status_code == 200


def test_plugins_fill_the_form_and_a_new_plugin_shows_up(tmp_path, model):
    import attrs

    from crystalforge.plugins import make_plugin_manager
    from crystalforge.search.sampling import TopKSampling

    manager = make_plugin_manager(entry_points=False)

    @attrs.define
    class Cooler(TopKSampling):
        """top-k at a lower temperature"""

        chill: float = attrs.field(default=0.5, metadata={"help": "how much cooler"})

    manager.registry("search").add("test-plugin", "cooler", Cooler)
    with make_client(tmp_path, model, manager) as client:
        data = client.get("/api/plugins").json()
    search = {c["name"]: c for c in data["search"]}
    assert {"top-k", "top-p", "puct"} <= set(search)
    assert {"name": "top_k", "type": "int", "default": 10} .items() <= search["top-k"]["options"][1].items()
    assert "chill" in [o["name"] for o in search["cooler"]["options"]]
    assert {c["name"] for c in data["scorer"]} >= {"random", "zmq"}
    assert any(v["name"] == "space_group" and v["required"] for v in data["validator"])
    assert "Pm-3m" in data["spacegroups"] and "P2_1/c" in data["spacegroups"] and len(data["spacegroups"]) >= 200
    assert data["limits"]["max_n"] == 100


def test_docs_are_served_offline(tmp_path, model, manager):
    with make_client(tmp_path, model, manager) as client:
        page = client.get("/docs").text
        assert "cdn." not in page and "https://" not in page
        for asset in ("/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/vendor/swagger-ui/swagger-ui.css"):
            assert asset in page and client.get(asset).status_code == 200
        schema = client.get("/openapi.json").json()
        assert {"/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/files/{name}"} <= set(schema["paths"])
        assert set(schema["paths"]["/api/runs/{run_id}"]) == {"get", "delete"}
        index = client.get("/").text
        assert "https://" not in index and "/static/vendor/3dmol/3Dmol-min.js" in index
        assert client.get("/static/vendor/3dmol/3Dmol-min.js").status_code == 200


def test_interrupted_runs_are_marked_on_start(tmp_path, model, manager):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "web.json").write_text(json.dumps({"source": "web", "status": "running", "request": {}}))
    with make_client(tmp_path, model, manager) as client:
        data = client.get("/api/runs/old").json()
    assert data["status"] == "interrupted" and "stopped" in data["error"]


def test_queue_cancel_waiting_and_running_jobs(tmp_path, model, manager):
    body = {"compositions": ["NaCl"], "n": 4}
    with make_client(tmp_path, model, manager, batch_size=1, limits=Limits(max_queued=1)) as client:
        first = client.post("/api/runs", json=body).json()["id"]
        deadline = time.time() + 30
        while client.get(f"/api/runs/{first}").json()["status"] != "running":
            assert time.time() < deadline
            time.sleep(0.05)
        second = client.post("/api/runs", json=body).json()["id"]
        full = client.post("/api/runs", json=body)
        assert full.status_code == 429 and "queue is full" in full.json()["detail"]
        assert client.get(f"/api/runs/{second}").json()["queue_position"] == 0
        assert client.delete(f"/api/runs/{second}").json()["status"] == "cancelled"
        assert client.delete(f"/api/runs/{first}").json()["status"] == "cancelling"
        data = wait_final(client, first, timeout=120)
        assert data["status"] == "cancelled" and data["progress"]["done"] < 4
        assert client.get(f"/api/runs/{second}").json()["status"] == "cancelled"
        again = client.delete(f"/api/runs/{first}")
        assert again.status_code == 409
    # the cancelled run's finished candidates stay in its folder
    assert len(list((tmp_path / first).glob("*.cif"))) == data["progress"]["done"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_twenty_concurrent_submissions_on_a_real_server(tmp_path, model, manager):
    """One runs, ``max_queued`` wait, the rest are refused with 429 at once; nothing is lost or doubled."""
    import httpx
    import uvicorn

    app = create_app(runs_dir=tmp_path, model=model, plugin_manager=manager, batch_size=1,
                     limits=Limits(max_queued=8))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline
        time.sleep(0.05)
    try:
        barrier = threading.Barrier(20)
        results: list[tuple[int, dict, float]] = []

        def submit(i: int) -> None:
            barrier.wait()
            start = time.perf_counter()
            response = httpx.post(f"{base}/api/runs", json={"compositions": ["KBr"], "n": 1, "seed": i}, timeout=60)
            results.append((response.status_code, response.json(), time.perf_counter() - start))

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(code for code, _, _ in results)
        accepted = [body["id"] for code, body, _ in results if code == 202]
        assert codes.count(202) == 9 and codes.count(429) == 11, codes  # 1 running + 8 waiting
        assert len(set(accepted)) == 9
        slowest = max(seconds for _, _, seconds in results)
        assert slowest < 10, f"a submission took {slowest:.1f} s: submitting must not wait for generation"
        listed = {item["id"]: item["status"] for item in httpx.get(f"{base}/api/runs").json()}
        assert sorted(listed.values()).count("running") == 1 and list(listed.values()).count("queued") == 8
        for run_id in accepted:
            assert httpx.delete(f"{base}/api/runs/{run_id}").status_code == 200
        deadline = time.time() + 120  # the running one stops after the structure it is generating
        while any(item["status"] in ("queued", "running") for item in httpx.get(f"{base}/api/runs").json()):
            assert time.time() < deadline, "a cancelled run did not stop"
            time.sleep(0.2)
        times = sorted(seconds for _, _, seconds in results)
        print(f"20 concurrent POST /api/runs: 9 accepted (1 running, 8 queued), 11 refused with 429; "
              f"answers in {times[0] * 1000:.0f}-{slowest * 1000:.0f} ms (median {times[10] * 1000:.0f} ms)")
    finally:
        server.should_exit = True
        thread.join(60)
    statuses = [json.loads((tmp_path / run_id / "web.json").read_text())["status"] for run_id in accepted]
    assert statuses.count("cancelled") >= 8 and set(statuses) <= {"cancelled", "done"}, statuses
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("127.0.0.2", True), ("0.0.0.0", False), ("192.168.1.10", False)])
def test_loopback_hosts(host, loopback):
    from crystalforge.cli.serve import is_loopback

    assert is_loopback(host) is loopback


@pytest.mark.slow
def test_serve_off_loopback_generates_and_prints_a_token(tmp_path):
    """``crystalforge serve --host 0.0.0.0``: a real process prints a token URL; the API refuses calls without it."""
    import subprocess
    import sys

    import httpx

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "crystalforge", "serve", "--host", "0.0.0.0", "--port", str(port),
                                "--runs", str(tmp_path), "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    try:
        line = process.stdout.readline()
        assert "?token=" in line, line
        token = line.split("?token=", 1)[1].split()[0]
        assert len(token) >= 20
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                refused = httpx.get(f"{base}/api/runs", timeout=5)
                break
            except httpx.TransportError:
                assert time.time() < deadline and process.poll() is None, "the server did not start"
                time.sleep(0.3)
        assert refused.status_code == 401
        assert httpx.get(f"{base}/api/runs", headers={"X-Crystalforge-Token": token}).json() == []
        assert httpx.get(f"{base}/").status_code == 200
    finally:
        process.terminate()
        process.wait(20)
