// app.js: the admin UI: login, pages, forms from the key tables, live state over a WebSocket.
"use strict";
let csrf = null;
let kind = "server";
let socket = null;
let configDoc = null;
let configSchema = null;
const samples = [];

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function age(ms) {
  const s = Math.floor(ms / 1000);
  return s < 60 ? s + "s" : s < 3600 ? Math.floor(s / 60) + "m" + (s % 60) + "s" : Math.floor(s / 3600) + "h" + Math.floor(s % 3600 / 60) + "m";
}

async function api(method, path, body) {
  const headers = {};
  if (method !== "GET") { headers["X-CSRF-Token"] = csrf || ""; headers["Content-Type"] = "application/json"; }
  const r = await fetch("/api/" + path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (e) { data = {}; }
  if (r.status === 401 && path !== "login") { showLogin(); }
  return { status: r.status, data };
}

function translate() {
  document.documentElement.lang = GT_LANG === "zh" ? "zh-CN" : "en";
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
}

function showPage(name) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== "page-" + name;
  for (const a of document.querySelectorAll("nav a"))
    if (a.getAttribute("href") === "#/" + name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
}

function showLogin() {
  csrf = null; $("nav").hidden = true; showPage("login");
  if (socket) { socket.close(); socket = null; }
}

async function afterLogin(session) {
  csrf = session.csrfToken;
  $("nav").hidden = false;
  const st = await api("GET", "status");
  kind = st.data.kind;
  $("kind").textContent = kind;
  $("nav-users").hidden = kind !== "server";
  $("nav-services").hidden = kind !== "client";
  openSocket();
  if (session.needsPassword && !location.hash.startsWith("#/")) location.hash = st.data.configExists ? "#/account" : "#/config";
  route();
}

async function start() {
  translate();
  const m = location.hash.match(/^#key=([0-9a-f]+)$/);
  if (m) {
    history.replaceState(null, "", "/#/overview");
    const r = await api("POST", "login", { key: m[1] });
    if (r.status === 200) return afterLogin(r.data);
    $("login-error").textContent = r.status === 429 ? t("tooMany") : t("wrongLogin");
    return showLogin();
  }
  const r = await api("GET", "session");
  if (r.status === 200) afterLogin(r.data); else showLogin();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const r = await api("POST", "login", { username: f.username.value, password: f.password.value });
  if (r.status === 200) { $("login-error").textContent = ""; f.password.value = ""; location.hash = "#/overview"; afterLogin(r.data); }
  else $("login-error").textContent = r.status === 429 ? t("tooMany") : t("wrongLogin");
});
$("logout").addEventListener("click", async () => { await api("POST", "logout", {}); showLogin(); });

function route() {
  if (!csrf) return showLogin();
  const name = (location.hash.match(/^#\/(\w+)/) || [null, "overview"])[1];
  showPage(name);
  ({ overview: loadOverview, config: loadConfig, users: loadUsers, services: loadServices,
     traffic: drawChart, logs: loadLogs, connections: () => {}, account: () => {} }[name] || (() => {}))();
  $("main").focus();
}
window.addEventListener("hashchange", route);

/* Overview */
async function loadOverview() {
  const r = await api("GET", "status");
  const d = r.data, s = d.state || {};
  const dl = $("overview"); dl.replaceChildren();
  const add = (k, v) => dl.append(el("dt", { text: k }), el("dd", { text: v }));
  add(t("version"), d.version);
  add(t("configFile"), d.configPath);
  add(t("running"), d.running ? t("yes") : t("no") + (d.applyError ? " — " + d.applyError : ""));
  if (s.listeners) add(t("listeners"), Object.entries(s.listeners).map(([k, v]) => k + " " + v).join(", "));
  if (s.uptimeMs !== undefined) add(t("uptime"), age(s.uptimeMs));
  add(t("tunnels"), String(s.tunnels || 0));
  add(t("streams"), String(s.streams || 0));
  add(t("bytesIn"), bytes(s.bytesIn || 0));
  add(t("bytesOut"), bytes(s.bytesOut || 0));
}

/* Configuration form, made from the key tables */
function fieldInput(path, def, value) {
  const id = "f-" + path.replace(/[^\w-]/g, "_");
  let input;
  if (def.type === "bool") {
    input = el("input", { type: "checkbox", id });
    input.checked = value === true || value === "true";
  } else {
    input = el("input", { id, type: def.type === "secret" ? "password" : "text", autocomplete: "off" });
    if (Array.isArray(value)) input.value = value.join(", ");
    else if (value !== undefined && value !== null && typeof value !== "object") input.value = value;
    if (def.type === "secret") input.placeholder = t("unchanged");
    if (typeof value === "object" && value !== null && !Array.isArray(value)) input.value = JSON.stringify(value);
  }
  input.dataset.field = path; input.dataset.type = def.type;
  input.dataset.wasArray = Array.isArray(value) ? "1" : "";
  const err = el("span", { class: "field-error", id: id + "-err", role: "alert" });
  input.setAttribute("aria-describedby", id + "-err");
  return el("div", { class: "field" }, el("label", { for: id, text: def.name }), input,
    el("span", { class: "help", text: def.help }), err);
}
function readInput(input) {
  if (input.type === "checkbox") return input.checked ? "true" : undefined;
  const v = input.value.trim();
  if (v === "") return undefined;
  if (input.dataset.type === "list" && (input.dataset.wasArray || v.includes(",")))
    return v.split(",").map((x) => x.trim()).filter((x) => x);
  if ((input.dataset.type === "ranges" || input.dataset.type === "host-rules") && /^[\[{]/.test(v)) {
    try { return JSON.parse(v); } catch (e) { return v; }
  }
  return v;
}
function listItem(index, item) {
  const box = el("div", { class: "item" });
  const defs = configSchema[kind === "server" ? "users" : "services"];
  const base = kind === "server" ? "users." + item.__id : "services." + index;
  if (kind === "server")
    box.append(fieldInput(base + ".__id", { name: "id", type: "string", help: "" }, item.__id));
  for (const def of defs) box.append(fieldInput(base + "." + def.name, def, item[def.name]));
  box.append(el("button", { type: "button", text: t("remove"), onclick: () => box.remove() }));
  return box;
}
async function loadConfig() {
  const r = await api("GET", "config");
  configDoc = r.data.config; configSchema = r.data.schema;
  $("config-path").textContent = r.data.path;
  const opts = $("config-options"); opts.replaceChildren();
  for (const def of configSchema.options) opts.append(fieldInput("options." + def.name, def, (configDoc.options || {})[def.name]));
  if (kind === "server") {
    // The server's top-level keys beside options: the global port pool and host rules.
    opts.append(fieldInput("tcp", { name: "tcp", type: "ranges", help: "global port pool: [{\"range\": \"20000-20100\"}]" }, configDoc.tcp));
    opts.append(fieldInput("host", { name: "host", type: "host-rules", help: "{\"number\": 0, \"regex\": [], \"withID\": false}" }, configDoc.host));
  }
  $("config-list-title").textContent = t(kind === "server" ? "users" : "services");
  const list = $("config-list"); list.replaceChildren();
  if (kind === "server") for (const [id, u] of Object.entries(configDoc.users || {})) list.append(listItem(0, Object.assign({ __id: id }, u || {})));
  else (configDoc.services || []).forEach((s, i) => list.append(listItem(i, s)));
}
$("config-add").addEventListener("click", () => {
  const list = $("config-list");
  list.append(listItem(list.children.length + 1000, kind === "server" ? { __id: "" } : {}));
});
function collectConfig() {
  const doc = JSON.parse(JSON.stringify(configDoc || {}));
  doc.type = kind; doc.options = doc.options || {};
  for (const input of $("config-options").querySelectorAll("input")) {
    const v = readInput(input);
    if (!input.dataset.field.startsWith("options.")) {
      if (v === undefined) delete doc[input.dataset.field]; else doc[input.dataset.field] = v;
      continue;
    }
    const name = input.dataset.field.slice("options.".length);
    if (v === undefined) delete doc.options[name]; else doc.options[name] = v;
  }
  if (kind === "server") {
    const users = {};
    for (const box of $("config-list").children) {
      const inputs = box.querySelectorAll("input");
      const id = inputs[0].value.trim(); if (!id) continue;
      const old = (configDoc.users || {})[id] || {};
      const u = Object.assign({}, old);
      for (const input of [...inputs].slice(1)) {
        const name = input.dataset.field.split(".").pop();
        const v = readInput(input); if (v === undefined) delete u[name]; else u[name] = v;
      }
      users[id] = u;
    }
    doc.users = users;
  } else {
    doc.services = [...$("config-list").children].map((box) => {
      const s = {};
      for (const input of box.querySelectorAll("input")) {
        const v = readInput(input); if (v !== undefined) s[input.dataset.field.split(".").pop()] = v;
      }
      return s;
    }).filter((s) => Object.keys(s).length);
  }
  return doc;
}
function showErrors(errors) {
  for (const e of document.querySelectorAll(".field-error")) e.textContent = "";
  for (const i of document.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
  const general = [];
  for (const e of errors || []) {
    let input = document.querySelector('[data-field="' + CSS.escape(e.field) + '"]');
    if (!input && e.field) {
      // A message about an entry: the entry's first field.
      input = document.querySelector('[data-field^="' + CSS.escape(e.field) + '."]');
    }
    if (input) { input.setAttribute("aria-invalid", "true"); $(input.id + "-err").textContent = e.message; }
    else general.push(e.message);
  }
  $("config-errors").textContent = general.join("\n");
}
async function sendConfig(save) {
  const r = await api("POST", save ? "config/save" : "config/validate", { config: collectConfig(), apply: true });
  showErrors(r.data.errors);
  $("config-result").textContent = r.data.ok ? (save ? t("saved") : t("valid")) : (r.data.applyError || t("invalid"));
  if (r.data.ok && save) loadConfig();
}
$("config-validate").addEventListener("click", () => sendConfig(false));
$("config-form").addEventListener("submit", (ev) => { ev.preventDefault(); sendConfig(true); });

/* Users (server) */
async function loadUsers() {
  const r = await api("GET", "users");
  const connected = new Set(((r.data.state || {}).clients || []).map((c) => c.id));
  const body = $("users-body"); body.replaceChildren();
  for (const [id, u] of Object.entries(r.data.users || {})) {
    const limits = ["speed", "connections", "tcpNumber"].filter((k) => u && u[k] !== undefined).map((k) => k + "=" + u[k]).join(" ");
    const actions = el("td", {},
      el("button", { type: "button", text: t("remove"), onclick: async () => { const x = await api("DELETE", "users/" + encodeURIComponent(id)); $("users-result").textContent = x.data.error || (x.data.errors || []).map((e) => e.message).join("\n"); loadUsers(); } }));
    if (connected.has(id))
      actions.append(" ", el("button", { type: "button", text: t("disconnect"), onclick: async () => { await api("POST", "users/" + encodeURIComponent(id) + "/disconnect", {}); loadUsers(); } }));
    body.append(el("tr", {}, el("td", { text: id }), el("td", { text: connected.has(id) ? t("yes") : t("no") }), el("td", { text: limits }), actions));
  }
}
$("user-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target, user = {};
  for (const k of ["secret", "speed", "connections", "tcpNumber"]) if (f[k].value.trim()) user[k] = f[k].value.trim();
  const exists = (await api("GET", "users")).data.users[f.id.value] !== undefined;
  const r = exists ? await api("PUT", "users/" + encodeURIComponent(f.id.value), { user })
                   : await api("POST", "users", { id: f.id.value, user });
  $("users-result").textContent = r.data.ok ? t("saved") : (r.data.error || (r.data.errors || []).map((e) => e.message).join("\n"));
  loadUsers();
});

/* Services (client) */
async function loadServices() {
  const r = await api("GET", "services");
  const body = $("services-body"); body.replaceChildren();
  (r.data.services || []).forEach((s, i) => {
    body.append(el("tr", {}, el("td", { text: s.local || "" }), el("td", { text: s.hostPrefix || "" }), el("td", { text: s.remoteTCPPort || s.remoteUDPPort || "" }),
      el("td", {}, el("button", { type: "button", text: t("remove"), onclick: async () => { const x = await api("DELETE", "services/" + i); $("services-result").textContent = x.data.ok ? t("saved") : (x.data.error || (x.data.errors || []).map((e) => e.message).join("\n")); loadServices(); } }))));
  });
}
$("service-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target, service = { local: f.local.value.trim() };
  if (f.hostPrefix.value.trim()) service.hostPrefix = f.hostPrefix.value.trim();
  if (f.remoteTCPPort.value.trim()) service.remoteTCPPort = f.remoteTCPPort.value.trim();
  const r = await api("POST", "services", { service });
  $("services-result").textContent = r.data.ok ? t("saved") : (r.data.error || (r.data.errors || []).map((e) => e.message).join("\n"));
  if (r.data.ok) f.reset();
  loadServices();
});

/* Live connections and traffic */
function renderState(state) {
  const tb = $("tunnels-body"), sb = $("streams-body");
  tb.replaceChildren(); sb.replaceChildren();
  if (!state) return;
  if (state.kind === "server") {
    for (const c of state.clients || []) {
      for (const tun of c.tunnels || [])
        tb.append(el("tr", {}, el("td", { text: c.id }), el("td", { text: tun.peer }), el("td", { text: tun.streams }),
          el("td", { text: bytes(tun.bytesIn) }), el("td", { text: bytes(tun.bytesOut) }),
          el("td", {}, el("button", { type: "button", text: t("disconnect"), onclick: () => api("POST", "users/" + encodeURIComponent(c.id) + "/disconnect", {}) }))));
      for (const s of c.streams || [])
        sb.append(el("tr", {}, el("td", { text: c.id }), el("td", { text: s.remote }), el("td", { text: s.service }), el("td", { text: age(s.ageMs || 0) }), el("td", { text: bytes(s.bytesIn) }), el("td", { text: bytes(s.bytesOut) })));
    }
  } else {
    for (const tun of state.tunnelList || [])
      tb.append(el("tr", {}, el("td", { text: state.id }), el("td", { text: tun.remote + " (" + tun.state + ")" }), el("td", { text: tun.streams }), el("td", { text: bytes(tun.bytesIn) }), el("td", { text: bytes(tun.bytesOut) }), el("td", {})));
    for (const s of state.streamList || [])
      sb.append(el("tr", {}, el("td", { text: state.id }), el("td", { text: s.remote }), el("td", { text: s.service }), el("td", { text: age(s.ageMs || 0) }), el("td", { text: bytes(s.bytesIn) }), el("td", { text: bytes(s.bytesOut) })));
  }
}
function openSocket() {
  if (socket) return;
  socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/ws");
  socket.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type !== "state") return;
    renderState(m.state);
    samples.push(m.sample); while (samples.length > 300) samples.shift();
    if (!$("page-traffic").hidden) drawChart();
  };
  socket.onclose = () => { socket = null; if (csrf) setTimeout(openSocket, 2000); };
}
async function drawChart() {
  if (samples.length === 0) { const r = await api("GET", "traffic"); samples.push(...(r.data.samples || [])); }
  const c = $("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const max = Math.max(1024, ...samples.map((s) => Math.max(s.in, s.out)));
  const line = (key, color) => {
    g.strokeStyle = color; g.beginPath();
    samples.forEach((s, i) => { const x = i * c.width / 300, y = c.height - 20 - (s[key] / max) * (c.height - 40); i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
  };
  line("in", "#0969da"); line("out", "#cf222e");
  // Per client (server) or tunnel (client): in + out of each, dashed, with a legend.
  const keys = [...new Set(samples.flatMap((s) => Object.keys(s.per || {})))].slice(0, 8);
  const colors = ["#1a7f37", "#8250df", "#bf8700", "#0550ae", "#a40e26", "#116329", "#6639ba", "#953800"];
  g.setLineDash([4, 3]);
  keys.forEach((k, n) => {
    g.strokeStyle = colors[n]; g.beginPath();
    samples.forEach((s, i) => {
      const v = s.per && s.per[k] ? s.per[k][0] + s.per[k][1] : 0;
      const x = i * c.width / 300, y = c.height - 20 - (v / max) * (c.height - 40);
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
    g.fillStyle = colors[n]; g.fillText(k, c.width - 160, 14 + 14 * n);
  });
  g.setLineDash([]);
  g.fillStyle = "#0969da"; g.fillText(t("bytesIn"), 4, c.height - 4);
  g.fillStyle = "#cf222e"; g.fillText(t("bytesOut"), 60, c.height - 4);
  g.fillStyle = "#1d1d1f"; g.fillText(bytes(max) + "/s", 4, 12);
  const last = samples[samples.length - 1];
  if (last) $("traffic-now").textContent = t("bytesIn") + " " + bytes(last.in) + "/s, " + t("bytesOut") + " " + bytes(last.out) + "/s";
}

/* Logs and account */
async function loadLogs() {
  const r = await api("GET", "logs");
  $("logs").textContent = (r.data.lines || []).join("\n");
}
$("password-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const r = await api("POST", "password", { username: f.username.value, password: f.password.value });
  $("password-result").textContent = r.status === 200 ? t("passwordSaved") : r.data.error;
  f.password.value = "";
});

start();
