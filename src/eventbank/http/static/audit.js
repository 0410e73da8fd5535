// The audit: the last recorded one, and (auditor, admin) running one and reading its report.
"use strict";

import { ApiError, api, h, may, money, note, problemBox, row, table, td, when } from "./lib.js";
import { auditVerdict, latestAudit } from "./overview.js";

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
        row(td(currency), td(money(b.balances, currency), "num"), td(money(b.deposits, currency), "num"),
          td(money(b.withdrawals, currency), "num"))),
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

export async function auditPage(view) {
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
