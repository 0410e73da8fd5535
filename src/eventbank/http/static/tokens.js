// API tokens (admin): who may do what. A new token's secret is shown once, here, and never again.
"use strict";

import { actionForm, api, badge, field, h, may, note, reload, row, success, table, td, when } from "./lib.js";

export async function tokensPage(view) {
  view.append(h("h1", {}, "API tokens"));
  if (!may("admin")) {
    view.append(note("Managing tokens needs the admin role."));
    return;
  }
  const list = h("div", { id: "tokens" });
  view.append(list);
  const { items } = (await api("GET", "/tokens")).data;
  const revoke = (t) => actionForm({ fields: [], label: "Revoke", className: "inline",
    describe: () => `Revoke ${t.name} (${t.role})? Requests with it are refused within seconds.`,
    send: () => api("DELETE", `/tokens/${encodeURIComponent(t.name)}`),
    done: () => success(`${t.name} is revoked. `, reload("Show the tokens again")) });
  list.append(table([["Name"], ["Role"], ["Created"], ["Last used"], ["Revoke"]],
    items.map((t) => row(td(t.name), td(badge(t.role, true)), td(when(t.created_at)), td(when(t.last_used_at)),
      td(t.read_only ? h("span", { class: "muted" }, "set by the environment") : revoke(t)))),
    "No tokens"));

  const [nameLabel, name] = field("Name", { maxlength: 64, pattern: "[A-Za-z0-9_.\\-]{1,64}",
    title: "letters, digits and _ . - (up to 64)" });
  const role = h("select", { name: "role" }, ["teller", "auditor", "admin"].map((r) => h("option", {}, r)));
  view.append(h("h2", {}, "Add a token"), actionForm({
    fields: [nameLabel, h("label", {}, "Role", role)],
    label: "Add token",
    describe: () => `Add the ${role.value} token ${name.value.trim()}? Its secret is shown once.`,
    send: () => api("POST", "/tokens", { body: { name: name.value.trim(), role: role.value } }),
    done: (t) => success(`Added ${t.name} (${t.role}). Copy its secret now: it is not shown again.`,
      h("pre", { class: "secret", tabindex: "0" }, t.token), reload("Show the tokens again")),
  }));
}
