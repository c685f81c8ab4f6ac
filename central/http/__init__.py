"""The central server's HTTP APIs (till, web service, admin) and their OpenAPI document."""

from . import (  # noqa: F401  (importing registers the routes)
    admin,
    catalogue_api,
    customers_api,
    loyalty_api,
    pin_api,
    segments_api,
    sync_api,
    system,
    tiers_api,
    till,
    vouchers_api,  # noqa: F401  (registers the e-voucher routes)
    web_api,
)
from .routing import ROUTES, add_routes, error_middleware
from .system import build_openapi

__all__ = ["ROUTES", "add_routes", "build_openapi", "error_middleware"]
