// Transfers: finding them (by account, status, dates, metadata), making one (with a confirm
// step and one Idempotency-Key per intended transfer), and a transfer's own page: both sides or
// every leg, its status, its reversals, every movement it made, and the actions left on it.
"use strict";

import { amountField } from "./accounts.js";
import {
  accountField, accountLink, actionForm, api, badge, cursorPages, field, h, isZero, may, money, note,
  problemBox, reload, row, success, table, td, transferLink, when,
} from "./lib.js";
import { KINDS, signOf } from "./movements.js";

const STATUS_GOOD = { posted: true, pending: true, voided: false, expired: false };

function sides(t) {
  if (t.legs) return `${t.legs.length} legs`;
  return h("span", {}, accountLink(t.from_account_id), " → ", accountLink(t.to_account_id));
}

function tags(metadata) {
  const pairs = Object.entries(metadata || {});
  return pairs.length ? h("div", { class: "meta" }, pairs.map(([k, v]) => h("span", { class: "tag" }, `${k}: ${v}`))) : "";
}

export async function transfersList(view) {
  const [accountLabel, account] = accountField("Account");
  account.required = false;
  const status = h("select", { name: "status" },
    h("option", { value: "" }, "any"), ["pending", "posted", "voided", "expired"].map((s) => h("option", {}, s)));
  const from = h("input", { type: "date", name: "from" });
  const to = h("input", { type: "date", name: "to" });
  const [metaLabel, meta] = field("Metadata", { required: false, placeholder: "key=value",
    pattern: "[A-Za-z0-9_.\\-]{1,40}=.{1,500}", title: "one key=value pair, such as order_id=ord-1042" });
  const results = h("div");
  const filters = (after) => {
    const params = new URLSearchParams({ limit: 20 });
    if (account.value.trim()) params.set("account_id", account.value.trim());
    if (status.value) params.set("status", status.value);
    if (from.value) params.set("from", `${from.value}T00:00:00Z`);
    if (to.value) {
      const end = new Date(`${to.value}T00:00:00Z`);
      end.setUTCDate(end.getUTCDate() + 1);
      params.set("to", end.toISOString().replace(/\.\d+Z$/, "Z"));
    }
    const pair = meta.value.trim();
    if (pair) params.set(`metadata.${pair.split("=")[0]}`, pair.slice(pair.indexOf("=") + 1));
    if (after) params.set("after", after);
    return params;
  };
  const first = cursorPages(results, async (after) => {
    const page = (await api("GET", `/transfers?${filters(after)}`)).data;
    return { next: page.next, content:
      table([["Created"], ["Transfer"], ["Status"], ["Accounts"], ["Amount", "num"], ["Details"]],
        page.items.map((t) => row(td(when(t.created_at)), td(transferLink(t.transfer_id, t.kind)),
          td(badge(t.status, STATUS_GOOD[t.status])), td(sides(t)),
          td(money(t.status === "pending" ? t.pending_amount : t.amount, t.currency), "num"),
          td([t.description || "", tags(t.metadata), t.reverses ? h("div", { class: "muted" }, "a reversal") : ""]))),
        page.next ? "None in this stretch: Next searches further" : "No matching transfers") };
  });
  const search = (event) => {
    event.preventDefault();
    first().catch((error) => results.replaceChildren(problemBox(error)));
  };
  view.append(h("div", { class: "title-row" }, h("h1", {}, "Transfers"),
    may("write") ? h("a", { class: "button", href: "#/transfers/new" }, "New transfer") : null),
  h("p", { class: "muted" }, "Transfers and multi-leg transactions, oldest first; every filter given must match."),
  h("form", { class: "inline", onsubmit: search }, accountLabel, h("label", {}, "Status", status),
    h("label", {}, "From", from), h("label", {}, "To (inclusive)", to), metaLabel,
    h("button", { type: "submit" }, "Search")),
  results);
  await first();
}

function transferDone(data, response) {
  const replayed = response.headers.get("Idempotent-Replayed") === "true";
  const link = h("div", {}, "Transfer ", transferLink(data.transfer_id));
  const again = replayed ? h("p", { class: "note replayed" }, "A repeated submission with the same "
    + "Idempotency-Key was answered from the first one: the money moved once.") : "";
  if (data.status === "pending") {
    return success(`Reserved ${money(data.amount, data.currency)} on `, accountLink(data.from.account_id),
      ` (available now ${money(data.from.available, data.currency)}) for `, accountLink(data.to.account_id),
      `, ${data.expires_at ? `until ${when(data.expires_at)}` : "with no timeout"}. `
      + "Nothing moved yet: post or void it from its page.", link, again);
  }
  return success(`Moved ${money(data.amount, data.currency)} from `, accountLink(data.from.account_id),
    ` (balance now ${money(data.from.balance, data.currency)}) to `, accountLink(data.to.account_id),
    ` (balance now ${money(data.to.balance, data.currency)}).`, link, again);
}

export async function newTransferPage(view, from) {
  view.append(h("h1", {}, "New transfer"));
  if (!may("write")) {
    view.append(note("Moving money needs the write permission (teller or admin role)."));
    return;
  }
  const [fromLabel, fromInput] = accountField("From account", from || "");
  const [toLabel, toInput] = accountField("To account");
  const [amountLabel, amountInput] = amountField();
  const pending = h("input", { type: "checkbox", name: "pending" });
  const [timeoutLabel, timeoutInput] = field("Timeout", { required: false, inputmode: "numeric",
    placeholder: "seconds, for a pending transfer (optional)", pattern: "[0-9]{1,7}",
    title: "whole seconds, 1 to 2592000 (30 days)" });
  const [descriptionLabel, description] = field("Order id (metadata)", { required: false,
    maxlength: 500, placeholder: "optional: kept with the transfer, searchable" });
  view.append(actionForm({
    fields: [fromLabel, toLabel, amountLabel,
      h("label", { class: "check" }, pending, " Pending: reserve now, post or void later"), timeoutLabel,
      descriptionLabel],
    label: "Transfer",
    describe: () => {
      const what = `${amountInput.value.trim()} from ${fromInput.value.trim()} to ${toInput.value.trim()}`;
      return pending.checked ? `Reserve ${what}? Nothing moves until it is posted.` : `Move ${what}? The money moves at once.`;
    },
    send: (key) => {
      const body = { from_account_id: fromInput.value.trim(), to_account_id: toInput.value.trim(),
        amount: amountInput.value.trim() };
      if (description.value.trim()) body.metadata = { order_id: description.value.trim() };
      if (pending.checked) {
        body.pending = true;
        if (timeoutInput.value.trim()) body.timeout_s = Number.parseInt(timeoutInput.value, 10);
      }
      return api("POST", "/transfers", { body, headers: { "Idempotency-Key": key } });
    },
    done: transferDone,
  }));
}

// ------------------------------------------------------------------ one transfer

export async function transferPage(view, id) {
  const t = (await api("GET", `/transfers/${encodeURIComponent(id)}`)).data;
  const m = (amount, sign) => money(amount, t.currency, sign);
  const facts = [["Amount moved", m(t.amount)],
    ...(t.pending_amount && !isZero(t.pending_amount) ? [["Reserved", m(t.pending_amount)]] : []),
    ["Created", when(t.created_at)],
    ...(t.description ? [["Description", t.description]] : []),
    ...(isZero(t.reversed_amount) ? [] : [["Reversed", m(t.reversed_amount)]])];
  view.append(
    h("h1", {}, `${t.kind === "transaction" ? "Transaction" : "Transfer"} `, badge(t.status, STATUS_GOOD[t.status])),
    h("p", { class: "mono" }, t.transfer_id),
    h("div", { class: "summary panel" }, facts.map(([label, value]) =>
      h("div", {}, h("span", { class: "label" }, label), h("span", { class: "value" }, value)))),
    tags(t.metadata),
    t.reverses ? h("p", {}, "This reverses ", transferLink(t.reverses), ".") : "",
    t.reversed_by.length ? h("p", {}, "Reversed by ", t.reversed_by.map((r, i) => [i ? ", " : "", transferLink(r)])) : "");

  if (t.legs) {
    view.append(h("h2", {}, "Legs"), table([["Account"], ["Direction"], ["Amount", "num"]],
      t.legs.map((l) => row(td(accountLink(l.account_id)), td(l.direction),
        td(m(l.amount, l.direction === "debit" ? "−" : "+"), `num ${l.direction}`))), "No legs"));
  } else {
    view.append(h("h2", {}, "Sides"), table([["Side"], ["Account"]],
      [row(td("From (debit)"), td(accountLink(t.from_account_id))), row(td("To (credit)"), td(accountLink(t.to_account_id)))], ""));
  }
  if (may("write")) transferActions(view, t);
  view.append(h("h2", {}, "Movements"), table(
    [["Recorded"], ["Account"], ["Movement"], ["Amount", "num"], ["Balance after", "num"], ["By"]],
    (t.movements || []).map((mv) => row(td(when(mv.recorded_at)), td(accountLink(mv.account_id)),
      td(KINDS[mv.kind] || mv.kind), td(money(mv.amount, mv.currency, signOf(mv.kind)), `num ${signOf(mv.kind, "class")}`),
      td(money(mv.balance_after, mv.currency), "num"), td(mv.actor))),
    "No movements"));
}

function transferActions(view, t) {
  const box = h("div", { class: "panel" });
  const path = `/${t.kind}s/${encodeURIComponent(t.transfer_id)}`;
  const m = (amount) => money(amount, t.currency);
  if (t.status === "pending") {
    const [postLabel, post] = amountField("Amount to post", { required: false, placeholder: `all: ${t.pending_amount}` });
    box.append(actionForm({ fields: [postLabel], label: "Post", className: "inline",
      describe: () => `Post ${post.value.trim() ? m(post.value.trim()) : `all ${m(t.pending_amount)}`} from `
        + `${t.from_account_id} to ${t.to_account_id}? The money moves; the rest of the hold is released.`,
      send: (key) => api("POST", `${path}/post`, { body: post.value.trim() ? { amount: post.value.trim() } : {},
        headers: { "Idempotency-Key": key } }),
      done: () => success("Posted. ", reload("Show the transfer again")) }),
    actionForm({ fields: [], label: "Void", className: "inline",
      describe: () => `Void the hold of ${m(t.pending_amount)}? It is released; nothing moves.`,
      send: (key) => api("POST", `${path}/void`, { body: {}, headers: { "Idempotency-Key": key } }),
      done: () => success("Voided. ", reload("Show the transfer again")) }));
  } else if (t.status === "posted") {
    const [amountLabel, amount] = amountField("Amount to reverse", { required: false, placeholder: "all that is left" });
    box.append(actionForm({ fields: [amountLabel], label: "Reverse", className: "inline",
      describe: () => `Move ${amount.value.trim() ? m(amount.value.trim()) : "all that is left of it"} back against `
        + `this ${t.kind}? A new movement the other way, linked to this one.`,
      send: (key) => api("POST", `${path}/reverse`, { body: amount.value.trim() ? { amount: amount.value.trim() } : {},
        headers: { "Idempotency-Key": key } }),
      done: (r) => success("Reversed: ", transferLink(r.transfer_id || r.transaction_id), ". ",
        reload("Show this transfer again")) }));
  } else {
    return;
  }
  view.append(h("h2", {}, "Act on it"), box);
}
