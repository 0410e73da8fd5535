"""The operator dashboard as an operator meets it: headless Chromium (Debian's package, driven by
Playwright) against a real `eventbank serve` process. Assertions read the page's text and the
state of its elements; each page is also saved at 1280 px and at a phone's 390 px under
artifacts/screenshots/ for a reviewer to look at. After every test, no page shows `null`,
`undefined` or `NaN` and no script failed."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from eventbank.application.queries import ACTIVITY_TAIL, AccountQueries
from eventbank.application.service import LedgerService
from eventbank.engines.urls import open_read_store, open_store
from eventbank.webhooks import SignatureError
from tests.serving import AUDITOR, TELLER, Server, serve
from tests.test_webhooks import Receiver

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
DESKTOP, PHONE = {"width": 1280, "height": 860}, {"width": 390, "height": 844}
NOT_TEXT = re.compile(r"\b(null|undefined|NaN)\b")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    # webhooks may target a receiver on loopback (http): a development-only option
    yield from serve(tmp_path_factory.mktemp("dashboard"), "--allow-http-webhooks")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: run `bash scripts/ensure-browser.sh` (make test does)")
    # A page takes seconds to render on two busy cores (Swagger UI once missed the 5 s default);
    # what never appears still fails, later.
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    clean(opened)
    context.close()
    assert not errors, errors  # no script error on any page


def clean(page: Page) -> None:
    """The dashboard shows no `null`, `undefined` or `NaN`: what a missing field would print.
    (Other pages opened with this fixture, such as the API docs, show JSON examples.)"""
    if urlsplit(page.url).path not in ("", "/"):
        return
    text = page.locator("body").inner_text()
    assert not NOT_TEXT.search(text), NOT_TEXT.search(text)


def shot(page: Page, name: str) -> None:
    """The page as it is, at 1280 px and at 390 px (then back to 1280 px)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    clean(page)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=SCREENSHOTS / f"{name}-390.png", full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    if urlsplit(page.url).path in ("", "/"):  # the dashboard's own pages
        assert width <= PHONE["width"], f"{name}: the page is {width} px wide on a phone"
    page.set_viewport_size(DESKTOP)


def sign_in(page: Page, server: Server, token: str, who: str) -> None:
    page.goto(server.url + "/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text(who)


def new_account(
    server: Server, balance: str | None = None, owner: str = "Ada", currency: str = "USD"
) -> str:
    account_id = f"acc-{uuid.uuid4().hex[:10]}"
    body = {"account_id": account_id, "owner": owner, "type": "CHECKING", "currency": currency}
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


def confirm(page: Page, button: str, container=None) -> None:
    """Submit a form by its button, read the confirm step, and confirm."""
    scope = container or page
    scope.get_by_role("button", name=button, exact=True).click()
    step = scope.locator(".confirm-step")
    expect(step).to_be_visible()
    step.get_by_role("button", name="Confirm").click()


# ------------------------------------------------------------------ signing in, money as money


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


def test_money_reads_as_money_in_each_currencys_decimals(page, server):
    owner = f"Money {uuid.uuid4().hex[:6]}"
    usd = new_account(server, "1343865.43", owner=owner)
    jpy = new_account(server, "1500000", owner=owner, currency="JPY")
    bhd = new_account(server, "2500.125", owner=owner, currency="BHD")
    sign_in(page, server, TELLER, "env-0 (teller)")
    page.get_by_role("link", name="Accounts").click()
    page.get_by_label("Search accounts").fill(owner)
    page.get_by_role("button", name="Search").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(3)
    for account, shown in ((usd, "1,343,865.43 USD"), (jpy, "1,500,000 JPY"),
                           (bhd, "2,500.125 BHD")):  # fmt: skip
        expect(rows.filter(has_text=account)).to_contain_text(shown)
    shot(page, "accounts")
    page.goto(f"{server.url}/#/accounts/{jpy}")
    expect(page.locator(".summary")).to_contain_text("Balance1,500,000 JPY")
    expect(page.locator("#history tbody tr").first).to_contain_text("+1,500,000 JPY")
    page.goto(server.url + "/#/")
    expect(page.locator("table").first).to_contain_text("JPY")
    totals = page.locator("table").first.locator("tr", has_text="BHD")
    expect(totals).to_contain_text(re.compile(r"[0-9],[0-9]{3}\.[0-9]{3} BHD"))


def test_a_search_answered_before_the_first_list_is_not_replaced_by_it(page, server):
    """The accounts view lists every account first; a search sent before that list answers
    must stay on screen when it does (it once replaced the search's rows)."""
    owner = f"Late {uuid.uuid4().hex[:6]}"
    ids = sorted(new_account(server, "1.00", owner=owner) for _ in range(2))
    new_account(server, "1.00", owner="Someone else")
    held = []
    unfiltered = re.compile(r"/accounts\?q=&")
    page.route(unfiltered, lambda route: held.append(route))  # the first list waits, unanswered
    sign_in(page, server, TELLER, "env-0 (teller)")
    with page.expect_request(unfiltered):
        page.get_by_role("link", name="Accounts").click()
    page.get_by_label("Search accounts").fill(owner)
    page.get_by_role("button", name="Search").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    with page.expect_response(unfiltered):
        held[0].continue_()
    page.evaluate("() => new Promise((settled) => setTimeout(settled, 500))")  # let it render
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text(ids[0])


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
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_text("Page 2")).to_be_visible()
    expect(rows).to_have_count(3)
    expect(rows.last).to_contain_text(ids[-1])
    expect(page.get_by_role("button", name="Next")).to_be_disabled()
    page.get_by_role("button", name="Previous").click()
    expect(rows).to_have_count(20)


# ------------------------------------------------------------------ acting on accounts


def test_an_account_is_opened_funded_drawn_on_and_closed_from_the_pages(page, server):
    account = f"acc-{uuid.uuid4().hex[:10]}"
    sign_in(page, server, TELLER, "env-0 (teller)")
    page.get_by_role("link", name="Accounts").click()
    page.get_by_role("link", name="Open an account").click()
    page.get_by_label("Account id").fill(account)
    page.get_by_label("Owner").fill("Grace Hopper")
    page.get_by_label("Initial deposit").fill("1200.50")
    page.get_by_role("button", name="Open account").click()
    expect(page.locator(".confirm-step")).to_contain_text(f"Open USD account {account}")
    expect(page.locator(".confirm-step")).to_contain_text("1,200.50 USD")
    page.get_by_role("button", name="Back").click()  # a change of mind: nothing is sent
    expect(page.locator(".confirm-step")).to_have_count(0)
    with server.client(TELLER) as teller:
        assert teller.get(f"/accounts/{account}").status_code == 404
    confirm(page, "Open account")
    expect(page.locator(".success")).to_contain_text("holding 1,200.50 USD")
    shot(page, "account-open")

    page.locator(".success").get_by_role("link", name=account).click()
    page.get_by_role("tab", name="Withdraw").click()
    page.get_by_label("Amount").fill("200.50")
    confirm(page, "Withdraw")
    expect(page.locator(".success")).to_contain_text("the balance is now 1,000.00 USD")
    page.get_by_role("tab", name="Withdraw").click()  # a second withdrawal beyond the balance
    page.get_by_label("Amount").fill("1000.01")
    confirm(page, "Withdraw")
    expect(page.locator(".problem .title")).to_have_text("Insufficient funds")
    assert balance(server, account) == "1000.00"
    page.get_by_role("tab", name="Close").click()
    confirm(page, "Close account")
    expect(page.locator(".problem .title")).to_have_text("Balance not zero")
    page.get_by_role("tab", name="Withdraw").click()
    page.get_by_label("Amount").fill("1000.00")
    confirm(page, "Withdraw")
    expect(page.locator(".success")).to_contain_text("the balance is now 0.00 USD")
    page.get_by_role("tab", name="Close").click()
    confirm(page, "Close account")
    expect(page.locator(".success")).to_contain_text(f"{account} is closed")
    page.get_by_role("button", name="Show the account again").click()
    expect(page.locator("h1")).to_contain_text("CLOSED")
    expect(page.get_by_role("tab", name="Deposit")).to_have_count(0)
    history = page.locator("#history tbody tr")
    expect(history).to_have_count(3)
    expect(history.first).to_contain_text("−1,000.00 USD")
    shot(page, "account-closed")


def test_a_double_clicked_transfer_moves_money_once_and_its_page_shows_both_sides(page, server):
    source, target = new_account(server, "100.00"), new_account(server)
    sign_in(page, server, server.admin, "admin (admin)")
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if r.url.endswith("/transfers") else None)
    page.goto(f"{server.url}/#/accounts/{source}")
    page.get_by_role("tab", name="Transfer").click()
    page.get_by_role("link", name="Transfer from this account").click()
    expect(page.get_by_label("From account")).to_have_value(source)
    page.get_by_label("To account").fill(target[:8])  # suggestions from the API as one types
    expect(page.locator(f"datalist option[value='{target}']")).to_have_count(1)
    page.get_by_label("To account").fill(target)
    page.get_by_label("Amount").fill("30.00")
    page.get_by_label("Order id (metadata)").fill("ord-77")
    page.get_by_role("button", name="Transfer", exact=True).click()
    expect(page.locator(".confirm-step")).to_contain_text(f"Move 30.00 from {source} to {target}?")
    page.get_by_role("button", name="Confirm").dblclick()
    expect(page.locator(".success")).to_contain_text("Moved 30.00 USD")
    assert len(sent) == 1  # the confirm button is disabled once clicked
    confirm(page, "Transfer")  # the same form sent again: the same key, answered from the first
    expect(page.locator(".replayed")).to_contain_text("the money moved once")
    assert len(sent) == 2
    keys = {r.headers["idempotency-key"] for r in sent}
    assert len(keys) == 1, keys  # both sends carried one key
    assert (balance(server, source), balance(server, target)) == ("70.00", "30.00")
    shot(page, "transfer-new")

    page.locator(".success").get_by_role("link", name=re.compile("^[0-9a-f-]{36}$")).click()
    expect(page.locator("h1")).to_contain_text("Transfer posted")
    expect(page.locator(".summary")).to_contain_text("Amount moved30.00 USD")
    expect(page.locator(".meta")).to_contain_text("order_id: ord-77")
    movements = page.locator("table").last.locator("tbody tr")
    expect(movements).to_have_count(2)
    expect(movements.filter(has_text=source)).to_contain_text("−30.00 USD")
    expect(movements.filter(has_text=target)).to_contain_text("+30.00 USD")
    expect(movements.first).to_contain_text("admin")  # who made it
    shot(page, "transfer")

    page.get_by_label("Amount to reverse").fill("10.00")
    confirm(page, "Reverse")
    expect(page.locator(".success")).to_contain_text("Reversed")
    page.get_by_role("button", name="Show this transfer again").click()
    expect(page.locator(".summary")).to_contain_text("Reversed10.00 USD")
    expect(page.get_by_text("Reversed by")).to_be_visible()
    assert (balance(server, source), balance(server, target)) == ("80.00", "20.00")

    page.goto(f"{server.url}/#/accounts/{source}")
    history = page.locator("#history tbody tr")
    expect(history).to_have_count(3)  # the initial deposit, the transfer, its reversal
    expect(history.nth(1)).to_contain_text("Transfer out")
    expect(history.nth(1)).to_contain_text("order_id: ord-77")
    expect(history.nth(1)).to_contain_text("admin")
    expect(history.last).to_contain_text("env-0")  # the opening deposit, by the teller
    page.get_by_text("Stored events and their chain hashes").click()
    events = page.locator("#events tbody tr")
    expect(events.filter(has_text="AccountOpened")).to_have_count(1)
    expect(events.filter(has_text="TransferredOut")).to_contain_text("admin")  # who did it
    assert len(events.first.locator(".hash").inner_text()) == 64
    shot(page, "account")


def test_refusals_are_titled_by_what_happened(page, server):
    poor, other = new_account(server, "10.00"), new_account(server)
    sign_in(page, server, TELLER, "env-0 (teller)")
    page.goto(f"{server.url}/#/transfers/new?from={poor}")
    page.get_by_label("To account").fill(other)
    page.get_by_label("Amount").fill("10.01")
    confirm(page, "Transfer")
    expect(page.locator(".problem .title")).to_have_text("Insufficient funds")
    expect(page.locator(".problem .detail")).to_contain_text("insufficient funds")
    assert balance(server, poor) == "10.00"
    shot(page, "transfer-refused")

    page.goto(f"{server.url}/#/accounts/nobody-here")
    expect(page.locator(".problem .title")).to_have_text("Account not found")
    expect(page.locator(".problem .detail")).to_contain_text("'nobody-here' does not exist")
    shot(page, "account-not-found")
    page.goto(f"{server.url}/#/audit")  # a teller sees the last audit but may not run one
    expect(page.locator(".note").last).to_contain_text("needs the audit permission")


def test_pending_transfers_are_made_found_posted_and_voided_from_the_pages(page, server):
    payer, payee = new_account(server, "100.00"), new_account(server)
    sign_in(page, server, TELLER, "env-0 (teller)")
    page.goto(f"{server.url}/#/transfers/new?from={payer}")
    page.get_by_label("To account").fill(payee)
    page.get_by_label("Amount").fill("30.00")
    page.get_by_label("Pending: reserve now, post or void later").check()
    page.get_by_label("Timeout").fill("3600")
    confirm(page, "Transfer")
    expect(page.locator(".success")).to_contain_text(f"Reserved 30.00 USD on {payer}")
    expect(page.locator(".success")).to_contain_text("available now 70.00 USD")
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

    pending.filter(has_text="30.00 USD").get_by_role("link").first.click()
    expect(page.locator("h1")).to_contain_text("pending")
    page.get_by_label("Amount to post").fill("25.00")
    confirm(page, "Post")
    expect(page.locator(".success")).to_contain_text("Posted")
    page.get_by_role("button", name="Show the transfer again").click()
    expect(page.locator("h1")).to_contain_text("posted")
    expect(page.locator(".summary")).to_contain_text("Amount moved25.00 USD")
    shot(page, "transfer-posted")

    page.goto(f"{server.url}/#/transfers")
    page.get_by_label("Account").fill(payer)
    page.get_by_label("Status").select_option("pending")
    page.get_by_role("button", name="Search").click()
    found = page.locator("tbody tr")
    expect(found).to_have_count(1)
    expect(found).to_contain_text("5.00 USD")
    shot(page, "transfers")
    found.get_by_role("link", name="transfer").click()
    confirm(page, "Void")
    expect(page.locator(".success")).to_contain_text("Voided")
    assert (balance(server, payer), balance(server, payee)) == ("75.00", "25.00")
    page.goto(f"{server.url}/#/accounts/{payer}")
    expect(page.locator("#pending")).to_contain_text("No pending transfers")
    expect(page.locator(".summary")).not_to_contain_text("Pending debits")


def test_an_admin_freezes_unfreezes_and_sets_a_limit_from_the_account_page(page, server):
    account = new_account(server, "10.00")
    sign_in(page, server, server.admin, "admin (admin)")
    page.goto(f"{server.url}/#/accounts/{account}")
    page.get_by_text("Admin: freeze, overdraft limit").click()
    page.get_by_label("Reason").fill("card reported stolen")
    confirm(page, "Freeze")
    page.get_by_role("button", name="Show the account again").click()
    expect(page.locator("h1")).to_contain_text("FROZEN")
    page.get_by_text("Admin: freeze, overdraft limit").click()
    page.get_by_label("Overdraft limit").fill("25.00")
    confirm(page, "Set limit")
    page.get_by_role("button", name="Show the account again").click()
    expect(page.locator(".summary")).to_contain_text("Overdraft limit25.00 USD")
    expect(page.locator(".summary")).to_contain_text("Available35.00 USD")
    page.get_by_text("Admin: freeze, overdraft limit").click()
    page.get_by_label("Reason").fill("cleared")
    confirm(page, "Unfreeze")
    page.get_by_role("button", name="Show the account again").click()
    expect(page.locator("h1")).to_contain_text("OPEN")
    shot(page, "account-admin")

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server, TELLER, "env-0 (teller)")  # a teller sees no admin controls
    page.goto(f"{server.url}/#/accounts/{account}")
    expect(page.locator(".summary")).to_be_visible()
    expect(page.get_by_text("Admin: freeze, overdraft limit")).to_have_count(0)


def test_a_statement_is_shown_and_downloaded_as_csv(page, server):
    account, other = new_account(server, "100.00"), new_account(server)
    with server.client(TELLER) as teller:
        body = {"from_account_id": account, "to_account_id": other, "amount": "12.34"}
        assert teller.post("/transfers", json=body).status_code == 201
    sign_in(page, server, TELLER, "env-0 (teller)")
    page.goto(f"{server.url}/#/accounts/{account}")
    page.get_by_role("button", name="Show statement").click()
    totals = page.locator(".statement-totals")
    expect(totals).to_contain_text("Opening0.00 USD")
    expect(totals).to_contain_text("Money in+100.00 USD")
    expect(totals).to_contain_text("Money out−12.34 USD")
    expect(totals).to_contain_text("Closing87.66 USD")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    csv = Path(download.value.path()).read_text()
    assert "-12.34" in csv and "87.66" in csv, csv
    assert download.value.suggested_filename.startswith(f"statement-{account}-")
    shot(page, "account-statement")


# ------------------------------------------------------------------ payrolls, audit, overview


def test_a_payroll_is_followed_until_it_completes_and_found_again_from_the_list(
    page, server, tmp_path
):
    employer = new_account(server, "1000.00")
    staff = [new_account(server) for _ in range(3)]
    csv_file = tmp_path / "november.csv"
    csv_file.write_text("account_id,amount,reference\n" + "".join(
        f"{a},{n + 1}00.00,nov\n" for n, a in enumerate(staff)))  # fmt: skip
    sign_in(page, server, TELLER, "env-0 (teller)")
    page.get_by_role("link", name="Payrolls").click()
    page.get_by_role("link", name="Start a payroll").click()
    page.get_by_label("Paying account").fill(employer)
    page.get_by_label("CSV file").set_input_files(csv_file)
    confirm(page, "Start payroll")
    expect(page.locator(".badge")).to_have_text("completed")
    expect(page.get_by_text("3 of 3 lines processed: 3 paid")).to_be_visible()
    expect(page.get_by_text("Moved 600.00 USD of 600.00 USD.")).to_be_visible()
    payroll = unquote(page.url.split("/")[-1])
    assert [balance(server, a) for a in staff] == ["100.00", "200.00", "300.00"]
    shot(page, "payroll")

    page.get_by_role("link", name="Overview").click()
    page.get_by_role("link", name="Payrolls").click()
    expect(page.locator("h1")).to_have_text("Payrolls")
    row = page.locator("tbody tr", has_text=employer)
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text("3 of 3 lines")
    expect(row).to_contain_text("600.00 USD of 600.00 USD")
    shot(page, "payrolls")
    row.get_by_role("link", name=payroll).click()
    expect(page.get_by_text("3 of 3 lines processed: 3 paid")).to_be_visible()


def test_a_refused_payroll_lists_each_rejected_line_once(page, server, tmp_path):
    employer = new_account(server, "1000.00")
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(f"account_id,amount,reference\n{employer},abc,x\n{employer},1.001,y\n")
    sign_in(page, server, TELLER, "env-0 (teller)")
    page.goto(f"{server.url}/#/payrolls/new")
    page.get_by_label("Paying account").fill(employer)
    page.get_by_label("CSV file").set_input_files(csv_file)
    confirm(page, "Start payroll")
    problem = page.locator(".problem")
    expect(problem.locator(".title")).to_have_text("Payroll rejected")
    expect(problem.locator("li")).to_have_count(2)
    for line in ("Line 2", "Line 3"):
        assert problem.inner_text().count(line) + problem.inner_text().count(line.lower()) == 1
    assert balance(server, employer) == "1000.00"
    shot(page, "payroll-refused")


def test_an_audit_runs_from_the_page_and_its_report_is_shown(page, server):
    new_account(server, "5.00")  # books to show, whichever tests ran before on this server
    sign_in(page, server, AUDITOR, "env-1 (auditor)")
    expect(page.get_by_role("link", name="Tokens")).to_be_hidden()  # an admin's page
    page.get_by_role("link", name="Audit").click()
    page.get_by_role("button", name="Run audit").click()
    expect(page.locator(".report .success")).to_contain_text("Clean", timeout=30_000)  # a busy CI
    expect(page.locator(".report tbody").first).to_contain_text("USD")
    expect(page.get_by_text("None: every chain, total and read model checks out")).to_be_visible()
    expect(page.locator(".panel").first).to_contain_text("by env-1")
    shot(page, "audit")


def test_the_overview_shows_totals_lag_the_last_audit_and_recent_activity(page, server):
    a, b = new_account(server, "50.00"), new_account(server)
    with server.client(TELLER) as teller:
        for _ in range(12):  # 25 movements with the deposit: more than a page of 20
            body = {"from_account_id": a, "to_account_id": b, "amount": "1.00"}
            assert teller.post("/transfers", json=body).status_code == 201
        stats = teller.get("/stats").json()
    assert run_audit(server)["clean"]
    sign_in(page, server, server.admin, "admin (admin)")
    cards = page.locator(".card")
    expect(cards.nth(0)).to_contain_text(f"{stats['accounts_open']:,}")
    expect(cards.nth(1)).to_contain_text("0 events")
    expect(cards.nth(2)).to_contain_text("clean")
    expect(cards.nth(2)).to_contain_text("by env-1")
    expect(page.locator(".chart rect.transfers").first).to_be_attached()
    activity = page.locator("#activity tbody tr")
    expect(activity).to_have_count(20)
    expect(activity.first).to_contain_text(b)  # the newest: the last transfer's credit side
    expect(activity.first).to_contain_text("+1.00 USD")
    expect(activity.first).to_contain_text("env-0")
    page.get_by_role("button", name="Show older").click()
    expect(activity).not_to_have_count(20)
    updated = page.locator("p.muted").first
    expect(updated).not_to_have_text(updated.inner_text(), timeout=20_000)  # refreshes itself
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


def test_an_admin_adds_a_token_sees_its_secret_once_and_revokes_it(page, server):
    name = f"desk-{uuid.uuid4().hex[:6]}"
    sign_in(page, server, server.admin, "admin (admin)")
    page.get_by_role("link", name="Tokens").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Role").select_option("teller")
    confirm(page, "Add token")
    secret = page.locator("pre.secret").inner_text().strip()
    with server.client(secret) as teller:
        assert teller.get("/whoami").json()["role"] == "teller"
    page.get_by_role("button", name="Show the tokens again").click()
    listed = page.locator("#tokens tbody tr", has_text=name)
    expect(listed).to_contain_text("teller")
    expect(page.locator("pre.secret")).to_have_count(0)  # shown once, never again
    assert secret not in page.locator("body").inner_text()
    shot(page, "tokens")
    confirm(page, "Revoke", listed)
    expect(page.locator(".success")).to_contain_text(f"{name} is revoked")
    with server.client(secret) as revoked:
        deadline = time.monotonic() + 10
        while revoked.get("/whoami").status_code != 401:
            assert time.monotonic() < deadline, "the revoked token still works"
            time.sleep(0.2)


def until(done, what: str, timeout_s: float = 30) -> None:
    """Wait, a bounded time, for something the server does on its own (delivery, retries)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)


def wanted_events(client, accounts, types) -> set[str]:
    """The ids of the accounts' stored events of those types."""
    stored = [e for a in accounts for e in client.get(f"/accounts/{a}/events").json()["items"]]
    return {e["event_id"] for e in stored if e["event_type"] in types}


def delivered_ids(receiver: Receiver) -> set[str]:
    return {e["event_id"] for e in receiver.events()}


def test_an_admin_adds_a_webhook_that_delivers_signed_events_then_pauses_and_removes_it(
    page, server
):
    wanted = ("AccountOpened", "TransferredOut", "TransferredIn")
    receiver = Receiver()
    try:
        with server.client(server.admin) as admin:
            sign_in(page, server, server.admin, "admin (admin)")
            page.get_by_role("link", name="Webhooks").click()
            expect(page.locator("h1")).to_have_text("Webhooks")
            page.get_by_label("URL").fill(receiver.url)
            page.get_by_label("Event types").fill(", ".join(wanted))
            page.get_by_label("Description").fill("the dashboard test's receiver")
            page.get_by_role("button", name="Add webhook").click()
            expect(page.locator(".confirm-step")).to_contain_text(
                f"POST {', '.join(wanted)} event to {receiver.url}"
            )
            page.locator(".confirm-step").get_by_role("button", name="Confirm").click()
            added = page.locator(".success")
            expect(added).to_contain_text("signing secret now: it is not shown again")
            secret = page.locator("pre.secret").inner_text().strip()
            webhook = re.search(r"Added (\S+)\.", added.inner_text()).group(1)
            path = f"/webhooks/{webhook}"
            assert admin.get(path).json()["description"] == "the dashboard test's receiver"
            page.reload()
            listed = page.locator("#webhooks tbody tr", has_text=receiver.url)
            expect(listed).to_contain_text("active")
            expect(listed).to_contain_text(", ".join(wanted))
            expect(listed).to_contain_text("0 events · 0 s")
            expect(listed).to_contain_text("the dashboard test's receiver")
            expect(page.locator("pre.secret")).to_have_count(0)  # shown once, never again
            assert secret not in page.locator("body").inner_text()

            # money moved over HTTP reaches the receiver, signed with the secret shown
            payer, payee = new_account(server, "100.00"), new_account(server)
            body = {"from_account_id": payer, "to_account_id": payee, "amount": "12.50"}
            assert admin.post("/transfers", json=body).status_code == 201
            expected = wanted_events(admin, (payer, payee), wanted)
            assert len(expected) == 4, expected  # two openings, the transfer's two sides
            until(lambda: expected <= delivered_ids(receiver), "the events delivered")
            delivered = receiver.events(secret)  # every request's signature checked
            assert expected <= {e["event_id"] for e in delivered}
            assert {e["event_type"] for e in delivered} <= set(wanted)  # the filter holds
            with pytest.raises(SignatureError):
                receiver.events("not-the-secret-" * 3)
            until(lambda: admin.get(path).json()["status"]["last_success_at"], "a success")
            page.reload()
            expect(listed).to_contain_text("UTC")  # the last delivery's time

            # a receiver that fails: nothing is skipped, the page shows the error and the lag
            receiver.status = 500
            failed_before = len(receiver.requests)
            assert admin.post("/transfers", json=body).status_code == 201
            until(lambda: admin.get(path).json()["status"]["last_error"], "a failure recorded")
            assert len(receiver.requests) > failed_before
            page.reload()
            state, behind, last_error = (listed.locator("td").nth(n) for n in (2, 3, 5))
            expect(last_error).to_have_text("HTTP 500")
            expect(state).to_have_text(re.compile(r"^(retrying|failing) · [1-9][0-9]* attempts?$"))
            expect(behind).to_have_text(re.compile(r"^[1-9][0-9]* events? · [0-9]+ s$"))
            shot(page, "webhooks")

            confirm(page, "Pause", listed)
            expect(listed.locator(".success")).to_contain_text("Done.")
            page.get_by_role("button", name="Show the webhooks again").click()
            expect(listed.locator(".badge")).to_have_text("paused")
            assert admin.get(path).json()["paused"] is True

            receiver.status = 200  # back up: resumed, it delivers what it missed
            confirm(page, "Resume", listed)
            expect(listed.locator(".success")).to_contain_text("Done.")
            # the retry backed off while the receiver failed (jittered, up to minutes)
            until(lambda: admin.get(path).json()["status"]["lag_events"] == 0, "caught up", 120)
            page.reload()
            expect(listed.locator(".badge")).to_have_text("active")
            expect(listed).to_contain_text("0 events · 0 s")
            expected = wanted_events(admin, (payer, payee), wanted)
            assert len(expected) == 6, expected
            assert expected <= {e["event_id"] for e in receiver.events(secret)}  # none skipped

            confirm(page, "Remove", listed)
            expect(listed.locator(".success")).to_contain_text("Done.")
            page.get_by_role("button", name="Show the webhooks again").click()
            expect(page.locator("h1")).to_have_text("Webhooks")
            expect(listed).to_have_count(0)
            assert admin.get(path).status_code == 404
    finally:
        receiver.stop()

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server, TELLER, "env-0 (teller)")  # a teller is not shown the page
    expect(page.get_by_role("link", name="Webhooks")).to_be_hidden()
    page.goto(f"{server.url}/#/webhooks")
    expect(page.locator(".note")).to_have_text("Managing webhooks needs the admin role.")


def test_on_a_phone_the_menu_opens_the_navigation_and_tables_scroll_inside_the_page(
    browser, server
):
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    for n in range(3):
        new_account(server, f"{n + 1}234567.89", owner="Wide Table Owner With A Long Name")
    sign_in(page, server, TELLER, "env-0 (teller)")
    menu = page.get_by_role("button", name="Menu")
    expect(menu).to_be_visible()
    expect(page.get_by_role("link", name="Accounts")).to_be_hidden()
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    page.get_by_role("link", name="Accounts").click()
    expect(page.locator("h1")).to_have_text("Accounts")
    expect(page.get_by_role("link", name="Accounts")).to_be_hidden()  # closed after choosing
    expect(page.locator("tbody tr").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    menu.click()  # closed again by the keyboard alone
    expect(menu).to_have_attribute("aria-expanded", "true")
    page.evaluate("document.activeElement.blur()")
    for _ in range(40):  # keyboard-usable: Tab reaches the menu button, Enter works it
        if page.evaluate("document.activeElement.id") == "menu":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "menu"
    page.keyboard.press("Enter")
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(page.get_by_role("link", name="Accounts")).to_be_hidden()
    clean(page)
    context.close()
