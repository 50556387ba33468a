"""A throwaway PostgreSQL server for the tests: Debian's ``postgresql`` binaries, a
cluster in a temporary directory, listening on 127.0.0.1 at a free port.

PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres``
user (made by the Debian package) and its commands run through ``runuser``. Yields the
database URL; the server is stopped (``pg_ctl stop -m immediate``) when the block ends.
``postgres_available()`` says whether it can run here (else tests skip).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from maritaca.local import free_port

__all__ = ["pg_bin", "postgres_available", "postgres_server"]


def pg_bin() -> str | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and pg_ctl."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def _runner() -> list[str] | None:
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--"] if runuser else None


def postgres_available() -> bool:
    return pg_bin() is not None and _runner() is not None


@contextmanager
def postgres_server() -> Iterator[str]:
    """A fresh cluster; its URL (``postgresql://maritaca@127.0.0.1:PORT/postgres``)."""
    bin_dir, runner = pg_bin(), _runner()
    assert bin_dir is not None and runner is not None, "postgres_available() first"
    workdir = tempfile.mkdtemp(prefix="maritaca-pg-")
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    data = os.path.join(workdir, "data")
    port = free_port()

    def run(*command: str) -> None:
        subprocess.run([*runner, *command], check=True, capture_output=True, timeout=120,
                       cwd=workdir)

    try:
        run(f"{bin_dir}/initdb", "-D", data, "-U", "maritaca", "--auth=trust",
            "--no-sync", "-E", "UTF8", "--locale=C")
        run(f"{bin_dir}/pg_ctl", "-D", data, "-l", os.path.join(workdir, "log"), "-w",
            "-t", "60", "-o", f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 "
                              f"-c fsync=off", "start")
        try:
            yield f"postgresql://maritaca@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*runner, f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60, cwd=workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
