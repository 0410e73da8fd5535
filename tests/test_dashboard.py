"""The operator dashboard as an operator meets it: headless Chromium (Debian's package, driven by
Playwright) against a real `eventbank serve` process. Each page is saved as a screenshot under
artifacts/screenshots/ for a reviewer to look at."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from eventbank.application.queries import ACTIVITY_TAIL, AccountQueries
from eventbank.application.service import LedgerService
from eventbank.engines.urls import open_read_store, open_store
from tests.serving import AUDITOR, TELLER, Server, serve

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("dashboard"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: run `bash scripts/ensure-browser.sh` (make test does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, errors  # no script error on any page


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def sign_in(page: Page, server: Server, token: str, who: str) -> None:
    page.goto(server.url + "/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text(who)


def new_account(server: Server, balance: str | None = None, owner: str = "Ada") -> str:
    account_id = f"acc-{uuid.uuid4().hex[:10]}"
    body = {"account_id": account_id, "owner": owner, "type": "CHECKING"}
    if balance:
        body["initial_deposit"] = balance
    with server.client(TELLER) as teller:
        assert teller.post("/accounts", json=body).status_code == 201
    return account_id


def balance(server: Server, account_id: str) -> str:
    with server.client(TELLER) as teller:
        return teller.get(f"/accounts/{account_id}").json()["balance"]


def run_audit(server: Server) -> dict:
    """POST /audits (202, a background job) and poll its Location until it is done."""
    with server.client(AUDITOR) as auditor:
        started = auditor.post("/audits")
        assert started.status_code == 202, started.text
        deadline = time.monotonic() + 30
        while (job := auditor.get(started.headers["Location"]).json())["status"] == "running":
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
    assert job["status"] == "done", job
    return job["report"]


def test_sign_in_keeps_the_token_in_the_tab_only_and_shows_refusals(page, server, browser):
    page.goto(server.url + "/")
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".problem .title")).to_have_text("Unauthorized")
    expect(page.locator(".problem .detail")).to_have_text("invalid bearer token")
    shot(page, "sign-in-refused")

    sign_in(page, server, server.admin, "admin (admin)")
    assert page.evaluate("sessionStorage.getItem('eventbank.token')") == server.admin
    assert page.evaluate("localStorage.length") == 0
    page.reload()
    expect(page.locator("#who")).to_have_text("admin (admin)")  # the tab keeps its session
    other = browser.new_context().new_page()
    other.goto(server.url + "/")
    expect(other.get_by_label("API token")).to_be_visible()  # another session starts signed out
    other.context.close()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_accounts_list_searches_and_pages(page, server):
    owner = f"Search {uuid.uuid4().hex[:6]}"
    ids = sorted(new_account(server, "5.00", owner=owner) for _ in range(23))
    sign_in(page, server, TELLER, "env-0 (teller)")
    page.get_by_role("link", name="Accounts").click()
    page.get_by_label("Search accounts").fill(owner.split()[1].upper())  # any case
    page.get_by_role("button", name="Search").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(20)
    expect(rows.first).to_contain_text(ids[0])
    expect(rows.first).to_contain_text("5.00 USD")
    shot(page, "accounts")
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_text("Page 2")).to_be_visible()
    expect(rows).to_have_count(3)
    expect(rows.last).to_contain_text(ids[-1])
    expect(page.get_by_role("button", name="Next")).to_be_disabled()
    page.get_by_role("button", name="Previous").click()
    expect(rows).to_have_count(20)


def test_a_double_clicked_transfer_moves_money_once_and_the_history_shows_it(page, server):
    source, target = new_account(server, "100.00"), new_account(server)
    sign_in(page, server, server.admin, "admin (admin)")
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if r.url.endswith("/transfers") else None)
    page.goto(f"{server.url}/#/accounts/{source}")
    page.get_by_role("link", name="Transfer from this account").click()
    expect(page.get_by_label("From account")).to_have_value(source)
    page.get_by_label("To account").fill(target)
    page.get_by_label("Amount").fill("30.00")
    page.get_by_role("button", name="Transfer", exact=True).dblclick()
    expect(page.locator(".success")).to_contain_text("Moved 30.00 USD")
    expect(page.locator(".replayed")).to_contain_text("the money moved once")
    assert len(sent) == 2
    keys = {r.headers["idempotency-key"] for r in sent}
    assert len(keys) == 1, keys  # both clicks carried one key
    assert (balance(server, source), balance(server, target)) == ("70.00", "30.00")
    shot(page, "transfer")

    page.locator(".success").get_by_role("link", name=source).click()
    expect(page.locator(".summary")).to_contain_text("70.00 USD")
    history = page.locator("#history tbody tr")
    expect(history).to_have_count(2)  # the initial deposit and one transfer, newest first
    expect(history.first).to_contain_text("Transfer out")
    expect(history.first).to_contain_text("−30.00 USD")
    expect(history.first).to_contain_text("70.00 USD")
    events = page.locator("#events tbody tr")
    expect(events).to_have_count(3)
    expect(events.first).to_contain_text("TransferredOut")
    assert len(events.first.locator(".hash").inner_text()) == 64
    shot(page, "account")


def test_refusals_show_the_problem_title_and_detail(page, server):
    poor, other = new_account(server, "10.00"), new_account(server)
    sign_in(page, server, TELLER, "env-0 (teller)")
    page.goto(f"{server.url}/#/transfer?from={poor}")
    page.get_by_label("To account").fill(other)
    page.get_by_label("Amount").fill("10.01")
    page.get_by_role("button", name="Transfer", exact=True).click()
    expect(page.locator(".problem .title")).to_have_text("Conflict")
    expect(page.locator(".problem .detail")).to_contain_text("insufficient funds")
    assert balance(server, poor) == "10.00"
    shot(page, "transfer-refused")

    page.goto(f"{server.url}/#/accounts/nobody-here")
    expect(page.locator(".problem .title")).to_have_text("Not found")
    expect(page.locator(".problem .detail")).to_contain_text("'nobody-here' does not exist")
    expect(page.locator("#events")).to_have_count(0)
    shot(page, "account-not-found")
    page.goto(f"{server.url}/#/audit")  # a teller sees the last audit but may not run one
    expect(page.locator(".note").last).to_contain_text("needs the audit permission")


def test_a_payroll_upload_is_followed_until_it_completes(page, server, tmp_path):
    employer = new_account(server, "1000.00")
    staff = [new_account(server) for _ in range(3)]
    csv_file = tmp_path / "november.csv"
    csv_file.write_text("account_id,amount,reference\n" + "".join(
        f"{a},{n + 1}00.00,nov\n" for n, a in enumerate(staff)))  # fmt: skip
    sign_in(page, server, TELLER, "env-0 (teller)")
    page.get_by_role("link", name="Payroll").click()
    page.get_by_label("Paying account").fill(employer)
    page.get_by_label("CSV file").set_input_files(csv_file)
    page.get_by_role("button", name="Start payroll").click()
    expect(page.locator(".badge")).to_have_text("completed")
    expect(page.get_by_text("3 of 3 lines processed: 3 paid")).to_be_visible()
    expect(page.locator(".success")).to_contain_text(f"{employer} now holds 400.00 USD")
    assert [balance(server, a) for a in staff] == ["100.00", "200.00", "300.00"]
    shot(page, "payroll")


def test_an_audit_runs_from_the_page_and_its_report_is_shown(page, server):
    new_account(server, "5.00")  # books to show, whichever tests ran before on this server
    sign_in(page, server, AUDITOR, "env-1 (auditor)")
    expect(page.get_by_role("link", name="Transfer")).to_be_hidden()  # auditors move no money
    page.get_by_role("link", name="Audit").click()
    page.get_by_role("button", name="Run audit").click()
    expect(page.locator(".report .success")).to_contain_text("Clean")
    expect(page.locator(".report tbody tr").first).to_contain_text("USD")
    expect(page.get_by_text("None: every chain, total and read model checks out")).to_be_visible()
    expect(page.locator(".panel").first).to_contain_text("by env-1")
    shot(page, "audit")


def test_the_overview_shows_totals_lag_activity_and_the_last_audit(page, server):
    a, b = new_account(server, "50.00"), new_account(server)
    with server.client(TELLER) as teller:
        for _ in range(5):
            body = {"from_account_id": a, "to_account_id": b, "amount": "1.00"}
            assert teller.post("/transfers", json=body).status_code == 201
        stats = teller.get("/stats").json()
    assert run_audit(server)["clean"]
    sign_in(page, server, server.admin, "admin (admin)")
    cards = page.locator(".card")
    expect(cards.nth(0)).to_contain_text(str(stats["accounts_open"]))
    expect(cards.nth(1)).to_contain_text("0 events")
    expect(cards.nth(2)).to_contain_text("clean")
    expect(cards.nth(2)).to_contain_text("by env-1")
    usd = stats["totals"][0]
    expect(page.locator("tbody tr").first).to_contain_text(f"{usd['balance']} USD")
    expect(page.locator(".chart rect.transfers").first).to_be_attached()
    updated = page.locator(".muted").last
    expect(updated).not_to_have_text(updated.inner_text(), timeout=8000)  # refreshes on its own
    shot(page, "overview")


def test_activity_counts_the_feeds_recent_events_per_bucket_and_marks_what_it_did_not_read(
    store_url, tmp_path
):
    now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    clock = [now - timedelta(seconds=400)]
    events, reads = open_store(store_url), open_read_store(f"sqlite:///{tmp_path / 'read.db'}")
    service = LedgerService(events, clock=lambda: clock[0])
    service.open_account("a", owner="A", account_type="CHECKING", initial_deposit="10.00")
    service.open_account("b", owner="B", account_type="CHECKING")  # both before the window
    clock[0] = now - timedelta(seconds=95)
    service.deposit("a", "1.00")
    clock[0] = now - timedelta(seconds=5)
    service.transfer("a", "b", "1.00")
    service.transfer("a", "b", "2.00")
    queries = AccountQueries(reads, events)

    whole = queries.activity(0, now)  # from the start of the feed: every bucket is known
    rates = [(b["events_per_s"], b["transfers_per_s"]) for b in whole["buckets"]]
    assert (len(rates), whole["sampled_events"]) == (30, 8)
    assert rates[20] == (0.1, 0.0) and rates[29] == (0.4, 0.2)  # 4 events, 2 transfers in 10 s
    assert all(r == (0.0, 0.0) for n, r in enumerate(rates) if n not in (20, 29))

    at_95 = (now - timedelta(seconds=95)).isoformat()
    deposit = next(e for e in events.read_all(0, 100) if e.metadata["recorded_at"] == at_95)
    tail = queries.activity(deposit.position - 1 + ACTIVITY_TAIL, now)  # reads from the deposit
    assert tail["sampled_events"] == 5
    unknown = [b["events_per_s"] is None for b in tail["buckets"]]
    assert unknown == [True] * 21 + [False] * 9  # up to and including the deposit's bucket
    assert tail["buckets"][29]["transfers_per_s"] == 0.2
    reads.close()
    events.close()


def test_an_account_page_shows_what_is_available_and_a_frozen_account_offers_no_transfer(
    page, server
):
    overdrawn = f"acc-{uuid.uuid4().hex[:10]}"
    with server.client(TELLER) as teller, server.client(server.admin) as admin:
        body = {"account_id": overdrawn, "owner": "Ada", "type": "CHECKING",
                "overdraft_limit": "50.00"}  # fmt: skip
        assert teller.post("/accounts", json=body).status_code == 201
        assert teller.post(f"/accounts/{overdrawn}/withdrawals", json={"amount": "20"}).is_success
        frozen = new_account(server, "10.00")
        assert admin.post(f"/accounts/{frozen}/freeze", json={"reason": "review"}).is_success
    sign_in(page, server, server.admin, "admin (admin)")
    page.goto(f"{server.url}/#/accounts/{overdrawn}")
    summary = page.locator(".summary")
    expect(summary).to_contain_text("Balance-20.00 USD")
    expect(summary).to_contain_text("Available30.00 USD")
    expect(summary).to_contain_text("Overdraft limit50.00 USD")
    expect(page.get_by_role("link", name="Transfer from this account")).to_be_visible()
    shot(page, "account-overdraft")

    page.goto(f"{server.url}/#/accounts/{frozen}")
    expect(page.locator("h1")).to_contain_text("FROZEN")
    expect(page.locator(".summary")).to_contain_text("Available10.00 USD")
    expect(page.locator(".summary")).not_to_contain_text("Overdraft limit")
    expect(page.get_by_role("link", name="Transfer from this account")).to_have_count(0)


def test_a_pending_transfer_is_made_shown_posted_and_voided_from_the_pages(page, server):
    payer, payee = new_account(server, "100.00"), new_account(server)
    sign_in(page, server, TELLER, "env-0 (teller)")
    page.goto(f"{server.url}/#/transfer?from={payer}")
    page.get_by_label("To account").fill(payee)
    page.get_by_label("Amount").fill("30.00")
    page.get_by_label("Pending: reserve now, post or void later").check()
    page.get_by_label("Timeout").fill("3600")
    page.get_by_role("button", name="Transfer", exact=True).click()
    expect(page.locator(".success")).to_contain_text(f"Reserved 30.00 USD on {payer}")
    expect(page.locator(".success")).to_contain_text("available now 70.00")
    with server.client(TELLER) as teller:
        body = {"from_account_id": payer, "to_account_id": payee, "amount": "5.00",
                "pending": True}  # fmt: skip
        assert teller.post("/transfers", json=body).status_code == 201

    page.goto(f"{server.url}/#/accounts/{payer}")
    summary = page.locator(".summary")
    expect(summary).to_contain_text("Balance100.00 USD")
    expect(summary).to_contain_text("Available65.00 USD")
    expect(summary).to_contain_text("Pending debits35.00 USD")
    pending = page.locator("#pending tbody tr")
    expect(pending).to_have_count(2)
    expect(page.locator("#history")).to_contain_text("Held (pending out)")
    shot(page, "account-pending")

    page.once("dialog", lambda dialog: dialog.accept())
    pending.filter(has_text="30.00 USD").get_by_role("button", name="Post").click()
    expect(pending).to_have_count(1)
    expect(summary).to_contain_text("Balance70.00 USD")
    page.once("dialog", lambda dialog: dialog.accept())
    pending.get_by_role("button", name="Void").click()
    expect(page.locator("#pending")).to_contain_text("No pending transfers")
    expect(summary).to_contain_text("Available70.00 USD")
    expect(summary).not_to_contain_text("Pending debits")
    assert balance(server, payee) == "30.00"
    page.goto(f"{server.url}/#/accounts/{payee}")
    expect(page.locator("#history")).to_contain_text("Hold posted")


def test_an_admin_freezes_unfreezes_and_sets_a_limit_from_the_account_page(page, server):
    account = new_account(server, "10.00")
    sign_in(page, server, server.admin, "admin (admin)")
    page.goto(f"{server.url}/#/accounts/{account}")
    page.get_by_text("Admin: freeze, overdraft limit").click()
    page.get_by_label("Reason").fill("card reported stolen")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Freeze").click()
    expect(page.locator("h1")).to_contain_text("FROZEN")
    page.get_by_text("Admin: freeze, overdraft limit").click()
    page.get_by_label("Overdraft limit").fill("25.00")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Set limit").click()
    expect(page.locator(".summary")).to_contain_text("Overdraft limit25.00 USD")
    expect(page.locator(".summary")).to_contain_text("Available35.00 USD")
    page.get_by_text("Admin: freeze, overdraft limit").click()
    page.get_by_label("Reason").fill("cleared")
    page.once("dialog", lambda dialog: dialog.dismiss())  # a change of mind: nothing is sent
    page.get_by_role("button", name="Unfreeze").click()
    expect(page.locator("h1")).to_contain_text("FROZEN")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Unfreeze").click()
    expect(page.locator("h1")).to_contain_text("OPEN")
    shot(page, "account-admin")

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server, TELLER, "env-0 (teller)")  # a teller sees no admin controls
    page.goto(f"{server.url}/#/accounts/{account}")
    expect(page.locator(".summary")).to_be_visible()
    expect(page.get_by_text("Admin: freeze, overdraft limit")).to_have_count(0)
