"""Whole processes: the CLI, the server with several workers, and the demo of the README."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import aiohttp
import pytest

CLI = [sys.executable, "-m", "tessera.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


async def wait_healthy(base: str, proc: subprocess.Popen, seconds: float = 30) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(int(seconds * 10)):
            assert proc.poll() is None, "server exited early"
            try:
                async with session.get(f"{base}/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server did not become healthy")


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base, self.headers = session, base, {}

    async def call(self, method: str, path: str, body=None, headers=None, expect: int = 200):
        async with self.session.request(method, self.base + path, json=body,
                                        headers=headers if headers is not None else self.headers) as resp:
            data = await resp.json()
            assert resp.status == expect, (resp.status, data)
            return data


async def seed_over_http(api: Api, env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Log in, create a programme, store and till, issue cards by CLI, pack and release them."""
    token = (await api.call("POST", "/api/v1/auth/login", {"username": "boss", "password": env["TESSERA_PASSWORD"]}))
    api.headers = {"Authorization": f"Bearer {token['token']}"}
    await api.call("POST", "/api/v1/admin/programmes", {
        "code": "GIFT", "name": "Gift", "currency": "EUR", "number_prefix": "6034", "number_length": 16,
        "min_amount": 100, "max_amount": 100000})
    await api.call("POST", "/api/v1/admin/stores", {"code": "S1", "name": "Store"})
    till = await api.call("POST", "/api/v1/admin/terminals", {"kind": "till", "code": "T1", "store_code": "S1"})
    # Issued by another process while the server runs: both write the same database.
    out = run_cli("central", "issue-cards", "--programme", "GIFT", "--quantity", "50", env=env)
    first, last = re.search(r"cards (\d+)\.\.(\d+)", out).groups()
    pack = await api.call("POST", "/api/v1/admin/packs", {"first_number": first, "last_number": last,
                                                           "store_code": "S1"})
    await api.call("POST", f"/api/v1/admin/packs/{pack['id']}/authorize")
    cards = await api.call("GET", "/api/v1/admin/cards?programme=GIFT&limit=50")
    return {"Authorization": f"Bearer {till['token']}"}, [c["number"] for c in cards]


def server_env(tmp_path: Path, url: str) -> dict[str, str]:
    return {**os.environ, "TESSERA_DATABASE_URL": url, "TESSERA_DATA_DIR": str(tmp_path / "data"),
            "TESSERA_PASSWORD": "e2e-password-1"}


async def test_cli_and_server_on_sqlite(tmp_path: Path):
    env = server_env(tmp_path, f"sqlite:///{tmp_path}/central.db")
    run_cli("central", "create-user", "--username", "boss", "--role", "admin", env=env)
    port = free_port()
    proc = subprocess.Popen([*CLI, "central", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base, proc)
        async with aiohttp.ClientSession() as session:
            api = Api(session, base)
            till, cards = await seed_over_http(api, env)
            sale = await api.call("POST", "/api/v1/till/sale", {"txn_id": str(uuid.uuid4()), "card_number": cards[0],
                                                                "amount": 5000}, headers=till)
            assert sale["approved"] and sale["balance"] == 5000
            pay = await api.call("POST", "/api/v1/till/payment",
                                 {"txn_id": str(uuid.uuid4()), "card_number": cards[0], "amount": 1500}, headers=till)
            assert pay["balance"] == 3500
            detail = await api.call("GET", f"/api/v1/admin/cards/{cards[0]}", headers={
                **api.headers, "User-Agent": 'evil" level=error x="'})
            assert detail["balance"] == 3500
    finally:
        assert stop(proc) == 0
    logs = proc.stdout.read()
    assert "level=info logger=tessera.central" in logs and 'request="POST /api/v1/till/payment' in logs
    assert cards[0] not in logs  # full card numbers never reach the logs, not even in paths
    assert 'agent="evil\\" level=error x=\\""' in logs  # client text cannot forge a log line
    assert all(line.startswith("ts=") for line in logs.splitlines() if line)


@pytest.mark.postgres
async def test_two_workers_on_postgres_never_overdraw(tmp_path: Path, pg_only_url: str):
    env = server_env(tmp_path, pg_only_url)
    run_cli("central", "create-user", "--username", "boss", "--role", "admin", env=env)
    port = free_port()
    proc = subprocess.Popen([*CLI, "central", "serve", "--port", str(port), "--workers", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base, proc)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64, force_close=True)) as session:
            api = Api(session, base)
            till, cards = await seed_over_http(api, env)
            await api.call("POST", "/api/v1/till/sale", {"txn_id": str(uuid.uuid4()), "card_number": cards[0],
                                                         "amount": 10000}, headers=till)
            results = await asyncio.gather(*(api.call("POST", "/api/v1/till/payment", {
                "txn_id": str(uuid.uuid4()), "card_number": cards[0], "amount": 70}, headers=till)
                for _ in range(200)))
            assert sum(r["approved"] for r in results) == 142  # 142 * 70 = 9940 <= 10000 < 143 * 70
            balance = await api.call("POST", "/api/v1/till/balance", {"card_number": cards[0]}, headers=till)
            assert balance["balance"] == 60
            report = await api.call("GET", "/api/v1/admin/reports/reconciliation")
            assert report["ok"]
    finally:
        stop(proc)


async def run_printed(session: aiohttp.ClientSession, line: str):
    """Run one command line of the demo's text as printed: ``kill`` by the shell, ``curl`` over HTTP."""
    if line.startswith("kill "):
        subprocess.run(line, shell=True, check=True)
        return None
    argv = shlex.split(line)
    headers, data, method = {}, None, "GET"
    for flag, value in zip(argv, argv[1:]):
        if flag == "-H":
            key, _, val = value.partition(": ")
            headers[key] = val
        elif flag == "-d":
            data = value
        elif flag == "-X":
            method = value
    url = next(a for a in argv if a.startswith("http"))
    async with session.request(method, url, data=data, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_demo_prints_commands_that_work(tmp_path: Path):
    port, edge_port = free_port(), free_port()
    # A session of its own, so that a Ctrl+C can be sent to the demo's whole process group as a terminal does.
    proc = subprocess.Popen([*CLI, "demo", "--port", str(port), "--edge-port", str(edge_port),
                             "--data-dir", str(tmp_path / "demo")], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        for line in proc.stdout:
            output.append(line)
            if "Press Ctrl+C" in line:
                break
        # Keep reading, so that the demo's logs never fill the pipe and block it.
        drain = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
        drain.start()
        await wait_healthy(f"http://127.0.0.1:{port}", proc)
        await wait_healthy(f"http://127.0.0.1:{edge_port}", proc)
        text = "".join(output).replace("\\\n", " ")
        central_pid = int(re.search(r"\(process (\d+)\)", text).group(1))
        commands = [c.strip() for c in text.splitlines() if c.strip().startswith(("curl ", "kill "))]
        assert len(commands) == 15
        edge, central = f"http://127.0.0.1:{edge_port}/", f"http://127.0.0.1:{port}/"
        (kiosk, sale, payment, balance, web, cut, offline_payment, offline_balance, heal, health, login,
         stores, loyalty_sale, receipt, points) = commands
        # The cashier's flow through the simulated devices ran before the banner.
        assert "sells it for 50.00 EUR: approved (online)" in text
        assert "approved, balance 37.50 EUR" in text
        assert "shows:  603400******" in text and "| 37.50 EUR" in text
        assert "Members: 1.99 EUR" in text
        assert "on the pad: approved" in text and "PIN on the pad: approved; with a wrong PIN: pin_incorrect" in text
        assert re.search(r"it earns \d+ points \(online\); on the next receipt, 10.00 EUR, 200 points take 2.00 EUR "
                         r"off \(the tier's cap: True\)", text), text
        assert all(edge in c for c in (sale, payment, balance, offline_payment, offline_balance, health))
        assert all(central in c for c in (web, login, stores))
        assert (cut, heal) == (f"kill -STOP {central_pid}", f"kill -CONT {central_pid}")
        async with aiohttp.ClientSession() as session:
            # The printed fixed price checker command, as another terminal would run it.
            checker = next(c.strip() for c in text.splitlines() if c.strip().startswith("tessera sim pricecheck"))
            shown = subprocess.run([*CLI, *shlex.split(checker)[1:]], capture_output=True, text=True, timeout=60)
            assert shown.returncode == 0 and "2.49 EUR" in shown.stdout and "603400******" in shown.stdout, shown
            product = await run_printed(session, kiosk)
            assert product["kind"] == "product" and any("2.49 EUR" in line["text"] for line in product["lines"])
            answers = [await run_printed(session, c) for c in (sale, payment, balance, web)]
            assert [a.get("decision") for a in answers] == ["online", "online", "online", None]
            assert answers[0]["approved"] and answers[1]["approved"]
            assert answers[2]["balance"] == 3750 and answers[3]["balance"] == 3750

            await run_printed(session, cut)
            paid = await run_printed(session, offline_payment)
            assert (paid["decision"], paid["approved"], paid["balance"]) == ("offline", True, 2750)
            known = await run_printed(session, offline_balance)
            assert (known["decision"], known["balance"]) == ("offline", 2750)
            assert (await run_printed(session, health))["backlog"] == 1

            await run_printed(session, heal)
            for _ in range(300):
                state = await run_printed(session, health)
                if state["backlog"] == 0 and state["central"] == "reachable":
                    break
                await asyncio.sleep(0.1)
            assert (state["backlog"], state["central"], state["acked_seq"]) == (0, "reachable", 1)
            assert (await run_printed(session, web))["balance"] == 2750  # central has the offline payment
            assert (await run_printed(session, login))["role"] == "admin"
            [store] = await run_printed(session, stores)
            assert (store["store"], store["acked_seq"]) == ("S001", 1) and store["last_contact_at"]
            assert (await run_printed(session, loyalty_sale))["approved"]
            earned = await run_printed(session, receipt)
            assert earned["approved"] and earned["points_earned"] >= 19 * 6 and earned["decision"] == "online"
            asked = await run_printed(session, points)
            assert (asked["balance"], asked["decision"]) == (earned["points_earned"], "online")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C: the edge stops, then central
        assert proc.wait(timeout=30) == 0
        drain.join(timeout=10)
        with pytest.raises(ProcessLookupError):
            os.kill(central_pid, 0)
        assert "Traceback" not in "".join(output)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)  # a failure between the printed kill -STOP and -CONT
            stop(proc)


def test_cli_reports_domain_errors_in_one_line(tmp_path: Path):
    env = server_env(tmp_path, f"sqlite:///{tmp_path}/central.db")
    done = subprocess.run([*CLI, "central", "issue-cards", "--programme", "NOPE", "--quantity", "5"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: unknown_programme: unknown programme 'NOPE'"
    assert "Traceback" not in done.stderr


def test_cli_bulk_load_writes_a_result_file(tmp_path: Path):
    env = server_env(tmp_path, f"sqlite:///{tmp_path}/central.db")
    upload = tmp_path / "welfare.csv"
    upload.write_text("reference,card_number,amount\nW-1,6034999999999999,100\n")
    out = run_cli("central", "bulk-load", "--file", str(upload), env=env)
    assert "1 lines, 0 credited, 0 already loaded, 1 failed" in out
    result = (tmp_path / "welfare.result.csv").read_text().splitlines()
    assert result[1].split(",")[4:6] == ["failed", "unknown_card"]


def test_cli_imports_customers_with_a_line_report(tmp_path: Path):
    env = server_env(tmp_path, f"sqlite:///{tmp_path}/central.db")
    upload = tmp_path / "customers.csv"
    upload.write_text("external_id,first_name,last_name,phone,email,consent_email,consent_email_date\n"
                      "C-1,Anna,Smith,+44 7700 900123,anna@example.com,1,2019-05-01\n"
                      "C-2,Bob,Jones,123,,0,\n")
    refused = subprocess.run([*CLI, "central", "customers", "import", str(upload)], env=env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "line 3 phone: invalid_phone" in refused.stdout
    out = run_cli("central", "customers", "import", "--partial", str(upload), env=env)
    assert "2 lines, 1 imported, 1 invalid" in out
