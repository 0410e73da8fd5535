// What every page of the dashboard uses: building DOM, calling the API, showing its problems,
// reading money as money, and the one-key-per-intended-change forms with a confirm step.
"use strict";

export const PAGE = 50; // account versions per page of history and of stored events
export const main = document.getElementById("main");
export const session = { token: null, me: null };
let timers = [];
let rerender = () => {};

export function onRender(fn) {
  rerender = fn;
}

export function render() {
  rerender();
}

// ------------------------------------------------------------------ DOM

export function h(tag, props = {}, ...children) {
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

export function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

export const td = (value, cls) => h("td", { class: cls }, value ?? "–");
export const row = (...cells) => h("tr", {}, cells);
export const note = (text) => h("p", { class: "note" }, text);
export const badge = (text, good) => h("span", { class: `badge ${good ? "good" : "bad"}` }, text);
const heads = (headers) =>
  h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls, scope: "col" }, label))));
export const emptyRow = (headers, text) =>
  h("tr", { class: "empty" }, h("td", { colspan: headers.length }, text));

// A table in a box that scrolls sideways on a narrow screen rather than overflowing the page.
export function table(headers, rows, empty, tbody = h("tbody")) {
  tbody.append(...(rows.length ? rows : [emptyRow(headers, empty)]));
  return h("div", { class: "scroll" }, h("table", {}, heads(headers), tbody));
}

export function when(iso) {
  return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–";
}

export function accountLink(id) {
  return id ? h("a", { href: `#/accounts/${encodeURIComponent(id)}` }, id) : "–";
}

export function transferLink(id, text = id) {
  return id ? h("a", { href: `#/transfers/${encodeURIComponent(id)}`, class: "mono" }, text) : "–";
}

// A list the API hands out a page at a time with cursors: `fetchPage(after)` returns the page's
// content and the next cursor (null: the last page); Previous goes back through those seen.
// Returns a function that shows the first page again (after the filters changed). Only the page
// asked for last is shown: an earlier request answering later (the unfiltered first page after a
// search, say) is dropped, with its error if it failed.
export function cursorPages(box, fetchPage) {
  const cursors = [""];
  let asked = 0;
  const show = () => load().catch((error) => box.replaceChildren(problemBox(error)));
  const turn = (label, change) => h("button", { type: "button", class: "secondary", disabled: !change,
    onclick: () => { change(); show(); } }, label);
  const load = async () => {
    const ticket = ++asked;
    const answer = await fetchPage(cursors.at(-1)).then((page) => ({ page }), (error) => ({ error }));
    if (ticket !== asked) return;
    if (answer.error) throw answer.error;
    const { content, next } = answer.page;
    box.replaceChildren(content, h("div", { class: "pager" },
      turn("Previous", cursors.length > 1 && (() => cursors.pop())),
      h("span", { class: "muted" }, `Page ${cursors.length}`),
      turn("Next", next && (() => cursors.push(next)))));
  };
  return () => {
    cursors.length = 1;
    return load();
  };
}

export function field(label, props) {
  const input = h("input", { name: label.toLowerCase().replaceAll(" ", "_"), required: true, ...props });
  return [h("label", {}, label, input), input];
}

// ------------------------------------------------------------------ money

// The API gives amounts as decimal strings with the currency's own number of decimals
// ("1343865.43" USD, "1500000" JPY, "2500.125" BHD): grouped here, never turned into a float.
export function money(amount, currency, sign = "") {
  if (amount === null || amount === undefined || amount === "") return "–";
  const text = String(amount);
  const negative = text.startsWith("-");
  const [whole, fraction] = text.replace(/^[-+]/, "").split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const shown = negative ? "−" : sign;
  return `${shown}${grouped}${fraction === undefined ? "" : `.${fraction}`} ${currency}`;
}

export const isZero = (amount) => /^-?0+(\.0+)?$/.test(amount);

// ------------------------------------------------------------------ the API and its problems

export class ApiError extends Error {
  constructor(problem) {
    super(`${problem.title}: ${problem.detail}`);
    this.problem = problem;
  }
}

export function problemBox(error) {
  const p = error.problem
    || { title: "Unexpected error in the page", detail: String(error.message || error) };
  const errors = p.errors || [];
  const lines = errors.map((e) => h("li", {},
    "line" in e ? `Line ${e.line ?? "–"}: ${e.problem}` : `${e.location}: ${e.message}`));
  // a refused payroll's detail repeats its lines, which are listed below it: each once
  const detail = errors.some((e) => "line" in e) ? p.detail.split(":")[0] : p.detail;
  return h("div", { class: "problem", role: "alert" },
    h("strong", { class: "title" }, p.title), " — ", h("span", { class: "detail" }, detail),
    lines.length ? h("ul", {}, lines) : null);
}

export async function api(method, path, { body, headers = {}, accept = "application/json" } = {}) {
  const init = { method, headers: { Accept: accept, ...headers } };
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
  if (accept === "application/json" || !response.ok) {
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
  }
  if (response.ok) return { data: data ?? text, response };
  const problem = data && data.title ? data
    : { title: `HTTP ${response.status}`, detail: text.slice(0, 300) || response.statusText };
  if (response.status === 401 && session.me) signOutHook(problem);
  throw new ApiError(problem);
}

let signOutHook = () => {};
export function onSignOut(fn) {
  signOutHook = fn;
}

export async function items(url) {
  return (await api("GET", url)).data.items;
}

export function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "dash-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function may(permission) {
  return Boolean(session.me && session.me.permissions.includes(permission));
}

export function every(ms, refresh, box) {
  timers.push(setInterval(() => refresh().catch((error) => box.replaceChildren(problemBox(error))), ms));
}

export function keep(timer) {
  timers.push(timer);
}

export function stopTimers() {
  timers.forEach(clearInterval);
  timers = [];
}

// ------------------------------------------------------------------ forms that change things

// One intended change per form: the same Idempotency-Key until the form is edited, so a double
// click or a retry changes nothing twice. Submitting shows what will happen; only "Confirm"
// sends. `describe()` returns that sentence (or throws to refuse), `send(key)` the request,
// `done(data, response)` what the page shows after.
export function actionForm({ fields, label, describe, send, done, className = "stack" }) {
  let key = null;
  const result = h("div", { class: "result", "aria-live": "polite" });
  const submit = h("button", { type: "submit" }, label);
  const form = h("form", { class: className, oninput: () => { key = null; }, onsubmit: (event) => {
    event.preventDefault();
    let sentence;
    try {
      sentence = describe();
    } catch (error) {
      result.replaceChildren(problemBox(error));
      return;
    }
    const confirm = h("button", { type: "button", class: "confirm" }, "Confirm");
    const back = h("button", { type: "button", class: "secondary" }, "Back");
    back.addEventListener("click", () => result.replaceChildren());
    confirm.addEventListener("click", async () => {
      confirm.disabled = back.disabled = true;
      key = key || newKey();
      try {
        const { data, response } = await send(key);
        result.replaceChildren(done(data, response));
      } catch (error) {
        result.replaceChildren(problemBox(error));
      }
    });
    result.replaceChildren(h("div", { class: "confirm-step panel", role: "group", "aria-label": "Confirm" },
      h("p", {}, sentence), h("div", { class: "actions" }, confirm, back)));
    confirm.focus();
  } }, ...fields, h("div", { class: "actions" }, submit));
  return h("div", { class: "action" }, form, result);
}

// A button that shows the page again, for a change the page's figures do not show yet.
export function reload(label = "Show the account again") {
  return h("button", { type: "button", class: "link", onclick: () => render() }, label);
}

export function success(...children) {
  return h("div", { class: "success", role: "status" }, ...children);
}

// An account id input that suggests ids and owners from GET /accounts as one types.
let suggestions = 0;
export function accountField(label, value = "") {
  const list = h("datalist", { id: `accounts-${++suggestions}` });
  const [wrapper, input] = field(label, { value, autocomplete: "off", list: list.id,
    placeholder: "account id" });
  let pending = null;
  input.addEventListener("input", () => {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      const q = input.value.trim();
      try {
        const page = (await api("GET", `/accounts?${new URLSearchParams({ q, limit: 10 })}`)).data;
        list.replaceChildren(...page.items.map((a) =>
          h("option", { value: a.account_id }, `${a.owner} · ${money(a.balance, a.currency)}`)));
      } catch {
        list.replaceChildren(); // suggestions are a convenience: the form still works without
      }
    }, 150);
  });
  wrapper.append(list);
  return [wrapper, input];
}
