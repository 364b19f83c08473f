"""Running the status page beside other work (`tidemark up`): uvicorn on a thread of its own."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningServer:
    """A uvicorn server on a daemon thread."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_in_thread(app: Any, *, host: str, port: int, timeout: float = 15.0) -> RunningServer:
    """Serve `app` on host:port from a daemon thread; returns once it accepts connections.

    Raises:
        RuntimeError: the server did not start within `timeout`.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="tidemark-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the status page could not start on {host}:{port}")
        time.sleep(0.05)
    return RunningServer(f"http://{host}:{port}/", server, thread)
