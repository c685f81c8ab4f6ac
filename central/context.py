"""Wires the services of one central process together (used by the web app and the CLI)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .config import CentralConfig
from .db import Database
from .services import (
    AdminService,
    BulkLoadService,
    CardService,
    HoldService,
    IssuingService,
    Ledger,
    ProgrammeCache,
    TillService,
    WebService,
)
from .services.batching import GroupCommit
from .services.loyalty import LoyaltyService
from .services.loyalty_rules import RulesService
from .services.segments import SegmentService
from .services.sync import SyncService
from .services.tiers import TierService
from .services.vouchers import VoucherService

__all__ = ["Central"]


@dataclass
class Central:
    config: CentralConfig
    db: Database
    ledger: Ledger
    till: TillService
    admin: AdminService
    cards: CardService
    issuing: IssuingService
    holds: HoldService
    bulk: BulkLoadService
    web: WebService
    group: GroupCommit
    sync: SyncService
    vouchers: VoucherService
    segments: SegmentService
    rules: RulesService
    loyalty: LoyaltyService
    tiers: TierService

    @classmethod
    def open(cls, config: CentralConfig) -> Central:
        central = cls._build(config)
        central.sync.loyalty = central.loyalty
        central.sync.vouchers = central.vouchers
        central.loyalty.after_receipt.append(central.tiers.review_card)  # immediate upgrades
        central.cards.after_duplicate.append(central.loyalty.move_to_replacement)
        return central

    @classmethod
    def _build(cls, config: CentralConfig) -> Central:
        db = Database(config.database_url, pool_size=config.db_pool_size)
        ledger = Ledger(db, ProgrammeCache())
        till = TillService(ledger)
        cards = CardService(ledger)
        pepper = config.ecode_pepper()
        rules = RulesService(db)
        return cls(
            config=config, db=db, ledger=ledger, till=till,
            admin=AdminService(db, config.staff_token_hours), cards=cards,
            issuing=IssuingService(db, ledger, config.production_dir, pepper),
            holds=HoldService(ledger), bulk=BulkLoadService(ledger),
            web=WebService(till, cards, pepper, config.ecode_max_failures, config.ecode_lockout_seconds),
            group=GroupCommit(till, max_batch=config.group_commit_max if config.group_commit else 1,
                              max_in_flight=config.group_commit_in_flight),
            sync=SyncService(db, ledger, config.sync_secret_key(), block_size=config.number_block_size,
                             page=config.sync_page),
            vouchers=VoucherService(db, ledger, pepper),
            rules=rules,
            loyalty=LoyaltyService(db, ledger, rules),
            tiers=TierService(db, rules),
            segments=SegmentService(db),
        )

    async def close(self) -> None:
        await self.db.close()

    @classmethod
    @contextlib.asynccontextmanager
    async def session(cls, config: CentralConfig) -> AsyncIterator[Central]:
        """``async with Central.session(config) as central:`` for tools that run and stop (CLI, demo)."""
        central = cls.open(config)
        try:
            yield central
        finally:
            await central.close()
