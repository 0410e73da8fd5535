// Payrolls: the list (status and progress, each one's page reachable again), starting one from
// a CSV file, and a payroll's page, followed live while it runs.
"use strict";

import {
  accountField, accountLink, actionForm, api, badge, cursorPages, h, keep, may, money, note, problemBox, row,
  success, table, td, when,
} from "./lib.js";

const FINISHED = (p) => !["running", "compensating"].includes(p.status);
const processed = (p) => p.paid + p.failed + p.compensated + p.compensation_failed;
const good = (p) => !FINISHED(p) || p.status === "completed";
const payrollLink = (p) => h("a", { href: `#/payrolls/${encodeURIComponent(p.saga_id)}`, class: "mono" }, p.saga_id);

export async function payrollsList(view) {
  const results = h("div");
  const first = cursorPages(results, async (after) => {
    const params = new URLSearchParams({ limit: 20 });
    if (after) params.set("after", after);
    const page = (await api("GET", `/payrolls?${params}`)).data;
    return { next: page.next, content:
      table([["Started"], ["Payroll"], ["Paying account"], ["Status"], ["Progress"], ["Paid", "num"]],
        page.items.map((p) => row(td(when(p.started_at)), td(payrollLink(p)), td(accountLink(p.employer_id)),
          td(badge(p.status, good(p))),
          td(h("span", {}, h("progress", { max: p.lines, value: processed(p), "aria-label": `payroll ${p.saga_id} progress` }),
            ` ${processed(p).toLocaleString("en-US")} of ${p.lines.toLocaleString("en-US")} lines`)),
          td(`${money(p.moved, p.currency)} of ${money(p.total, p.currency)}`, "num"))),
        "No payrolls yet") };
  });
  view.append(h("div", { class: "title-row" }, h("h1", {}, "Payrolls"),
    may("write") ? h("a", { class: "button", href: "#/payrolls/new" }, "Start a payroll") : null), results);
  await first();
}

export async function newPayrollPage(view) {
  view.append(h("h1", {}, "Start a payroll"));
  if (!may("write")) {
    view.append(note("Starting a payroll needs the write permission (teller or admin role)."));
    return;
  }
  const [fromLabel, fromInput] = accountField("Paying account");
  const policy = h("select", { name: "policy" },
    h("option", {}, "all-or-nothing"), h("option", {}, "best-effort"));
  const file = h("input", { type: "file", name: "file", accept: ".csv,text/csv", required: true });
  view.append(actionForm({
    fields: [fromLabel, h("label", {}, "Policy", policy),
      h("label", {}, "CSV file (account_id,amount,reference)", file)],
    label: "Start payroll",
    describe: () => `Pay the lines of ${file.files[0].name} from ${fromInput.value.trim()} (${policy.value})?`
      + " Every line is checked first; nothing is paid if the file is refused.",
    send: async (key) => {
      const params = new URLSearchParams({ from_account_id: fromInput.value.trim(), policy: policy.value });
      return api("POST", `/payrolls?${params}`, { body: await file.files[0].text(),
        headers: { "Content-Type": "text/csv", "Idempotency-Key": key } });
    },
    done: (p) => {
      location.hash = `#/payrolls/${encodeURIComponent(p.saga_id)}`;
      return success("Started ", payrollLink(p), ".");
    },
  }));
}

export async function payrollPage(view, id) {
  const path = `/payrolls/${encodeURIComponent(id)}`;
  const box = h("div", { "aria-live": "polite" });
  view.append(h("h1", {}, "Payroll ", h("code", {}, id)), box);
  const show = async (p) => {
    const done = processed(p);
    const failures = Object.entries(p.failures).sort(([a], [b]) => Number(a) - Number(b))
      .map(([line, why]) => row(td(line, "num"), td(why)));
    box.replaceChildren(h("div", { class: "panel" },
      h("p", {}, badge(p.status, good(p)), " paid from ", accountLink(p.employer_id), ` (${p.policy})`),
      h("progress", { max: p.lines, value: done, "aria-label": "progress" }),
      h("p", {}, `${done.toLocaleString("en-US")} of ${p.lines.toLocaleString("en-US")} lines processed: `
        + `${p.paid} paid, ${p.failed} failed, ${p.compensated} compensated, `
        + `${p.compensation_failed} compensations failed.`),
      h("p", {}, `Moved ${money(p.moved, p.currency)} of ${money(p.total, p.currency)}.`)),
    failures.length ? [h("h2", {}, "Lines that failed"), table([["Line", "num"], ["Why"]], failures, "")] : "");
    return FINISHED(p);
  };
  if (await show((await api("GET", path)).data)) return;
  const poll = setInterval(async () => {
    try {
      if (await show((await api("GET", path)).data)) clearInterval(poll);
    } catch (error) {
      clearInterval(poll);
      box.append(problemBox(error));
    }
  }, 400);
  keep(poll);
}
