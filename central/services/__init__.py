"""Central's application services: each takes the database and decides through ``core``."""

from .admin import ROLES, AdminService, AuthError, Forbidden, NotFound, Staff, Terminal, audit
from .bulk import BulkLoadService
from .cards import CardQuery, CardService, TransactionQuery
from .holds import HoldService
from .issuing import IssuingService
from .ledger import Ledger, Origin
from .programmes import ProgrammeCache, create_programme, list_programmes
from .till import TILL_OPERATIONS, TillRequest, TillService
from .web import EcodeLocked, EcodeRejected, WebService

__all__ = [
    "ROLES", "AdminService", "AuthError", "BulkLoadService", "CardQuery", "CardService", "EcodeLocked",
    "EcodeRejected", "Forbidden", "HoldService", "IssuingService", "Ledger", "NotFound", "Origin",
    "ProgrammeCache", "Staff", "TILL_OPERATIONS", "Terminal", "TillRequest", "TillService", "TransactionQuery",
    "WebService", "audit", "create_programme", "list_programmes",
]
