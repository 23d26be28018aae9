"""Throwaway servers for ``bench/servers.py`` and the integration tests (through
``tests/helpers/servers.py``): a PostgreSQL cluster and a Chroma server, each on a free loopback
port in a temporary folder, stopped and removed at exit. They live here, not under ``tests/``,
because nothing outside ``tests/`` imports ``tests``.

    with PostgresCluster() as pg:          # initdb + pg_ctl start; pg.url is a postgresql:// URL
        store = open_store(url=pg.url)
    with ChromaServer() as chroma:         # `chroma run --path TMP --host 127.0.0.1 --port P`
        os.environ["QUERYAGENT_CHROMA_HOST"], os.environ["QUERYAGENT_CHROMA_PORT"] = ...

``initdb`` refuses to run as root; as root the cluster runs as the unprivileged user ``nobody``
(through ``runuser``). ``skip_reason()`` of each says why it cannot start here, for a clear skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["ChromaServer", "PostgresCluster", "free_port"]

STARTUP_SECONDS = 60.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path | None:
    """The folder of the newest PostgreSQL server binaries on this machine, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parts[-3])
    except ValueError:
        return 0


class PostgresCluster:
    """A PostgreSQL cluster in a temp folder on a free loopback port (trust auth, fsync off)."""

    def __init__(self) -> None:
        self.port = 0
        self.root: Path | None = None
        self.url = ""

    @staticmethod
    def skip_reason() -> str | None:
        """Why a cluster cannot start here, or ``None``."""
        if postgres_bin() is None:
            return "no PostgreSQL server binaries (initdb); .ci/run installs them with apt-get"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root, and initdb refuses root: no runuser to drop to 'nobody'"
        try:  # local: the optional postgres extra, probed only when a cluster is wanted
            import psycopg  # noqa: F401
            from langgraph.store.postgres import PostgresStore  # noqa: F401
        except ImportError:
            return "the postgres extra is not installed: pip install -e '.[postgres]'"
        return None

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "nobody", "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresCluster:
        bindir = postgres_bin()
        assert bindir is not None, self.skip_reason()
        self.root = Path(tempfile.mkdtemp(prefix="queryagent-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, user="nobody")
        data = self.root / "data"
        self._run(
            str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self.port = free_port()
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            str(bindir / "pg_ctl"), "-D", str(data), "-o", options,
            "-l", str(self.root / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return self

    def create_database(self, name: str) -> str:
        """A fresh database in the cluster; returns its URL."""
        import psycopg  # local: the optional postgres extra (see skip_reason)

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        bindir = postgres_bin()
        if self.root is None or bindir is None:
            return
        try:
            self._run(str(bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate",
                      "-w", "stop")  # fmt: skip
        except subprocess.CalledProcessError:
            pass  # not running (a failed start): nothing to stop
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- Chroma server


def chroma_bin() -> Path | None:
    """The ``chroma`` command of this interpreter's environment."""
    candidate = Path(sys.executable).parent / "chroma"
    if candidate.is_file():
        return candidate
    which = shutil.which("chroma")
    return Path(which) if which else None


class ChromaServer:
    """``chroma run`` on a free loopback port over a temp folder; restartable on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.root = Path(tempfile.mkdtemp(prefix="queryagent-chroma-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def skip_reason() -> str | None:
        return None if chroma_bin() else "no `chroma` command (pip install chromadb)"

    @property
    def env(self) -> dict[str, str]:
        """The variables that point QueryAgent at this server."""
        return {"QUERYAGENT_CHROMA_HOST": self.host, "QUERYAGENT_CHROMA_PORT": str(self.port)}

    def start(self) -> ChromaServer:
        binary = chroma_bin()
        assert binary is not None, self.skip_reason()
        log = (self.root / "server.log").open("ab")
        self._proc = subprocess.Popen(
            [str(binary), "run", "--path", str(self.root / "data"), "--host", self.host,
             "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + STARTUP_SECONDS
        url = f"http://{self.host}:{self.port}/api/v2/heartbeat"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chroma run exited: {(self.root / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop_process()
        raise RuntimeError(f"chroma run did not answer on port {self.port}")

    def stop_process(self) -> None:
        """Stop the server, keeping its data (see ``start`` to bring it back)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> ChromaServer:
        try:
            return self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_process()
        shutil.rmtree(self.root, ignore_errors=True)
