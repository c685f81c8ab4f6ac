"""The edge node's configuration: one typed object from a TOML file ([edge]) and TESSERA_EDGE_* variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central.config import load_typed

__all__ = ["EdgeConfig", "load_edge_config"]


@dataclass(frozen=True)
class EdgeConfig:
    """One store's edge node. Defaults run next to the demo central on localhost:8080."""

    store: str = "S1"
    store_secret: str = ""  # 64 hex digits, from `tessera central store-secret --store CODE`
    central_url: str = "http://127.0.0.1:8080"
    database: Path | None = None  # default var/edge-<store>.db
    host: str = "127.0.0.1"
    port: int = 8090
    online_timeout: float = 1.0  # seconds a till waits for central before the edge decides alone
    # After central failed to answer, decide offline for this long without trying it, so that every
    # till does not pay the timeout while central is down (a successful sync ends it sooner).
    central_retry_seconds: float = 10.0
    sync_interval: float = 5.0
    sync_batch: int = 5000  # entries per push: larger batches drain a backlog faster (at most 5000)
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    block_low_water: int = 50  # ask for another number block when this few numbers are left
    hold_sweep_seconds: float = 5.0
    scheduler: bool = True
    # Devices at the tills, TILL/KIND=URL separated by spaces, KIND barcode|magstripe|pinpad, e.g.
    # "T1/barcode=socket://10.0.0.5:4001?terminator=crlf T1/magstripe=/dev/ttyUSB0?framing=magtek"
    devices: str = ""
    pin_token_ttl: float = 60.0  # seconds a PIN entered on a pad stays usable by the till's next payment
    price_checker_port: int = 0  # TCP port for fixed price checkers; 0: no price checker server
    price_checker_options: str = ""  # their protocol options as a query string, e.g. "unit_id=1&aim=1"
    # A till token at central for price checker and kiosk balance lookups (online first); without
    # one they show what the store knows of the card.
    kiosk_till_token: str = ""
    log_level: str = "INFO"

    @property
    def database_path(self) -> Path:
        return self.database if self.database is not None else Path("var") / f"edge-{self.store}.db"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database_path}"

    def secret(self) -> bytes:
        """The store's 32-byte sync secret; ValueError if it is not configured as 64 hex digits."""
        try:
            raw = bytes.fromhex(self.store_secret)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError("store_secret must be 64 hex digits (tessera central store-secret --store CODE)")
        return raw


def load_edge_config(path: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                     **overrides: Any) -> EdgeConfig:
    """File values ([edge] section), then ``TESSERA_EDGE_<FIELD>`` variables, then explicit overrides."""
    return load_typed(EdgeConfig, section="edge", prefix="TESSERA_EDGE_", path=path, env=env, overrides=overrides)
