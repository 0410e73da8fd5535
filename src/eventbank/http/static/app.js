// The eventbank operator dashboard: a single page over the JSON API, no framework, no build:
// ES modules served by `eventbank serve`. The token lives in sessionStorage (this tab only).
// Money is shown as the decimal strings the API returns, grouped, never computed here. Every API
// error is shown with its problem title (what happened) and detail.
"use strict";

import { accountPage, accountsList, openAccountPage } from "./accounts.js";
import { auditPage } from "./audit.js";
import { h, main, may, onRender, onSignOut, problemBox, session, stopTimers, api } from "./lib.js";
import { overview } from "./overview.js";
import { payrollPage, payrollsList, newPayrollPage } from "./payrolls.js";
import { tokensPage } from "./tokens.js";
import { newTransferPage, transferPage, transfersList } from "./transfers.js";
import { webhooksPage } from "./webhooks.js";

const TOKEN_KEY = "eventbank.token";

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

const nav = document.getElementById("nav");
const menu = document.getElementById("menu");

function chrome(signedIn) {
  nav.hidden = !signedIn;
  menu.hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  const who = document.getElementById("who");
  who.hidden = !signedIn;
  who.textContent = signedIn ? `${session.me.name} (${session.me.role})` : "";
  for (const link of nav.querySelectorAll("a")) {
    link.hidden = Boolean(link.dataset.needs) && !may(link.dataset.needs);
  }
}

function showMenu(open) {
  document.body.classList.toggle("menu-open", open);
  menu.setAttribute("aria-expanded", String(open));
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
  [/^#\/accounts\/new$/, openAccountPage],
  [/^#\/accounts\/([^/?]+)$/, accountPage],
  [/^#\/transfers$/, transfersList],
  [/^#\/transfers\/new(?:\?from=([^&]*))?$/, newTransferPage],
  [/^#\/transfer(?:\?from=([^&]*))?$/, newTransferPage], // the address of earlier releases
  [/^#\/transfers\/([^/?]+)$/, transferPage],
  [/^#\/payrolls$/, payrollsList],
  [/^#\/payrolls\/new$/, newPayrollPage],
  [/^#\/payroll$/, newPayrollPage], // the address of earlier releases
  [/^#\/payrolls\/([^/?]+)$/, payrollPage],
  [/^#\/audit$/, auditPage],
  [/^#\/tokens$/, tokensPage],
  [/^#\/webhooks$/, webhooksPage],
];

function render() {
  stopTimers();
  showMenu(false);
  if (!session.me) return showLogin();
  chrome(true);
  const hash = location.hash || "#/";
  const [pattern, view] = ROUTES.find(([p]) => p.test(hash)) || [null, notFound];
  const args = pattern ? hash.match(pattern).slice(1).map((a) => a && decodeURIComponent(a)) : [];
  const top = hash.split(/[/?]/)[1] || "";
  for (const link of nav.querySelectorAll("a")) {
    const current = link.getAttribute("href").split("/")[1] === top.replace(/^(transfer|payroll)$/, "$1s");
    link.classList.toggle("active", current);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const section = h("section");
  main.replaceChildren(section);
  view(section, ...args).catch((error) => section.append(problemBox(error)));
}

async function notFound(view) {
  view.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
}

onRender(render);
onSignOut(signOut);
window.addEventListener("hashchange", render);
window.addEventListener("unhandledrejection", (event) => main.prepend(problemBox(event.reason)));
document.getElementById("sign-out").addEventListener("click", () => signOut());
menu.addEventListener("click", () => showMenu(!document.body.classList.contains("menu-open")));
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved).then(render, (error) => signOut(error.problem));
else showLogin();
