"""``homecare dashboards push`` against a real local HTTP server that records the calls.

The server stands in for Grafana's HTTP API (folders and dashboards endpoints only):
what is tested is the calls the command makes and how it reports Grafana's answers,
not Grafana itself.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from dashboards.publish import FOLDER_UID, build_all
from harness.servers import free_port

TOKEN = "glsa_test-token"


@dataclass
class RecordingGrafana:
    """Answers like Grafana 11; ``fail_with`` makes every dashboard save fail."""

    folders: set[str] = field(default_factory=set)
    calls: list[tuple[str, str, str, Any]] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    fail_with: int | None = None

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.rsplit("/", 1)[1]
            if uid in self.folders:
                return 200, {"uid": uid, "title": "Homecare", "id": 1}
            return 404, {"message": "folder not found", "status": "not-found"}
        if method == "POST" and path == "/api/folders":
            self.folders.add(body["uid"])
            return 200, {"uid": body["uid"], "title": body["title"], "id": 1}
        if method == "POST" and path == "/api/dashboards/db":
            if self.fail_with:
                return self.fail_with, {"message": "database is locked"}
            uid = body["dashboard"]["uid"]
            self.versions[uid] = self.versions.get(uid, 0) + 1
            return 200, {"status": "success", "uid": uid, "version": self.versions[uid],
                         "url": f"/d/{uid}/x", "id": len(self.versions)}  # fmt: skip
        return 404, {"message": "not found"}


@pytest.fixture
def grafana() -> Iterator[tuple[RecordingGrafana, str]]:
    state = RecordingGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            state.calls.append((self.command, self.path, self.headers["Authorization"], body))
            status, answer = state.handle(self.command, self.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll: shutdown() waits for it (0.5 s by default, at every test's teardown).
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def _push(url: str, token: str | None = TOKEN) -> Any:
    env = {"HOMECARE_GRAFANA__URL": url}
    if token:
        env["HOMECARE_GRAFANA__TOKEN"] = token
    return CliRunner().invoke(app, ["dashboards", "push"], env=env)


def test_push_creates_the_folder_and_every_dashboard(grafana):
    state, url = grafana
    result = _push(url)
    assert result.exit_code == 0, result.output
    assert {c[2] for c in state.calls} == {f"Bearer {TOKEN}"}
    paths = [(c[0], c[1]) for c in state.calls]
    assert paths[:2] == [("GET", f"/api/folders/{FOLDER_UID}"), ("POST", "/api/folders")]
    saved = [c[3] for c in state.calls if c[1] == "/api/dashboards/db"]
    expected = {uid: json.loads(text) for uid, text in build_all().items()}
    assert {s["dashboard"]["uid"]: s["dashboard"] for s in saved} == expected
    assert {(s["folderUid"], s["overwrite"]) for s in saved} == {(FOLDER_UID, True)}
    for uid in expected:
        assert f"{uid}: version 1" in result.output

    state.calls.clear()
    again = _push(url)  # a second push overwrites: the folder exists, versions go up
    assert again.exit_code == 0, again.output
    assert ("POST", "/api/folders") not in [(c[0], c[1]) for c in state.calls]
    assert set(state.versions.values()) == {2}


def test_push_reports_grafanas_refusal(grafana):
    state, url = grafana
    state.fail_with = 500
    result = _push(url)
    assert result.exit_code == 1
    assert "answered 500" in result.output
    assert "database is locked" in result.output


def test_push_needs_url_and_token(grafana):
    _, url = grafana
    result = _push(url, token=None)
    assert result.exit_code == 2
    assert "HOMECARE_GRAFANA__TOKEN" in result.output


def test_push_to_nothing_is_a_clear_error():
    result = _push(f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert "error: Grafana at http://127.0.0.1:" in result.output
