"""A small Kafka Connect REST server for tests: the endpoints Tidemark uses, with their real
response shapes (Kafka Connect REST docs; recorded bodies in data/connect_responses.json).

Only for what a real Connect worker cannot be made to do on demand: answer 409 (a rebalance
in progress), put a task into FAILED with a given trace, replay a recorded status body.
Everything else runs against the real worker (`tests/distributed/test_connect_rest.py`).

It keeps connectors in memory and lets a test put a task into FAILED with a trace, make the
next requests answer 409 (rebalance in progress), or replay a recorded status body.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

RECORDED = json.loads((Path(__file__).parent / "data" / "connect_responses.json").read_text())


@dataclass
class FakeConnectState:
    connectors: dict[str, dict[str, str]] = field(default_factory=dict)
    task_state: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    recorded_status: dict[str, dict] = field(default_factory=dict)
    busy: int = 0  # answer this many requests with 409 first
    requests: list[tuple[str, str]] = field(default_factory=list)


def _handler(state: FakeConnectState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, code: int, body=None) -> None:
            raw = b"" if body is None else json.dumps(body).encode()
            self.send_response(code)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _route(self, method: str) -> None:
            state.requests.append((method, self.path))
            if state.busy > 0:
                state.busy -= 1
                return self._send(409, RECORDED["rebalance_in_progress"])
            path, _, query = self.path.partition("?")
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if parts == ["connectors"] and method == "GET":
                if query == "expand=info":
                    return self._send(
                        200,
                        {
                            n: {"info": {"name": n, "config": c}}
                            for n, c in state.connectors.items()
                        },
                    )
                return self._send(200, sorted(state.connectors))
            if len(parts) < 2 or parts[0] != "connectors":
                return self._send(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
            name, rest = parts[1], parts[2:]
            missing = {"error_code": 404, "message": f"Connector {name} not found"}
            if rest == ["config"] and method == "PUT":
                length = int(self.headers.get("Content-Length", 0))
                config = json.loads(self.rfile.read(length))
                if "connector.class" not in config:
                    return self._send(400, RECORDED["missing_connector_class"])
                created = name not in state.connectors
                state.connectors[name] = config
                return self._send(
                    201 if created else 200,
                    {
                        "name": name,
                        "config": {**config, "name": name},
                        "tasks": [{"connector": name, "task": 0}],
                        "type": "source",
                    },
                )
            if name not in state.connectors:
                return self._send(404, missing)
            if rest == ["config"] and method == "GET":
                return self._send(200, {**state.connectors[name], "name": name})
            if rest == ["status"] and method == "GET":
                if name in state.recorded_status:
                    return self._send(200, {**state.recorded_status[name], "name": name})
                task, trace = state.task_state.get(name, ("RUNNING", None))
                body = {
                    "name": name,
                    "connector": {"state": "RUNNING", "worker_id": "connect:8083"},
                    "tasks": [{"id": 0, "state": task, "worker_id": "connect:8083"}],
                    "type": "source",
                }
                if trace:
                    body["tasks"][0]["trace"] = trace
                return self._send(200, body)
            if rest == ["offsets"] and method == "GET":
                return self._send(200, {"offsets": []})
            if rest == [] and method == "DELETE":
                del state.connectors[name]
                return self._send(204)
            return self._send(405, {"error_code": 405, "message": "HTTP 405 Method Not Allowed"})

        def do_GET(self):
            self._route("GET")

        def do_PUT(self):
            self._route("PUT")

        def do_DELETE(self):
            self._route("DELETE")

    return Handler


class FakeConnect:
    """Start with `with FakeConnect() as connect: connect.url ...`."""

    def __init__(self) -> None:
        self.state = FakeConnectState()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeConnect:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
