// The overview: what the ledger holds, whether it is keeping up, its last audit, its rate, and
// the latest movements across all accounts.
"use strict";

import {
  accountLink, api, badge, every, h, money, problemBox, row, svg, table, td, transferLink, when,
} from "./lib.js";
import { KINDS, signOf } from "./movements.js";

function card(label, value, sub) {
  return h("div", { class: "card" }, h("div", { class: "label" }, label),
    h("div", { class: "value" }, value), h("div", { class: "sub" }, sub));
}

export async function latestAudit() {
  try {
    return (await api("GET", "/audits/latest")).data;
  } catch (error) {
    if (error.problem && error.problem.code === "audit_not_found") return null;
    throw error;
  }
}

export function auditVerdict(audit) {
  if (audit.clean) return badge("clean", true);
  const count = Object.values(audit.findings).reduce((a, b) => a + b, 0);
  return badge(`${count} findings`, false);
}

export async function overview(view) {
  const body = h("div");
  const activity = h("div", { id: "activity" });
  view.append(h("h1", {}, "Overview"), body, h("h2", {}, "Recent activity"), activity);
  const refresh = async () => {
    const [{ data: stats }, audit] = await Promise.all([api("GET", "/stats"), latestAudit()]);
    const lag = stats.projection;
    const currencies = stats.totals.length === 1 ? "1 currency" : `${stats.totals.length} currencies`;
    body.replaceChildren(
      h("div", { class: "cards" },
        card("Accounts open", stats.accounts_open.toLocaleString("en-US"), `in ${currencies}`),
        card("Projection lag", `${lag.lag_capped ? "≥ " : ""}${lag.lag_events} events`,
          `${lag.lag_seconds} s behind · ${lag.parked_streams} parked`),
        audit ? card("Last audit", auditVerdict(audit), `${when(audit.recorded_at)} by ${audit.actor}`)
          : card("Last audit", "none yet", h("a", { href: "#/audit" }, "run one"))),
      h("h2", {}, "Totals per currency"),
      table([["Currency"], ["Open accounts", "num"], ["Total balance", "num"]],
        stats.totals.map((t) => row(td(t.currency), td(t.accounts_open.toLocaleString("en-US"), "num"),
          td(money(t.balance, t.currency), "num"))),
        "No accounts yet"),
      h("h2", {}, "Events and transfers per second"),
      rateChart(stats.activity),
      h("p", { class: "muted" }, `Updated ${when(stats.generated_at)}; refreshes every 5 s.`));
  };
  await refresh();
  every(5000, refresh, body);
  await recentActivity(activity);
}

// The feed's latest movements, newest first; "Show older" follows the API's cursor.
async function recentActivity(box) {
  const headers = [["Recorded"], ["Account"], ["Movement"], ["Amount", "num"], ["Counterparty"],
    ["Transfer"], ["By"]];
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "secondary" }, "Show older");
  let before = null;
  const next = async () => {
    const params = new URLSearchParams({ limit: 20, ...(before ? { before } : {}) });
    const page = (await api("GET", `/activity?${params}`)).data;
    if (tbody.querySelector("tr.empty")) tbody.replaceChildren();
    tbody.append(...page.items.map((m) => row(td(when(m.recorded_at)), td(accountLink(m.account_id)),
      td(KINDS[m.kind] || m.kind), td(money(m.amount, m.currency, signOf(m.kind)), `num ${signOf(m.kind, "class")}`),
      td(accountLink(m.counterparty)), td(transferLink(m.transfer_id, "open")), td(m.actor))));
    before = page.next;
    more.hidden = !before;
    if (!tbody.children.length) tbody.append(h("tr", { class: "empty" }, h("td", { colspan: headers.length }, "No movements yet")));
  };
  more.addEventListener("click", () => next().catch((error) => box.append(problemBox(error))));
  box.append(table(headers, [], "", tbody), h("div", { class: "actions" }, more));
  await next();
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
