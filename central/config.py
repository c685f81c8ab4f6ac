"""The central server's configuration: one typed object from a TOML file and TESSERA_* variables."""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["CentralConfig", "load_config", "load_typed"]


@dataclass(frozen=True)
class CentralConfig:
    """Defaults run the demo: embedded SQLite under ./var, listening on localhost:8080."""

    database_url: str = "sqlite:///var/central.db"
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("var")
    # Key of the eCode HMAC, hex. Empty: read (or create once) data_dir/ecode.key.
    ecode_key: str = ""
    db_pool_size: int = 10
    # Group commit: till payments, top-ups and payment cancels arriving together share one transaction.
    group_commit: bool = True
    group_commit_max: int = 64
    group_commit_in_flight: int = 1  # batches of one worker in the database at once
    staff_token_hours: int = 12
    ecode_max_failures: int = 5
    ecode_lockout_seconds: int = 900
    hold_sweep_seconds: float = 5.0
    card_expiry_sweep_seconds: float = 3600.0
    voucher_expiry_sweep_seconds: float = 3600.0  # vouchers past valid_to marked expired (refused before anyway)
    segment_job_seconds: float = 86400.0  # every segment recomputed (0: never; run them on demand)
    tier_job_seconds: float = 86400.0  # tier reviews of every card (0: never; run them as a batch)
    discount_job_seconds: float = 86400.0  # discount levels recomputed (0: never; tills ask live)
    points_expiry_seconds: float = 3600.0  # expired points lots removed (0: never; run it on demand)
    birthday_job_seconds: float = 3600.0  # birthday bonuses credited (once per card and year, however often)
    scheduler: bool = True
    log_level: str = "INFO"
    # Key store sync secrets are derived from, hex. Empty: read (or create once) data_dir/sync.key.
    sync_key: str = ""
    number_block_size: int = 1000  # card numbers granted to a store per block, for offline issuing
    sync_page: int = 5000  # deny changes, card snapshots and watched cards per pull

    def ecode_pepper(self) -> bytes:
        """The eCode key, creating it (mode 0600) on first use when none is configured."""
        return self._key("ecode.key", self.ecode_key)

    def sync_secret_key(self) -> bytes:
        """The key store sync secrets are derived from, created like the eCode key."""
        return self._key("sync.key", self.sync_key)

    def _key(self, name: str, configured: str) -> bytes:
        """A configured hex key, or the one kept in data_dir/<name> (created once, mode 0600)."""
        if configured:
            return bytes.fromhex(configured)
        path = self.data_dir / name
        if not path.exists():
            # Written aside and linked into place: concurrent first starts all end up with the one
            # complete key (link fails if another process won the race).
            self.data_dir.mkdir(parents=True, exist_ok=True)
            draft = self.data_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                os.unlink(draft)
        return bytes.fromhex(path.read_text().strip())

    @property
    def production_dir(self) -> Path:
        return self.data_dir / "production"


def _coerce(kind: Any, raw: Any) -> Any:
    if kind in (bool, "bool"):
        return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
    if kind in (int, "int"):
        return int(raw)
    if kind in (float, "float"):
        return float(raw)
    if kind in (Path, "Path", "Path | None"):
        return Path(raw)
    return str(raw)


C = TypeVar("C")


def load_typed(cls: type[C], *, section: str, prefix: str, path: str | os.PathLike | None,
               env: Mapping[str, str] | None, overrides: dict[str, Any]) -> C:
    """A frozen config dataclass from a TOML file (its ``[section]``, or the top level), then
    ``<prefix><FIELD>`` environment variables, then explicit overrides (None ones ignored)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = path or env.get(f"{prefix}CONFIG")
    if path:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        values.update(data.get(section, data))
    known = {f.name: f.type for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown {section} configuration keys: {', '.join(sorted(unknown))}")
    for name in known:
        key = f"{prefix}{name.upper()}"
        if key in env:
            values[name] = env[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return replace(cls(), **{k: _coerce(known[k], v) for k, v in values.items()})


def load_config(path: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                **overrides: Any) -> CentralConfig:
    """File values, then ``TESSERA_<FIELD>`` environment variables, then explicit overrides."""
    return load_typed(CentralConfig, section="central", prefix="TESSERA_", path=path, env=env, overrides=overrides)
