"""Helpers shared by the benchmarks: throwaway PostgreSQL databases, process CPU and memory figures."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg

# The server's administrative database; override with TESSERA_BENCH_PG.
PG_ADMIN_URL = os.environ.get("TESSERA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def db_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def throwaway_db(prefix: str) -> Iterator[str]:
    """Create a uniquely named database and always drop it again (forcibly) on the way out."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def code_version() -> str:
    """Where the central package is imported from, its commit and whether it has local changes."""
    import subprocess

    import central

    root = os.path.dirname(os.path.dirname(os.path.abspath(central.__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "central", "core", "tessera"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{root} (not a git checkout)"
    return f"{root} at {commit}" + (" + uncommitted changes to central/core/tessera" if dirty else "")


def pg_settings() -> dict[str, str]:
    names = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "max_connections")
    with psycopg.connect(PG_ADMIN_URL) as conn:
        return {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process ((0, 0) if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def postgres_backends(dbname: str) -> list[int]:
    """PIDs of the PostgreSQL backends connected to ``dbname`` (their title names the database)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            title = cmdline(int(entry))
            if title.startswith("postgres: ") and f" {dbname} " in title:
                found.append(int(entry))
    return found


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f}"
