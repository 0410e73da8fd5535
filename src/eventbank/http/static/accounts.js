// Accounts: finding one, opening one, and an account's page: what it holds, acting on it
// (deposit, withdraw, close, transfer; admin: freeze, overdraft limit), its pending transfers,
// its history with running balance, a statement (CSV download) and, for auditors, its raw events.
"use strict";

import {
  PAGE, accountLink, actionForm, api, badge, cursorPages, emptyRow, field, h, isZero, items, may, money, note,
  problemBox, reload, row, success, table, td, transferLink, when,
} from "./lib.js";
import { KINDS, signOf } from "./movements.js";

const AMOUNT = { inputmode: "decimal", placeholder: "25.00", pattern: "[0-9]{1,20}([.][0-9]{1,3})?",
  title: "a decimal amount such as 25.00" };
export const amountField = (label = "Amount", props = {}) => field(label, { ...AMOUNT, ...props });

export async function accountsList(view) {
  const q = h("input", { type: "search", name: "q", placeholder: "Search id or owner",
    "aria-label": "Search accounts" });
  const results = h("div");
  const first = cursorPages(results, async (after) => {
    const params = new URLSearchParams({ q: q.value.trim(), after, limit: 20 });
    const page = (await api("GET", `/accounts?${params}`)).data;
    return { next: page.next_after, content:
      table([["Account"], ["Owner"], ["Type"], ["Balance", "num"], ["Available", "num"], ["Status"]],
        page.items.map((a) => row(td(accountLink(a.account_id)), td(a.owner), td(a.type),
          td(money(a.balance, a.currency), "num"), td(money(a.available, a.currency), "num"),
          td(badge(a.status, a.status === "OPEN")))),
        page.next_after ? "None in this stretch of accounts: Next searches further" : "No matching accounts") };
  });
  const search = (event) => {
    event.preventDefault();
    first().catch((error) => results.replaceChildren(problemBox(error)));
  };
  view.append(h("div", { class: "title-row" }, h("h1", {}, "Accounts"),
    may("write") ? h("a", { class: "button", href: "#/accounts/new" }, "Open an account") : null),
  h("form", { class: "inline", onsubmit: search }, q, h("button", { type: "submit" }, "Search")),
  results);
  await first();
}

export async function openAccountPage(view) {
  view.append(h("h1", {}, "Open an account"));
  if (!may("write")) {
    view.append(note("Opening accounts needs the write permission (teller or admin role)."));
    return;
  }
  const [idLabel, id] = field("Account id", { maxlength: 64, pattern: "[A-Za-z0-9_.:-]{1,64}",
    title: "letters, digits and _ . : - (up to 64)" });
  const [ownerLabel, owner] = field("Owner", { maxlength: 200 });
  const type = h("select", { name: "type" }, ["CHECKING", "SAVINGS"].map((t) => h("option", {}, t)));
  const [currencyLabel, currency] = field("Currency", { value: "USD", maxlength: 3, pattern: "[A-Z]{3}",
    title: "an ISO 4217 code such as USD" });
  const [depositLabel, deposit] = amountField("Initial deposit", { required: false, placeholder: "0.00" });
  view.append(actionForm({
    fields: [idLabel, ownerLabel, h("label", {}, "Type", type), currencyLabel, depositLabel],
    label: "Open account",
    describe: () => `Open ${currency.value.trim()} account ${id.value.trim()} for ${owner.value.trim()}`
      + (deposit.value.trim() ? ` with ${money(deposit.value.trim(), currency.value.trim())}?` : ", empty?"),
    send: (key) => {
      const body = { account_id: id.value.trim(), owner: owner.value.trim(), type: type.value,
        currency: currency.value.trim() };
      if (deposit.value.trim()) body.initial_deposit = deposit.value.trim();
      return api("POST", "/accounts", { body, headers: { "Idempotency-Key": key } });
    },
    done: ({ account: a }) => success("Opened ", accountLink(a.account_id), ` holding ${money(a.balance, a.currency)}.`),
  }));
}

// ------------------------------------------------------------------ one account

export async function accountPage(view, id) {
  const path = `/accounts/${encodeURIComponent(id)}`;
  const a = (await api("GET", path)).data;
  const m = (amount) => money(amount, a.currency);
  const overdraft = isZero(a.overdraft_limit) ? [] : [["Overdraft limit", m(a.overdraft_limit)]];
  const held = [["Pending debits", a.pending_debits], ["Pending credits", a.pending_credits]]
    .filter(([, amount]) => !isZero(amount)).map(([label, amount]) => [label, m(amount)]);
  const facts = [["Balance", m(a.balance)], ["Available", m(a.available)], ...held,
    ...overdraft, ["Owner", a.owner], ["Type", a.type], ["Version", a.version]];
  view.append(
    h("h1", {}, `Account ${a.account_id} `, badge(a.status, a.status === "OPEN")),
    h("div", { class: "summary panel" }, facts.map(([label, value]) =>
      h("div", {}, h("span", { class: "label" }, label), h("span", { class: "value" }, value)))));

  if (may("write") && a.status !== "CLOSED") actions(view, a, path);
  if (may("admin") && a.status !== "CLOSED") adminActions(view, a, path);
  await pendingSection(view, a);
  await historySection(view, a, path);
  statementSection(view, a, path);
  eventsSection(view, a, path);
}

function actions(view, a, path) {
  const tabs = h("div", { class: "tabs", role: "tablist" });
  const panel = h("div", { class: "tab-panel" });
  const m = (amount) => money(amount, a.currency);
  const [depositLabel, deposit] = amountField();
  const [withdrawLabel, withdraw] = amountField();
  const forms = {
    Deposit: () => actionForm({ fields: [depositLabel], label: "Deposit", className: "inline",
      describe: () => `Deposit ${m(deposit.value.trim())} into ${a.account_id}?`,
      send: (key) => api("POST", `${path}/deposits`, { body: { amount: deposit.value.trim() },
        headers: { "Idempotency-Key": key } }),
      done: (r) => success(`Deposited ${m(r.amount)}: the balance is now ${m(r.account.balance)}.`) }),
    Withdraw: () => actionForm({ fields: [withdrawLabel], label: "Withdraw", className: "inline",
      describe: () => `Withdraw ${m(withdraw.value.trim())} from ${a.account_id}?`,
      send: (key) => api("POST", `${path}/withdrawals`, { body: { amount: withdraw.value.trim() },
        headers: { "Idempotency-Key": key } }),
      done: (r) => success(`Withdrew ${m(r.amount)}: the balance is now ${m(r.account.balance)}.`) }),
    Transfer: () => h("p", {}, h("a", { class: "button", href: `#/transfers/new?from=${encodeURIComponent(a.account_id)}` },
      "Transfer from this account")),
    Close: () => actionForm({ fields: [], label: "Close account", className: "inline",
      describe: () => {
        if (!isZero(a.balance)) return `${a.account_id} holds ${m(a.balance)}: the service will refuse to close it until it is zero. Try anyway?`;
        return `Close ${a.account_id}? It will take no more money.`;
      },
      send: (key) => api("POST", `${path}/close`, { headers: { "Idempotency-Key": key } }),
      done: () => success(`${a.account_id} is closed. `, reload()) }),
  };
  for (const [name, make] of Object.entries(forms)) {
    const tab = h("button", { type: "button", role: "tab", class: "secondary", "aria-selected": "false" }, name);
    tab.addEventListener("click", () => {
      for (const other of tabs.children) other.setAttribute("aria-selected", String(other === tab));
      panel.replaceChildren(make());
    });
    tabs.append(tab);
  }
  view.append(h("h2", {}, "Act on this account"), h("div", { class: "panel" }, tabs, panel));
}

function adminActions(view, a, path) {
  const frozen = a.status === "FROZEN";
  const [reasonLabel, reason] = field("Reason", { maxlength: 500 });
  const freeze = actionForm({ fields: [reasonLabel], label: frozen ? "Unfreeze" : "Freeze", className: "inline",
    describe: () => frozen ? `Unfreeze ${a.account_id}? Debits will be allowed again.`
      : `Freeze ${a.account_id}? Every debit will be refused until it is unfrozen.`,
    send: (key) => api("POST", `${path}/${frozen ? "unfreeze" : "freeze"}`,
      { body: { reason: reason.value.trim() }, headers: { "Idempotency-Key": key } }),
    done: () => success(frozen ? "Unfrozen. " : "Frozen. ", reload()) });
  const [limitLabel, limit] = amountField("Overdraft limit", { value: a.overdraft_limit });
  const limits = actionForm({ fields: [limitLabel], label: "Set limit", className: "inline",
    describe: () => `Let ${a.account_id}'s balance go down to ${money(`-${limit.value.trim()}`, a.currency)}?`,
    send: (key) => api("POST", `${path}/limits`,
      { body: { overdraft_limit: limit.value.trim() }, headers: { "Idempotency-Key": key } }),
    done: () => success("Limit set. ", reload()) });
  view.append(h("details", { class: "panel admin" }, h("summary", {}, "Admin: freeze, overdraft limit"),
    freeze, limits));
}

async function pendingSection(view, a) {
  const box = h("div", { id: "pending" });
  view.append(h("h2", {}, "Pending transfers"), box);
  const { items: holds } = (await api("GET",
    `/pending-transfers?account_id=${encodeURIComponent(a.account_id)}&limit=100`)).data;
  const headers = [["Transfer"], ["From"], ["To"], ["Amount", "num"], ["Expires"]];
  box.append(table(headers, holds.map((hold) => {
    const expires = hold.expires_at ? when(hold.expires_at) + (hold.overdue ? " (overdue)" : "") : "never";
    return row(td(transferLink(hold.transfer_id, "open")), td(accountLink(hold.from_account_id)),
      td(accountLink(hold.to_account_id)), td(money(hold.amount, hold.currency), "num held"), td(expires));
  }), "No pending transfers"));
  if (holds.length && may("write")) box.append(note("Post or void a pending transfer from its own page."));
}

async function newestFirst(container, top, load, headers, toRow, empty) {
  // PAGE account versions at a time from the newest; each version is at most one row.
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "secondary" }, "Show older");
  let upto = top;
  const next = async () => {
    const after = Math.max(0, upto - PAGE);
    const found = (await load(after)).filter((item) => item.version <= upto).reverse();
    tbody.append(...found.map(toRow));
    upto = after;
    more.hidden = after === 0;
    if (!tbody.children.length) tbody.append(emptyRow(headers, empty));
  };
  more.addEventListener("click", () => next().catch((error) => container.append(problemBox(error))));
  container.append(table(headers, [], empty, tbody), h("div", { class: "actions" }, more));
  tbody.replaceChildren();
  await next();
}

function details(m) {
  const parts = [];
  if (m.description) parts.push(h("div", {}, m.description));
  const meta = Object.entries(m.metadata || {});
  if (meta.length) parts.push(h("div", { class: "meta" }, meta.map(([k, v]) => h("span", { class: "tag" }, `${k}: ${v}`))));
  if (m.reverses) parts.push(h("div", { class: "muted" }, "reverses ", transferLink(m.reverses)));
  return parts.length ? parts : "";
}

function movementRow(m) {
  return row(td(when(m.recorded_at)), td(KINDS[m.kind] || m.kind),
    td(money(m.amount, m.currency, signOf(m.kind)), `num ${signOf(m.kind, "class")}`),
    td(accountLink(m.counterparty)), td(transferLink(m.transfer_id, "open")), td(details(m)),
    td(money(m.balance_after, m.currency), "num"), td(m.actor));
}

async function historySection(view, a, path) {
  const history = h("div", { id: "history" });
  view.append(h("h2", {}, "History with running balance"), history);
  await newestFirst(history, a.version,
    (after) => items(`${path}/transactions?after_version=${after}&limit=${PAGE}`),
    [["Recorded"], ["Movement"], ["Amount", "num"], ["Counterparty"], ["Transfer"], ["Details"],
      ["Balance after", "num"], ["By"]],
    movementRow, "No money movements yet");
}

function monthStart() {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString().slice(0, 10);
}

function statementSection(view, a, path) {
  const today = new Date().toISOString().slice(0, 10);
  const from = h("input", { type: "date", name: "from", value: monthStart(), required: true });
  const to = h("input", { type: "date", name: "to", value: today, required: true });
  const result = h("div", { "aria-live": "polite" });
  const period = () => {
    const end = new Date(`${to.value}T00:00:00Z`);
    end.setUTCDate(end.getUTCDate() + 1); // to the end of the last day asked for (at most now)
    return new URLSearchParams({ from: `${from.value}T00:00:00Z`, to: end.toISOString().replace(/\.\d+Z$/, "Z") });
  };
  const show = async (event) => {
    event.preventDefault();
    try {
      const s = (await api("GET", `${path}/statement?${period()}`)).data;
      const m = (amount, sign) => money(amount, s.currency, sign);
      result.replaceChildren(
        h("div", { class: "summary panel statement-totals" },
          [["Opening", m(s.opening_balance)], ["Money in", m(s.total_in, "+")],
            ["Money out", isZero(s.total_out) ? m(s.total_out) : m(s.total_out, "−")], ["Closing", m(s.closing_balance)]]
            .map(([label, value]) => h("div", {}, h("span", { class: "label" }, label), h("span", { class: "value" }, value)))),
        table([["Recorded"], ["Movement"], ["Amount", "num"], ["Counterparty"], ["Details"], ["Balance after", "num"]],
          s.lines.map((l) => row(td(when(l.recorded_at)), td(KINDS[l.kind] || l.kind),
            td(m(l.amount, l.amount.startsWith("-") ? "" : "+"), `num ${l.amount.startsWith("-") ? "debit" : "credit"}`),
            td(accountLink(l.counterparty)), td(details(l)), td(m(l.balance_after), "num"))),
          "No movements in this period"));
    } catch (error) {
      result.replaceChildren(problemBox(error));
    }
  };
  const csv = h("button", { type: "button", class: "secondary" }, "Download CSV");
  csv.addEventListener("click", async () => {
    try {
      const { data } = await api("GET", `${path}/statement?${period()}&format=csv`, { accept: "text/csv" });
      const link = h("a", { href: URL.createObjectURL(new Blob([data], { type: "text/csv" })),
        download: `statement-${a.account_id}-${from.value}-${to.value}.csv` });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (error) {
      result.replaceChildren(problemBox(error));
    }
  });
  view.append(h("h2", {}, "Statement"),
    h("form", { class: "inline", onsubmit: show }, h("label", {}, "From", from), h("label", {}, "To (inclusive)", to),
      h("button", { type: "submit" }, "Show statement"), csv),
    result);
}

function eventsSection(view, a, path) {
  const box = h("div", { id: "events" });
  const open = h("details", { class: "panel" }, h("summary", {}, "Stored events and their chain hashes"), box);
  view.append(open);
  if (!may("events")) {
    box.append(note("The raw events need the events permission (auditor or admin role)."));
    return;
  }
  let loaded = false;
  open.addEventListener("toggle", () => {
    if (!open.open || loaded) return;
    loaded = true;
    newestFirst(box, a.version, (after) => items(`${path}/events?after_version=${after}&limit=${PAGE}`),
      [["Version", "num"], ["Event"], ["Recorded"], ["By"], ["Data"], ["Hash"]],
      (e) => row(td(e.version, "num"), td(e.event_type), td(when(e.metadata.recorded_at)),
        td(e.metadata.actor), td(h("code", {}, eventData(e.data)), "data"), td(h("code", {}, e.hash), "hash")),
      "No events").catch((error) => box.append(problemBox(error)));
  });
}

function eventData(data) {
  return Object.entries(data).filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ");
}
