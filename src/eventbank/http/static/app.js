// The eventbank operator dashboard: a single page over the JSON API, no framework, no build.
// The token lives in sessionStorage (this tab only). Money is shown as the decimal strings the
// API returns and never computed here. Every API error is shown as its problem title and detail.
"use strict";

const TOKEN_KEY = "eventbank.token";
const PAGE = 50; // account versions per page of history and of stored events
const main = document.getElementById("main");
const session = { token: null, me: null };
let timers = [];

// ------------------------------------------------------------------ DOM helpers

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

const td = (value, cls) => h("td", { class: cls }, value);
const row = (...cells) => h("tr", {}, cells);
const note = (text) => h("p", { class: "note" }, text);
const badge = (text, good) => h("span", { class: `badge ${good ? "good" : "bad"}` }, text);
const heads = (headers) =>
  h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls }, label))));
const emptyRow = (headers, text) => h("tr", { class: "empty" }, h("td", { colspan: headers.length }, text));

function table(headers, rows, empty) {
  return h("table", {}, heads(headers), h("tbody", {}, rows.length ? rows : emptyRow(headers, empty)));
}

function when(iso) {
  return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "-";
}

function accountLink(id) {
  return id ? h("a", { href: `#/accounts/${encodeURIComponent(id)}` }, id) : "-";
}

// ------------------------------------------------------------------ the API and its problems

class ApiError extends Error {
  constructor(problem) {
    super(`${problem.title}: ${problem.detail}`);
    this.problem = problem;
  }
}

function problemBox(error) {
  const p = error.problem
    || { title: "Unexpected error in the page", detail: String(error.message || error) };
  const lines = (p.errors || []).map((e) =>
    h("li", {}, "line" in e ? `line ${e.line ?? "-"}: ${e.problem}` : `${e.location}: ${e.message}`));
  return h("div", { class: "problem", role: "alert" },
    h("strong", { class: "title" }, p.title), " — ", h("span", { class: "detail" }, p.detail),
    lines.length ? h("ul", {}, lines) : null);
}

async function api(method, path, { body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (session.token) init.headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers["Content-Type"] ??= "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError({ title: "Network error", detail: `the service did not answer (${error.message})` });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.ok) return { data, response };
  const problem = data && data.title ? data
    : { title: `HTTP ${response.status}`, detail: text.slice(0, 300) || response.statusText };
  if (response.status === 401 && session.me) signOut(problem);
  throw new ApiError(problem);
}

function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "dash-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function may(permission) {
  return Boolean(session.me && session.me.permissions.includes(permission));
}

function every(ms, refresh, box) {
  timers.push(setInterval(() => refresh().catch((error) => box.replaceChildren(problemBox(error))), ms));
}

function stopTimers() {
  timers.forEach(clearInterval);
  timers = [];
}

// ------------------------------------------------------------------ session and routing

async function signIn(token) {
  session.token = token;
  try {
    session.me = (await api("GET", "/whoami")).data;
  } catch (error) {
    session.token = null;
    throw error;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
}

function signOut(problem) {
  sessionStorage.removeItem(TOKEN_KEY);
  session.token = session.me = null;
  showLogin(problem);
}

function chrome(signedIn) {
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  const who = document.getElementById("who");
  who.hidden = !signedIn;
  who.textContent = signedIn ? `${session.me.name} (${session.me.role})` : "";
  for (const link of document.querySelectorAll("#nav a")) {
    link.hidden = Boolean(link.dataset.needs) && !may(link.dataset.needs);
  }
}

function showLogin(problem) {
  stopTimers();
  chrome(false);
  const token = h("input", { type: "password", name: "token", autocomplete: "off", required: true,
    placeholder: "eb_…", "aria-label": "API token" });
  const box = h("div", {}, problem ? problemBox({ problem }) : null);
  const submit = async (event) => {
    event.preventDefault();
    try {
      await signIn(token.value.trim());
      render();
    } catch (error) {
      box.replaceChildren(problemBox(error));
    }
  };
  main.replaceChildren(h("section", { class: "login panel" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Paste an API token (an admin token is printed once by the first ",
      h("code", {}, "eventbank serve"), "). It is kept in this browser tab only."),
    h("form", { class: "stack", onsubmit: submit },
      h("label", {}, "API token", token), h("div", {}, h("button", { type: "submit" }, "Sign in"))),
    box));
  token.focus();
}

const ROUTES = [
  [/^#\/?$/, overview],
  [/^#\/accounts$/, accountsList],
  [/^#\/accounts\/([^/?]+)$/, accountPage],
  [/^#\/transfer(?:\?from=([^&]*))?$/, transferPage],
  [/^#\/payroll$/, payrollPage],
  [/^#\/audit$/, auditPage],
];

function render() {
  stopTimers();
  if (!session.me) return showLogin();
  chrome(true);
  const hash = location.hash || "#/";
  const [pattern, view] = ROUTES.find(([p]) => p.test(hash)) || [null, notFound];
  const args = pattern ? hash.match(pattern).slice(1).map((a) => a && decodeURIComponent(a)) : [];
  const top = hash.split(/[/?]/)[1] || "";
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.getAttribute("href").split("/")[1] === top);
  }
  const section = h("section");
  main.replaceChildren(section);
  view(section, ...args).catch((error) => section.append(problemBox(error)));
}

async function notFound(view) {
  view.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
}

// ------------------------------------------------------------------ overview

function card(label, value, sub) {
  return h("div", { class: "card" }, h("div", { class: "label" }, label),
    h("div", { class: "value" }, value), h("div", { class: "sub" }, sub));
}

async function latestAudit() {
  try {
    return (await api("GET", "/audits/latest")).data;
  } catch (error) {
    if (error.problem && error.problem.code === "audit_not_found") return null;
    throw error;
  }
}

function auditVerdict(audit) {
  if (audit.clean) return badge("clean", true);
  const count = Object.values(audit.findings).reduce((a, b) => a + b, 0);
  return badge(`${count} findings`, false);
}

async function overview(view) {
  const body = h("div");
  view.append(h("h1", {}, "Overview"), body);
  const refresh = async () => {
    const [{ data: stats }, audit] = await Promise.all([api("GET", "/stats"), latestAudit()]);
    const lag = stats.projection;
    const currencies = stats.totals.length === 1 ? "1 currency" : `${stats.totals.length} currencies`;
    body.replaceChildren(
      h("div", { class: "cards" },
        card("Accounts open", stats.accounts_open, `in ${currencies}`),
        card("Projection lag", `${lag.lag_capped ? "≥ " : ""}${lag.lag_events} events`,
          `${lag.lag_seconds} s behind · ${lag.parked_streams} parked`),
        audit ? card("Last audit", auditVerdict(audit), `${when(audit.recorded_at)} by ${audit.actor}`)
          : card("Last audit", "none yet", h("a", { href: "#/audit" }, "run one"))),
      h("h2", {}, "Totals per currency"),
      table([["Currency"], ["Open accounts", "num"], ["Total balance", "num"]],
        stats.totals.map((t) => row(td(t.currency), td(t.accounts_open, "num"),
          td(`${t.balance} ${t.currency}`, "num"))),
        "No accounts yet"),
      h("h2", {}, "Events and transfers per second"),
      rateChart(stats.activity),
      h("p", { class: "muted" }, `Updated ${when(stats.generated_at)}; refreshes every 5 s.`));
  };
  await refresh();
  every(5000, refresh, body);
}

function niceMax(value) {
  const step = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * step).find((v) => v >= value);
}

function rateChart(activity) {
  const [W, H, left, bottom, top] = [1000, 180, 44, 22, 8];
  const plot = H - bottom - top;
  const buckets = activity.buckets;
  const max = niceMax(Math.max(0.1, ...buckets.map((b) => b.events_per_s || 0)));
  const width = (W - left) / buckets.length;
  const y = (v) => top + plot - (v / max) * plot;
  const bar = (x, w, value, kind, label) =>
    svg("rect", { x, y: y(value), width: w, height: top + plot - y(value), class: kind },
      svg("title", {}, label));
  const shapes = [];
  for (const tick of [0, max / 2, max]) {
    shapes.push(svg("line", { x1: left, x2: W, y1: y(tick), y2: y(tick), class: "grid" }),
      svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, `${+tick.toFixed(2)}`));
  }
  buckets.forEach((b, i) => {
    const x = left + i * width;
    if (b.events_per_s === null) {
      shapes.push(bar(x + 1, width - 2, max, "unknown", `${when(b.start)}: not sampled`));
      return;
    }
    const label = `${when(b.start)}: ${b.events_per_s} events/s, ${b.transfers_per_s} transfers/s`;
    shapes.push(bar(x + 2, width - 4, b.events_per_s, "events", label),
      bar(x + width / 4, width / 2, b.transfers_per_s, "transfers", label));
  });
  shapes.push(svg("text", { x: left, y: H - 4 }, `${activity.window_seconds / 60} min ago`),
    svg("text", { x: W, y: H - 4, "text-anchor": "end" }, "now"));
  const swatch = (kind, text) => h("span", {}, h("span", { class: `swatch ${kind}` }), text);
  return h("div", { class: "chart panel" },
    svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "events and transfers per second" },
      ...shapes),
    h("div", { class: "legend" },
      swatch("events", "events/s"), swatch("transfers", "transfers/s"), swatch("unknown", "not sampled"),
      h("span", {}, `${activity.bucket_seconds} s buckets from the last `
        + `${activity.sampled_events} events of the feed`)));
}

// ------------------------------------------------------------------ accounts

async function accountsList(view) {
  const q = h("input", { type: "search", name: "q", placeholder: "Search id or owner",
    "aria-label": "Search accounts" });
  const results = h("div");
  const cursors = [""]; // the `after` of each page seen, for Previous
  const show = () => load().catch((error) => results.replaceChildren(problemBox(error)));
  const turn = (label, change) => h("button", { type: "button", class: "secondary", disabled: !change,
    onclick: () => { change(); show(); } }, label);
  const load = async () => {
    const params = new URLSearchParams({ q: q.value.trim(), after: cursors.at(-1), limit: 20 });
    const page = (await api("GET", `/accounts?${params}`)).data;
    results.replaceChildren(
      table([["Account"], ["Owner"], ["Type"], ["Balance", "num"], ["Version", "num"], ["Status"]],
        page.items.map((a) => row(td(accountLink(a.account_id)), td(a.owner), td(a.type),
          td(`${a.balance} ${a.currency}`, "num"), td(a.version, "num"),
          td(badge(a.status, a.status === "OPEN")))),
        page.next_after ? "None in this stretch of accounts: Next searches further" : "No matching accounts"),
      h("div", { class: "pager" },
        turn("Previous", cursors.length > 1 && (() => cursors.pop())),
        h("span", { class: "muted" }, `Page ${cursors.length}`),
        turn("Next", page.next_after && (() => cursors.push(page.next_after)))));
  };
  const search = (event) => {
    event.preventDefault();
    cursors.length = 1;
    show();
  };
  view.append(h("h1", {}, "Accounts"),
    h("form", { class: "inline", onsubmit: search }, q, h("button", { type: "submit" }, "Search")),
    results);
  await load();
}

async function newestFirst(container, top, load, headers, toRow, empty) {
  // PAGE account versions at a time from the newest; each version is at most one row.
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "secondary" }, "Show older");
  let upto = top;
  const next = async () => {
    const after = Math.max(0, upto - PAGE);
    const items = (await load(after)).filter((item) => item.version <= upto).reverse();
    tbody.append(...items.map(toRow));
    upto = after;
    more.hidden = after === 0;
    if (!tbody.children.length) tbody.append(emptyRow(headers, empty));
  };
  more.addEventListener("click", () => next().catch((error) => container.append(problemBox(error))));
  container.append(h("table", {}, heads(headers), tbody), h("div", { class: "actions" }, more));
  await next();
}

const KINDS = { deposit: "Deposit", withdrawal: "Withdrawal", transfer_out: "Transfer out",
  transfer_in: "Transfer in", hold_out: "Held (pending out)", hold_in: "Announced (pending in)",
  posted_out: "Hold posted", posted_in: "Hold posted", voided_out: "Hold voided",
  voided_in: "Hold voided", expired_out: "Hold expired", expired_in: "Hold expired",
  transaction_debit: "Entry debit", transaction_credit: "Entry credit" };
const MOVES = { withdrawal: "debit", transfer_out: "debit", transaction_debit: "debit",
  deposit: "credit", transfer_in: "credit", transaction_credit: "credit" };

function movementRow(m) {
  // a pending transfer's side changes no balance: its amount is shown without a sign
  const side = MOVES[m.kind];
  const sign = { debit: "−", credit: "+" }[side] || "";
  return row(td(m.version, "num"), td(when(m.recorded_at)), td(KINDS[m.kind] || m.kind),
    td(`${sign}${m.amount} ${m.currency}`, `num ${side || "held"}`),
    td(accountLink(m.counterparty)), td(`${m.balance_after} ${m.currency}`, "num"));
}

function adminSection(view, a) {
  // Admin actions on the account: each form is one intended change, with one Idempotency-Key
  // until the form is edited, and a confirmation that says what will happen.
  const path = `/accounts/${encodeURIComponent(a.account_id)}`;
  const result = h("div", { "aria-live": "polite" });
  const form = (fields, label, confirmText, send) => {
    let key = null;
    return h("form", { class: "inline", oninput: () => { key = null; }, onsubmit: async (event) => {
      event.preventDefault();
      if (!window.confirm(confirmText())) return;
      key = key || newKey();
      try {
        await send(key);
        render();
      } catch (error) {
        result.replaceChildren(problemBox(error));
      }
    } }, ...fields, h("button", { type: "submit", class: "secondary" }, label));
  };
  const frozen = a.status === "FROZEN";
  const [reasonLabel, reason] = field("Reason", { maxlength: 500 });
  const freeze = form([reasonLabel], frozen ? "Unfreeze" : "Freeze",
    () => frozen ? `Unfreeze ${a.account_id}? Debits will be allowed again.`
      : `Freeze ${a.account_id}? Every debit will be refused until it is unfrozen.`,
    (key) => api("POST", `${path}/${frozen ? "unfreeze" : "freeze"}`,
      { body: { reason: reason.value.trim() }, headers: { "Idempotency-Key": key } }));
  const [limitLabel, limit] = field("Overdraft limit", { value: a.overdraft_limit,
    inputmode: "decimal", pattern: "[0-9]{1,20}([.][0-9]{1,3})?", title: "a decimal amount such as 500.00" });
  const limits = form([limitLabel], "Set limit",
    () => `Let ${a.account_id}'s balance go down to -${limit.value.trim()} ${a.currency}?`,
    (key) => api("POST", `${path}/limits`,
      { body: { overdraft_limit: limit.value.trim() }, headers: { "Idempotency-Key": key } }));
  view.append(h("details", { class: "panel admin" }, h("summary", {}, "Admin: freeze, overdraft limit"),
    freeze, limits, result));
}

const isZero = (amount) => /^-?0+(\.0+)?$/.test(amount);

async function pendingSection(view, a) {
  const box = h("div", { id: "pending" });
  view.append(h("h2", {}, "Pending transfers"), box);
  const { items: holds } = (await api("GET",
    `/pending-transfers?account_id=${encodeURIComponent(a.account_id)}&limit=100`)).data;
  const act = (hold, verb) => async () => {
    const what = verb === "post" ? `Post ${hold.amount} ${hold.currency} from ${hold.from_account_id}`
      + ` to ${hold.to_account_id}? The money moves.` : `Void the hold of ${hold.amount} `
      + `${hold.currency}? It is released; nothing moves.`;
    if (!window.confirm(what)) return;
    hold.keys[verb] = hold.keys[verb] || newKey(); // one key per intended action, as for transfers
    try {
      await api("POST", `/transfers/${encodeURIComponent(hold.transfer_id)}/${verb}`,
        { body: {}, headers: { "Idempotency-Key": hold.keys[verb] } });
      render();
    } catch (error) {
      box.append(problemBox(error));
    }
  };
  const headers = [["Transfer"], ["From"], ["To"], ["Amount", "num"], ["Expires"],
    ...(may("write") ? [["Act"]] : [])];
  box.append(table(headers, holds.map((hold) => {
    hold.keys = {};
    const expires = hold.expires_at ? when(hold.expires_at) + (hold.overdue ? " (overdue)" : "")
      : "never";
    const actions = may("write") && !hold.overdue ? td(h("div", { class: "actions" },
      h("button", { type: "button", onclick: act(hold, "post") }, "Post"),
      h("button", { type: "button", class: "secondary", onclick: act(hold, "void") }, "Void"))) : null;
    return row(td(h("code", {}, hold.transfer_id)), td(accountLink(hold.from_account_id)),
      td(accountLink(hold.to_account_id)), td(`${hold.amount} ${hold.currency}`, "num"),
      td(expires), ...(may("write") ? [actions || td("")] : []));
  }), "No pending transfers"));
}

function eventRow(e) {
  const data = Object.entries(e.data).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", ");
  return row(td(e.version, "num"), td(e.event_type), td(when(e.metadata.recorded_at)),
    td(h("code", {}, data), "data"), td(h("code", {}, e.hash), "hash"));
}

async function items(url) {
  return (await api("GET", url)).data.items;
}

async function accountPage(view, id) {
  const path = `/accounts/${encodeURIComponent(id)}`;
  const a = (await api("GET", path)).data;
  const money = (amount) => `${amount} ${a.currency}`;
  const overdraft = isZero(a.overdraft_limit) ? [] : [["Overdraft limit", money(a.overdraft_limit)]];
  const held = [["Pending debits", a.pending_debits], ["Pending credits", a.pending_credits]]
    .filter(([, amount]) => !isZero(amount)).map(([label, amount]) => [label, money(amount)]);
  const facts = [["Balance", money(a.balance)], ["Available", money(a.available)], ...held,
    ...overdraft, ["Version", a.version], ["Owner", a.owner], ["Type", a.type]];
  view.append(
    h("h1", {}, `Account ${a.account_id} `, badge(a.status, a.status === "OPEN")),
    h("div", { class: "summary panel" }, facts.map(([label, value]) =>
      h("div", {}, h("span", { class: "label" }, label), h("span", { class: "value" }, value)))),
    may("write") && a.status === "OPEN" ? h("div", { class: "actions" },
      h("a", { href: `#/transfer?from=${encodeURIComponent(id)}` }, "Transfer from this account")) : null);

  if (may("admin") && a.status !== "CLOSED") adminSection(view, a);
  await pendingSection(view, a);

  const history = h("div", { id: "history" });
  view.append(h("h2", {}, "History with running balance"), history);
  await newestFirst(history, a.version,
    (after) => items(`${path}/transactions?after_version=${after}&limit=${PAGE}`),
    [["Version", "num"], ["Recorded"], ["Movement"], ["Amount", "num"], ["Counterparty"],
      ["Balance after", "num"]],
    movementRow, "No money movements yet");

  const events = h("div", { id: "events" });
  view.append(h("h2", {}, "Stored events and their chain hashes"), events);
  if (!may("events")) {
    events.append(note("The raw events need the events permission (auditor or admin role)."));
    return;
  }
  await newestFirst(events, a.version,
    (after) => items(`${path}/events?after_version=${after}&limit=${PAGE}`),
    [["Version", "num"], ["Event"], ["Recorded"], ["Data"], ["Hash"]],
    eventRow, "No events");
}

// ------------------------------------------------------------------ transfers and payrolls

function field(label, props) {
  const input = h("input", { name: label.toLowerCase().replaceAll(" ", "_"), required: true, ...props });
  return [h("label", {}, label, input), input];
}

function transferDone(data) {
  if (data.status === "pending") {
    return h("div", { class: "success" },
      `Reserved ${data.amount} ${data.currency} on `, accountLink(data.from.account_id),
      ` (available now ${data.from.available}) for `, accountLink(data.to.account_id),
      `, ${data.expires_at ? `until ${when(data.expires_at)}` : "with no timeout"}. `
      + "Nothing moved: post or void it from the account page.",
      h("div", { class: "mono" }, `transfer ${data.transfer_id}`));
  }
  return h("div", { class: "success" },
    `Moved ${data.amount} ${data.currency} from `, accountLink(data.from.account_id),
    ` (balance now ${data.from.balance}) to `, accountLink(data.to.account_id),
    ` (balance now ${data.to.balance}).`, h("div", { class: "mono" }, `transfer ${data.transfer_id}`));
}

async function transferPage(view, from) {
  view.append(h("h1", {}, "Transfer"));
  if (!may("write")) {
    view.append(note("Moving money needs the write permission (teller or admin role)."));
    return;
  }
  const [fromLabel, fromInput] = field("From account", { value: from || "" });
  const [toLabel, toInput] = field("To account", {});
  const [amountLabel, amountInput] = field("Amount", { inputmode: "decimal", placeholder: "25.00",
    pattern: "[0-9]{1,20}([.][0-9]{1,3})?", title: "a decimal amount such as 25.00" });
  const pendingInput = h("input", { type: "checkbox", name: "pending" });
  const [timeoutLabel, timeoutInput] = field("Timeout", { required: false, inputmode: "numeric",
    placeholder: "seconds, for a pending transfer (optional)", pattern: "[0-9]{1,7}",
    title: "whole seconds, 1 to 2592000 (30 days)" });
  const result = h("div", { "aria-live": "polite" });
  // One key per intended transfer: a double click or a retry sends the same key, so the service
  // moves the money once; editing the form or "New transfer" starts another transfer.
  let key = null;
  let replayedKey = null;
  const send = async (event) => {
    event.preventDefault();
    key = key || newKey();
    const sent = key;
    result.replaceChildren(h("p", { class: "muted" }, "Sending…"));
    const body = { from_account_id: fromInput.value.trim(), to_account_id: toInput.value.trim(),
      amount: amountInput.value.trim() };
    if (pendingInput.checked) {
      body.pending = true;
      if (timeoutInput.value.trim()) body.timeout_s = Number.parseInt(timeoutInput.value, 10);
    }
    try {
      const headers = { "Idempotency-Key": sent };
      const { data, response } = await api("POST", "/transfers", { body, headers });
      if (response.headers.get("Idempotent-Replayed") === "true") replayedKey = sent;
      result.replaceChildren(transferDone(data), replayedKey === sent ? h("p", { class: "note replayed" },
        "A repeated submission with the same Idempotency-Key was answered from the first one: "
        + "the money moved once.") : null);
    } catch (error) {
      result.replaceChildren(problemBox(error));
    }
  };
  const reset = () => {
    key = null;
    result.replaceChildren();
  };
  view.append(h("form", { class: "stack", oninput: () => { key = null; }, onsubmit: send },
    fromLabel, toLabel, amountLabel,
    h("label", { class: "check" }, pendingInput, " Pending: reserve now, post or void later"),
    timeoutLabel,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Transfer"),
      h("button", { type: "reset", class: "secondary", onclick: reset }, "New transfer"))), result);
}

async function payrollPage(view) {
  view.append(h("h1", {}, "Payroll"));
  if (!may("write")) {
    view.append(note("Starting a payroll needs the write permission (teller or admin role)."));
    return;
  }
  const [fromLabel, fromInput] = field("Paying account", {});
  const policy = h("select", { name: "policy" },
    h("option", {}, "all-or-nothing"), h("option", {}, "best-effort"));
  const file = h("input", { type: "file", name: "file", accept: ".csv,text/csv", required: true });
  const progress = h("div", { "aria-live": "polite" });
  let key = null; // as for transfers: one payroll per key, however often it is submitted
  const start = async (event) => {
    event.preventDefault();
    key = key || newKey();
    try {
      const params = new URLSearchParams({ from_account_id: fromInput.value.trim(), policy: policy.value });
      const { data, response } = await api("POST", `/payrolls?${params}`, {
        body: await file.files[0].text(), headers: { "Content-Type": "text/csv", "Idempotency-Key": key } });
      await follow(progress, response.headers.get("Location"), data);
    } catch (error) {
      progress.replaceChildren(problemBox(error));
    }
  };
  const forget = () => { key = null; };
  view.append(h("form", { class: "stack", oninput: forget, onchange: forget, onsubmit: start },
    fromLabel, h("label", {}, "Policy", policy),
    h("label", {}, "CSV file (account_id,amount,reference)", file),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Start payroll"))), progress);
}

async function follow(box, location, first) {
  const show = async (p) => {
    const done = p.paid + p.failed + p.compensated + p.compensation_failed;
    const finished = !["running", "compensating"].includes(p.status);
    const failures = Object.entries(p.failures).map(([line, why]) => row(td(line, "num"), td(why)));
    const panel = h("div", { class: "panel" },
      h("h2", {}, "Payroll ", h("code", {}, p.saga_id), " ",
        badge(p.status, !finished || p.status === "completed")),
      h("progress", { max: p.lines, value: done }),
      h("p", {}, `${done} of ${p.lines} lines processed: ${p.paid} paid, ${p.failed} failed, `
        + `${p.compensated} compensated, ${p.compensation_failed} compensations failed.`),
      h("p", { class: "muted" }, `Moved ${p.moved_minor} of ${p.total_minor} minor units of ${p.currency}.`),
      failures.length ? table([["Line", "num"], ["Why it failed"]], failures, "") : null);
    box.replaceChildren(panel);
    if (finished) {
      const employer = (await api("GET", `/accounts/${encodeURIComponent(p.employer_id)}`)).data;
      panel.append(h("p", { class: "success" }, `Finished. The paying account ${p.employer_id} now holds `
        + `${employer.balance} ${employer.currency}.`));
    }
    return finished;
  };
  if (await show(first)) return;
  const poll = setInterval(async () => {
    try {
      if (await show((await api("GET", location)).data)) clearInterval(poll);
    } catch (error) {
      clearInterval(poll);
      box.append(problemBox(error));
    }
  }, 400);
  timers.push(poll);
}

// ------------------------------------------------------------------ audit

function auditSummary(audit) {
  if (!audit) return note("No audit has been recorded yet.");
  return h("div", { class: "panel" },
    h("p", {}, auditVerdict(audit), ` ${audit.streams} streams, ${audit.events} events, recorded `
      + `${when(audit.recorded_at)} by ${audit.actor} (audit trail version ${audit.version}).`),
    h("p", { class: "muted" }, "Digest ", h("code", {}, audit.digest)));
}

function auditReport(report) {
  const verdict = report.clean ? "Clean" : `${report.findings.length} findings`;
  return h("div", { class: "report" },
    h("div", { class: report.clean ? "success" : "problem" },
      `${verdict}: audited ${report.streams} streams and ${report.events} events.`),
    h("h2", {}, "Books per currency"),
    table([["Currency"], ["Balances", "num"], ["Deposits", "num"], ["Withdrawals", "num"]],
      Object.entries(report.books).map(([currency, b]) =>
        row(td(currency), td(b.balances, "num"), td(b.deposits, "num"), td(b.withdrawals, "num"))),
      "No accounts"),
    h("p", { class: "muted" }, "Digest of every stream head ", h("code", {}, report.digest)),
    h("h2", {}, "Findings"),
    table([["Kind"], ["Stream"], ["Version", "num"], ["Detail"]],
      report.findings.map((f) =>
        row(td(f.kind), td(f.stream || "-"), td(f.version ?? "-", "num"), td(f.detail))),
      "None: every chain, total and read model checks out"));
}

async function auditFinished(location, job) {
  while (job.status === "running") {
    await new Promise((resolve) => setTimeout(resolve, 500));
    job = (await api("GET", location)).data;
  }
  return job;
}

async function auditPage(view) {
  const latest = h("div", {}, auditSummary(await latestAudit()));
  const report = h("div", { "aria-live": "polite" });
  view.append(h("h1", {}, "Audit"),
    h("p", { class: "muted" }, "Checks every stream's hash chain and versions, that money is conserved "
      + "per currency, and that the read models equal a replay of the events. Each run is recorded in "
      + "the audit trail."),
    h("h2", {}, "Last recorded audit"), latest);
  if (!may("audit")) {
    view.append(note("Running an audit needs the audit permission (auditor or admin role)."));
    return;
  }
  const run = h("button", { type: "button" }, "Run audit");
  run.addEventListener("click", async () => {
    run.disabled = true;
    report.replaceChildren(h("p", { class: "muted" }, "Auditing…"));
    try {
      const { data, response } = await api("POST", "/audits"); // 202: runs in the background
      const job = await auditFinished(response.headers.get("Location"), data);
      if (job.status === "failed") throw new ApiError({ title: "Audit failed", detail: job.error });
      report.replaceChildren(auditReport(job.report));
      latest.replaceChildren(auditSummary(await latestAudit()));
    } catch (error) {
      report.replaceChildren(problemBox(error));
    } finally {
      run.disabled = false;
    }
  });
  view.append(h("div", { class: "actions" }, run), report);
}

// ------------------------------------------------------------------ start

window.addEventListener("hashchange", render);
window.addEventListener("unhandledrejection", (event) => main.prepend(problemBox(event.reason)));
document.getElementById("sign-out").addEventListener("click", () => signOut());
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved).then(render, (error) => signOut(error.problem));
else showLogin();
