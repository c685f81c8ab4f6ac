"""Configuration: file, environment, overrides, and the eCode key made once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from central.config import CentralConfig, load_config


def test_file_then_environment_then_overrides(tmp_path: Path):
    config_file = tmp_path / "central.toml"
    config_file.write_text('[central]\nport = 9000\ndatabase_url = "sqlite:///x.db"\nscheduler = false\n')
    config = load_config(config_file, env={"TESSERA_PORT": "9100", "TESSERA_HOLD_SWEEP_SECONDS": "2.5"})
    assert (config.port, config.database_url, config.scheduler, config.hold_sweep_seconds) == (
        9100, "sqlite:///x.db", False, 2.5)
    assert load_config(config_file, env={}, port=9200).port == 9200
    assert load_config(env={}).port == CentralConfig().port


def test_unknown_keys_are_refused(tmp_path: Path):
    config_file = tmp_path / "central.toml"
    config_file.write_text("prot = 1\n")
    with pytest.raises(ValueError, match="prot"):
        load_config(config_file, env={})


def _read_key(data_dir: str, queue) -> None:
    queue.put(CentralConfig(data_dir=Path(data_dir)).ecode_pepper().hex())


def test_concurrent_first_starts_share_one_complete_key(tmp_path: Path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_read_key, args=(str(tmp_path), queue)) for _ in range(8)]
    for p in procs:
        p.start()
    keys = {queue.get(timeout=30) for _ in procs}
    for p in procs:
        p.join()
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert (tmp_path / "ecode.key").stat().st_mode & 0o077 == 0  # readable by its owner only
    assert [p.name for p in tmp_path.iterdir()] == ["ecode.key"]
