"""Real PostgreSQL servers for tests: the embedded wheel, and Debian's system PostgreSQL 15.

System PostgreSQL refuses to run as root, so when the tests run as root it runs as the
`postgres` user that Debian's package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from engine.db import embedded, migrate

SYSTEM_PG15_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Cluster:
    name: str
    admin_url: str
    template: str = "portico_template"

    def url(self, dbname: str) -> str:
        return make_conninfo(self.admin_url, dbname=dbname)

    def prepare_template(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{self.template}" with (force)')
            conn.execute(f'create database "{self.template}"')
        migrate.migrate(self.url(self.template))

    def create_database(self, dbname: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                f'create database "{dbname}" template "{self.template}" strategy file_copy'
            )
        return self.url(dbname)

    def drop_database(self, dbname: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{dbname}" with (force)')


def start_embedded_cluster(base: Path) -> Cluster:
    return Cluster("embedded", embedded.start_embedded(base))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SystemPostgres15:
    """Debian's PostgreSQL 15 in a throw-away data directory, on a free loopback port."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="portico-pg15-"))
        self.port = free_port()
        self._user = "postgres" if os.geteuid() == 0 else None

    @staticmethod
    def available() -> bool:
        if not (SYSTEM_PG15_BIN / "postgres").exists():
            return False
        if os.geteuid() != 0:
            return True
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
        return True

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self._user, cwd=self.dir)

    def start(self) -> Cluster:
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        data = self.dir / "data"
        self._run(
            str(SYSTEM_PG15_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        self._run(
            str(SYSTEM_PG15_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(self.dir / "log"),
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        return Cluster("system-pg15", f"postgresql://postgres@127.0.0.1:{self.port}/postgres")

    def stop(self) -> None:
        try:
            self._run(
                str(SYSTEM_PG15_BIN / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            )
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
