// Webhooks (admin): the subscriptions that deliver the event feed to other systems, how far
// behind each is, and the actions on them. A new subscription's secret is shown once, here.
"use strict";

import { actionForm, api, badge, field, h, may, note, reload, row, success, table, td, when } from "./lib.js";

const count = (n, one) => `${n.toLocaleString("en-US")} ${one}${n === 1 ? "" : "s"}`;

// From GET /webhooks/{id}: failing once the worker gave up for now, retrying before that.
function state(w) {
  const { attempts, failing, paused } = w.status;
  if (paused) return badge("paused", false);
  if (!failing && !attempts) return badge("active", true);
  return badge(`${failing ? "failing" : "retrying"} · ${count(attempts, "attempt")}`, false);
}

// Undelivered events (of the next window: "≥" when there are more) and the oldest one's age.
const behind = ({ lag_events, lag_capped, lag_seconds }) =>
  `${lag_capped ? "≥ " : ""}${count(lag_events, "event")} · ${Math.round(lag_seconds).toLocaleString("en-US")} s`;

export async function webhooksPage(view) {
  view.append(h("h1", {}, "Webhooks"));
  if (!may("admin")) {
    view.append(note("Managing webhooks needs the admin role."));
    return;
  }
  const { items } = (await api("GET", "/webhooks")).data;
  const shown = await Promise.all(items.map(async (w) =>
    (await api("GET", `/webhooks/${encodeURIComponent(w.webhook_id)}`)).data));
  const act = (w, label, describe, send) => actionForm({ fields: [], label, className: "inline", describe,
    send, done: () => success("Done. ", reload("Show the webhooks again")) });
  const path = (w) => `/webhooks/${encodeURIComponent(w.webhook_id)}`;
  view.append(h("div", { id: "webhooks" }, table(
    [["URL"], ["Events"], ["State"], ["Behind", "num"], ["Last delivered"], ["Last error"], ["Act"]],
    shown.map((w) => row(td([h("span", { class: "mono" }, w.url),
      w.description ? h("div", { class: "sub" }, w.description) : null]), td(w.event_types.join(", ") || "all"),
      td(state(w)), td(behind(w.status), "num"),
      td(when(w.status.last_success_at)), td(w.status.last_error || "none"),
      td(h("div", { class: "actions" },
        act(w, w.paused ? "Resume" : "Pause",
          () => (w.paused ? `Resume delivery to ${w.url}? It goes on from where it stopped.`
            : `Pause delivery to ${w.url}? Nothing is skipped: it goes on when resumed.`),
          () => api("PATCH", path(w), { body: { paused: !w.paused } })),
        act(w, "Remove", () => `Stop delivering to ${w.url} for good?`,
          () => api("DELETE", path(w))))))),
    "No webhooks yet")));

  const [urlLabel, url] = field("URL", { type: "url", maxlength: 2000, placeholder: "https://…" });
  const [typesLabel, types] = field("Event types", { required: false,
    placeholder: "all, or e.g. TransferredOut, TransferredIn" });
  const [descriptionLabel, description] = field("Description", { required: false, maxlength: 500 });
  const chosen = () => types.value.split(",").map((t) => t.trim()).filter(Boolean);
  view.append(h("h2", {}, "Add a webhook"), actionForm({
    fields: [urlLabel, typesLabel, descriptionLabel],
    label: "Add webhook",
    describe: () => `POST ${chosen().length ? chosen().join(", ") : "every"} event to ${url.value.trim()}, `
      + "signed, in feed order? Its signing secret is shown once.",
    send: () => api("POST", "/webhooks", { body: { url: url.value.trim(), event_types: chosen(),
      description: description.value.trim() } }),
    done: (w) => success(`Added ${w.webhook_id}. Give its receiver this signing secret now: it is not shown again.`,
      h("pre", { class: "secret", tabindex: "0" }, w.secret), reload("Show the webhooks again")),
  }));
}
