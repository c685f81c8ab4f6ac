"""The ``tessera`` command line: runs central, issues cards, manages users, and runs the demo."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import multiprocessing
import os
import shutil
import signal
import sys
from pathlib import Path

from aiohttp import web

from central.app import create_app
from central.config import CentralConfig, load_config
from central.context import Central
from central.db import upgrade
from central.logs import AccessLogger, setup_logging
from central.services import audit
from central.services.catalogue import CatalogueRejected, CatalogueService
from central.services.customers import CustomerService, CustomersRejected
from core import DomainError
from edge.cli import add_edge_commands, run_edge
from simulators.cli import add_sim_commands, run_sim

log = logging.getLogger("tessera.cli")


def _config(args: argparse.Namespace) -> CentralConfig:
    return load_config(getattr(args, "config", None), database_url=getattr(args, "database_url", None),
                       host=getattr(args, "host", None), port=getattr(args, "port", None),
                       data_dir=getattr(args, "data_dir", None))


def _event_loop_factory():
    """uvloop's event loop: the same asyncio API with a faster loop and transports (less CPU per
    request); the standard loop where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run(config: CentralConfig, **options) -> None:
    factory = _event_loop_factory()
    loop = factory() if factory else None
    web.run_app(create_app(config, migrate=False), host=config.host, port=config.port, loop=loop,
                access_log_class=AccessLogger, print=None, **options)


def _serve_worker(config: CentralConfig) -> None:
    setup_logging(config.log_level)
    _run(config, reuse_port=True)


def serve(config: CentralConfig, workers: int = 1) -> None:
    """Migrate once, then serve with ``workers`` processes sharing the port (SO_REUSEPORT)."""
    setup_logging(config.log_level)
    upgrade(config.database_url)
    config.ecode_pepper()  # create the eCode key (if it is a file) before workers race for it
    log.info("central listening url=http://%s:%s workers=%s", config.host, config.port, workers)
    if workers <= 1:
        _run(config)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_serve_worker, args=(config,), name=f"central-{i}") for i in range(workers)]
    for p in procs:
        p.start()

    def stop(*_):
        for p in procs:
            if p.is_alive():
                p.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.join()


def _progress_of(what: str):
    def progress(done: int, total: int) -> None:
        print(f"\r{what} {done:,} / {total:,} ({100 * done // total}%)", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)

    return progress


_progress = _progress_of("cards issued")


async def issue_cards(config: CentralConfig, programme: str, quantity: int, track_expiry: str | None) -> dict:
    async with Central.session(config) as central:
        async with central.db.begin() as conn:
            issue_id = await central.issuing.start_issue(conn, programme, quantity, "cli", track_expiry)
        return await central.issuing.run_issue(issue_id, _progress)


async def resume_issue(config: CentralConfig, issue_id: int) -> dict:
    async with Central.session(config) as central:
        await central.issuing.claim_for_resume(issue_id)
        return await central.issuing.run_issue(issue_id, _progress)


async def bulk_load(config: CentralConfig, path: Path) -> dict:
    async with Central.session(config) as central:
        result = await central.bulk.load(path.read_text(encoding="utf-8-sig"), path.name, "cli",
                                         _progress_of("lines loaded"))
    result_path = path.with_name(path.stem + ".result.csv")
    result_path.write_text(result.pop("result_csv"))
    return {**result, "result_file": str(result_path)}


async def catalogue_import(config: CentralConfig, path: Path, mode: str = "upsert", partial: bool = False,
                           currency: str | None = None) -> dict:
    """Import a catalogue CSV as the CLI user; CatalogueRejected (with the lines) if nothing was imported."""
    async with Central.session(config) as central:
        return await CatalogueService(central.db).import_csv(
            path.read_text(encoding="utf-8-sig"), actor="cli", mode=mode, partial=partial, default_currency=currency,
            source=path.name, progress=_progress_of("products written"))


async def customers_import(config: CentralConfig, path: Path, partial: bool = False) -> dict:
    """Import customers from an earlier system's CSV as the CLI user; CustomersRejected if nothing was imported."""
    async with Central.session(config) as central:
        return await CustomerService(central.db).import_csv(
            path.read_text(encoding="utf-8-sig"), actor="cli", partial=partial, source=path.name,
            progress=_progress_of("customers written"))


def _print_catalogue_lines(lines: list[dict]) -> None:
    for line in lines:
        column = f" {line['column']}" if line["column"] else ""
        print(f"line {line['line']}{column}: {line['code']}: {line['message']}")


async def create_user(config: CentralConfig, username: str, role: str, password: str) -> None:
    async with Central.session(config) as central, central.db.begin() as conn:
        await central.admin.create_user(conn, username, password, role)
        await audit(conn, "cli", "user_create", f"user:{username}", {"role": role})


async def store_secret(config: CentralConfig, store: str) -> dict:
    async with Central.session(config) as central, central.db.begin() as conn:
        result = await central.sync.rotate_secret(conn, store)
        await audit(conn, "cli", "sync_secret_rotate", f"store:{store}", {"version": result["version"]})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__)
    sub = parser.add_subparsers(dest="area", required=True)

    demo = sub.add_parser("demo", help="run the demo: central, a store's edge node, a till's simulated devices "
                                      "and a price checker, seeded")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--edge-port", type=int, default=8090)
    demo.add_argument("--data-dir", default="var/demo")

    central = sub.add_parser("central", help="the head-office server")
    csub = central.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--config", help="TOML file (also TESSERA_CONFIG)")
        p.add_argument("--database-url", help="postgresql://... or sqlite:///path (also TESSERA_DATABASE_URL)")
        p.add_argument("--data-dir", help="where keys and production files live (also TESSERA_DATA_DIR)")
        return p

    p = common(csub.add_parser("serve", help="serve the HTTP APIs"))
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=int(os.environ.get("TESSERA_WORKERS", "1")))
    common(csub.add_parser("migrate", help="bring the database schema up to date"))
    p = common(csub.add_parser("create-user", help="create a staff user (password from TESSERA_PASSWORD or prompt)"))
    p.add_argument("--username", required=True)
    p.add_argument("--role", choices=("admin", "operator", "auditor"), required=True)
    p = common(csub.add_parser("issue-cards", help="issue a batch of cards, writing its production file"))
    p.add_argument("--programme", required=True)
    p.add_argument("--quantity", type=int, required=True)
    p.add_argument("--track-expiry", help="YYMM on the stripe")

    p = common(csub.add_parser("bulk-load", help="credit cards from a CSV (reference,card_number,amount[,currency])"))
    p.add_argument("--file", type=Path, required=True)
    p = common(csub.add_parser("resume-issue", help="resume an issue whose run failed or stopped"))
    p.add_argument("--issue", type=int, required=True)
    p = csub.add_parser("catalogue", help="the product catalogue")
    p = p.add_subparsers(dest="catalogue_command", required=True).add_parser(
        "import", help="import products from a CSV (code,name,price[,member_price,currency,unit,group,active])")
    common(p)
    p.add_argument("file", type=Path)
    p.add_argument("--mode", choices=("upsert", "replace"), default="upsert",
                   help="replace: withdraw the products the file does not name")
    p.add_argument("--partial", action="store_true", help="import the valid lines even if others are invalid")
    p.add_argument("--currency", help="currency of lines that name none")
    p = csub.add_parser("customers", help="customer profiles")
    p = p.add_subparsers(dest="customers_command", required=True).add_parser(
        "import", help="import customers from an earlier system's CSV (see docs/customers.md)")
    common(p)
    p.add_argument("file", type=Path)
    p.add_argument("--partial", action="store_true", help="import the valid lines even if others are invalid")
    p = common(csub.add_parser("store-secret", help="issue a new sync secret for a store's edge node (printed once)"))
    p.add_argument("--store", required=True)

    add_edge_commands(sub)
    add_sim_commands(sub)

    args = parser.parse_args(argv)
    if args.area == "edge":
        return run_edge(args)
    if args.area == "sim":
        return run_sim(args)
    if args.area == "demo":
        from tessera.demo import run_demo

        data_dir = Path(args.data_dir)
        if data_dir.exists():  # every demo starts from fresh seed data
            shutil.rmtree(data_dir)
        return run_demo(data_dir, args.port, args.edge_port)

    config = _config(args)
    if args.command == "serve":
        serve(config, args.workers)
    elif args.command == "migrate":
        setup_logging(config.log_level)
        upgrade(config.database_url)
        log.info("database migrated")
    elif args.command == "create-user":
        password = os.environ.get("TESSERA_PASSWORD") or getpass.getpass("password: ")
        upgrade(config.database_url)
        asyncio.run(create_user(config, args.username, args.role, password))
        print(f"user {args.username} ({args.role}) created")
    elif args.command == "bulk-load":
        setup_logging(config.log_level)
        upgrade(config.database_url)
        result = asyncio.run(bulk_load(config, args.file))
        print(f"bulk load {result['id']}: {result['lines']} lines, {result['credited']} credited, "
              f"{result['duplicate']} already loaded, {result['failed']} failed; results: {result['result_file']}")
    elif args.command == "customers":
        setup_logging(config.log_level)
        upgrade(config.database_url)
        try:
            result = asyncio.run(customers_import(config, args.file, args.partial))
        except CustomersRejected as exc:
            print(f"customers not imported: {exc.message}")
            _print_catalogue_lines([{"column": line.get("field"), **line} for line in exc.lines])
            return 2
        print(f"customers from {args.file.name}: {result['rows']} lines, {result['imported']} imported, "
              f"{result['invalid_lines']} invalid, {result['cards_bound']} cards bound")
        _print_catalogue_lines([{"column": line.get("field"), **line} for line in result["lines"]])
    elif args.command == "catalogue":
        setup_logging(config.log_level)
        upgrade(config.database_url)
        try:
            result = asyncio.run(catalogue_import(config, args.file, args.mode, args.partial, args.currency))
        except CatalogueRejected as exc:
            print(f"catalogue not imported: {exc.message}")
            _print_catalogue_lines(exc.lines)
            return 2
        print(f"catalogue {result['mode']} of {args.file.name}: {result['rows']} lines, {result['inserted']} new, "
              f"{result['updated']} changed, {result['unchanged']} unchanged, {result['deactivated']} withdrawn, "
              f"{result['invalid_lines']} invalid; catalogue version {result['version']}")
        _print_catalogue_lines(result["lines"])
    elif args.command == "store-secret":
        upgrade(config.database_url)
        result = asyncio.run(store_secret(config, args.store))
        print(f"store {result['store']} sync secret version {result['version']}: {result['secret']}")
    elif args.command in ("issue-cards", "resume-issue"):
        setup_logging(config.log_level)
        upgrade(config.database_url)
        if args.command == "issue-cards":
            result = asyncio.run(issue_cards(config, args.programme, args.quantity, args.track_expiry))
        else:
            result = asyncio.run(resume_issue(config, args.issue))
        print(f"issue {result['id']}: {result['generated']:,} cards {result['first_number']}..{result['last_number']}"
              f" in {result['seconds']} s; production file: {config.production_dir / ('issue-%d.csv' % result['id'])}")
    return 0


def run() -> int:
    """Console entry point: domain errors end in one line and exit status 2, not a traceback."""
    try:
        return main()
    except DomainError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())

