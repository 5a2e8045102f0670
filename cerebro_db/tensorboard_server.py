"""One TensorBoard process for the dashboard: started when first needed, restarted if it died, and never
outliving the process that started it.

Lifetime: the TensorBoard runs under this module's ``main``, which ends it as soon as its stdin reaches end of
file. Its stdin is a pipe whose only writer is the dashboard process, so the kernel closes it however the
dashboard ends (exit, crash, SIGKILL); TensorBoard's own data server is tied to TensorBoard the same way
(``--die-after-stdin``). PR_SET_PDEATHSIG would fire when the *thread* that started the child ends, and
Streamlit runs each page run in a thread that ends; atexit misses a killed server.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PORT_ENV = "CEREBRO_TENSORBOARD_PORT"
HOST_ENV = "CEREBRO_TENSORBOARD_HOST"
ADDRESS_ENV = "CEREBRO_TENSORBOARD_ADDRESS"
DEFAULT_PORT = 6006
#: Seconds between TensorBoard's looks for new event files (its default, 5 s, said so; set here on purpose).
RELOAD_S = 5


@dataclass(frozen=True)
class Settings:
    port: int = DEFAULT_PORT
    #: The host in the URL the *browser* loads (the dashboard's iframe). None: the host the browser reached the
    #: dashboard at, so the frame is same-site: Chromium aborts TensorBoard's data requests in a frame from
    #: another site (even localhost inside a page from 127.0.0.1).
    host: str | None = None
    #: The address TensorBoard listens on (its ``--host``): None is localhost only; 0.0.0.0 serves other hosts.
    address: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """From ``$CEREBRO_TENSORBOARD_PORT``, ``_HOST``, ``_ADDRESS``; ValueError names a bad port."""
        port = environ.get(PORT_ENV, str(DEFAULT_PORT))
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"${PORT_ENV} is {port!r}: give a port number (1-65535)")
        return cls(int(port), environ.get(HOST_ENV) or None, environ.get(ADDRESS_ENV) or None)

    def url(self, dashboard_host: str | None) -> str:
        """TensorBoard's URL for a browser that reached the dashboard at ``dashboard_host`` (None: unknown)."""
        return url(self.host or dashboard_host or "localhost", self.port)


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def port_in_use(port: int, address: str | None = None) -> bool:
    """Whether a server already listens on ``port`` at ``address`` (None: localhost), as TensorBoard would
    find when it binds there (with SO_REUSEADDR, as it does: a closed connection's TIME_WAIT is no owner)."""
    for family, kind, proto, _, where in socket.getaddrinfo(address or "localhost", port, type=socket.SOCK_STREAM):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(where)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return True  # other errors: an address this host lacks (e.g. ::1 without IPv6)
    return False


def serving_logdir(port: int) -> str | None:
    """The logdir of the TensorBoard answering on localhost ``port``; None if nothing (or not TensorBoard)."""
    try:
        with urllib.request.urlopen(f"http://localhost:{port}/data/logdir", timeout=5) as answer:
            logdir = json.load(answer).get("logdir")
    except (OSError, ValueError, AttributeError):
        return None
    return logdir if isinstance(logdir, str) else None


class TensorBoard:
    """A TensorBoard process that :func:`start` started."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log

    def running(self) -> bool:
        return self.process.poll() is None

    def serving(self) -> bool:
        return serving_logdir(self.port) is not None

    def wait_until_serving(self, timeout: float) -> bool:
        """True once it answers; False if it exited or did not answer within ``timeout`` seconds (it imports
        TensorFlow first: seconds on a busy machine)."""
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            if self.serving():
                return True
            time.sleep(0.5)  # poll interval, not a synchronisation: the loop ends on an answer or the deadline
        return self.running() and self.serving()

    def output(self, lines: int = 15) -> str:
        """The end of what it printed (why it exited)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # what ends it in main(); terminate() below in case it hangs
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(logdir: Path, port: int, *, address: str | None = None, log: Path | None = None) -> TensorBoard:
    """TensorBoard (this Python's) on ``logdir`` at ``port``; it prints into ``log`` (default: beside logdir)."""
    logdir.mkdir(parents=True, exist_ok=True)
    log = log or logdir.with_name(f"{logdir.name}-server.log")
    argv = ["--logdir", str(logdir), "--port", str(port), "--reload_interval", str(RELOAD_S)]
    if address is not None:
        argv += ["--host", address]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cerebro_db.tensorboard_server", *argv],
            stdin=subprocess.PIPE,  # never written: its end of file is the signal to exit (see the module doc)
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return TensorBoard(process, port, log)


class PortTaken(Exception):
    def __init__(self, settings: Settings) -> None:
        super().__init__(
            f"Port {settings.port} is taken by another program, so TensorBoard cannot start there. Set "
            f"${PORT_ENV} to a free port before `cerebro-db ui` (e.g. {PORT_ENV}=6007), or stop the program "
            f"that listens on {settings.port} (`ss -ltnp 'sport = :{settings.port}'` names it)."
        )


class Keeper:
    """The dashboard server's one TensorBoard (the page holds this in st.cache_resource): started on the first
    page run, started again on a page run after it died. A TensorBoard that already serves the same logdir on
    the port (another dashboard's, or one started by hand) is used as it is."""

    def __init__(self, logdir: Path, settings: Settings) -> None:
        self.logdir, self.settings = logdir, settings
        self.board: TensorBoard | None = None
        self._lock = threading.Lock()  # sessions run pages in their own threads: start one process, not two

    def ensure(self) -> TensorBoard | None:
        """This server's TensorBoard, running (started now if needed); None when another TensorBoard serves
        this logdir on the port. Raises :class:`PortTaken` when anything else has the port."""
        with self._lock:
            if self.board is not None and self.board.running():
                return self.board
            if port_in_use(self.settings.port, self.settings.address):
                if serving_logdir(self.settings.port) == str(self.logdir):
                    return None
                raise PortTaken(self.settings)
            self.board = start(self.logdir, self.settings.port, address=self.settings.address)
            return self.board


def _exit_at_end_of_stdin() -> None:
    sys.stdin.buffer.read()
    os._exit(0)  # TensorBoard's server threads would keep a normal exit waiting


def main() -> None:
    """``python -m cerebro_db.tensorboard_server <tensorboard flags>``: TensorBoard until stdin ends."""
    threading.Thread(target=_exit_at_end_of_stdin, daemon=True).start()  # first: the import below takes seconds
    from tensorboard import main as tensorboard_main

    sys.argv = ["tensorboard", *sys.argv[1:]]
    tensorboard_main.run_main()


if __name__ == "__main__":
    main()
