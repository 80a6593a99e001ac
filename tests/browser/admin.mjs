// admin.mjs: the admin web UI in Debian's headless Chromium (driven by playwright-core) against
// real gt processes on 127.0.0.1: set a server up from its one-time link, then a client (in
// Simplified Chinese), add a service and watch its request in the live connections table.
// Screenshots of every page go to $GT_TEST_LOG_DIR. Exit 77 (skip) without playwright-core.
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";

let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  console.log("# SKIP playwright-core is not installed (build-aux/dev installs it)");
  process.exit(77);
}
const GT = process.env.GT_BINARY;
const CHROMIUM = process.env.GT_CHROMIUM || "/usr/bin/chromium";
if (!GT || !fs.existsSync(CHROMIUM)) {
  console.log("# SKIP needs GT_BINARY and " + CHROMIUM);
  process.exit(77);
}
const LOG_DIR = process.env.GT_TEST_LOG_DIR || fs.mkdtempSync(path.join(os.tmpdir(), "gt-shots-"));
fs.mkdirSync(LOG_DIR, { recursive: true });
const WAIT = 60000;
const SECRET = "browser-test-secret-42";
const children = [];
const contexts = [];
const dirs = [];

function log(msg) { console.log("# " + msg); }
function tmpdir(name) { const d = fs.mkdtempSync(path.join(os.tmpdir(), "gt-" + name + "-")); dirs.push(d); return d; }
function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

// A gt child whose merged output is kept line by line.
function startGt(name, args, cwd) {
  const child = spawn(GT, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
  child.lines = [];
  child.waiters = [];
  const feed = (buf) => {
    for (const line of buf.toString().split("\n")) {
      if (!line) continue;
      child.lines.push(line);
      console.log("# [" + name + "] " + line.replace(/#key=[0-9a-f]+/, "#key=…"));
      child.waiters = child.waiters.filter((w) => !(w.re.test(line) && (w.resolve(line), true)));
    }
  };
  child.stdout.on("data", feed);
  child.stderr.on("data", feed);
  children.push(child);
  return child;
}
function waitLine(child, re, from = 0) {
  const old = child.lines.slice(from).find((l) => re.test(l));
  if (old) return Promise.resolve(old);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no line matching " + re)), WAIT);
    child.waiters.push({ re, resolve: (l) => { clearTimeout(timer); resolve(l); } });
  });
}

function startService(name, delayMs) {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      setTimeout(() => { res.writeHead(200, { "Content-Type": "text/plain" }); res.end(name + " " + req.url); },
        req.url === "/slow" ? delayMs : 0);
    });
    server.listen(0, "127.0.0.1", () => resolve({ server, port: server.address().port }));
  });
}
function get(port, host, urlPath) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: urlPath, headers: { Host: host } }, (res) => {
      let body = ""; res.on("data", (d) => (body += d)); res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("error", reject);
    req.setTimeout(WAIT, () => req.destroy(new Error("timeout")));
    req.end();
  });
}

async function browser(locale) {
  const ctx = await chromium.launchPersistentContext(tmpdir("chromium"), {
    executablePath: CHROMIUM,
    headless: true,
    locale,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  contexts.push(ctx);
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.setDefaultTimeout(WAIT);
  page.on("console", (m) => log("[console] " + m.text()));
  return page;
}
async function shot(page, name) {
  await page.screenshot({ path: path.join(LOG_DIR, name + ".png"), fullPage: true });
}
async function openPage(page, name) {
  await page.focus('nav a[href="#/' + name + '"]');
  await page.keyboard.press("Enter"); // keyboard only
  await page.waitForSelector("#page-" + name + ":not([hidden])");
}
async function loginLink(child) {
  const line = await waitLine(child, /open (http:\/\/127\.0\.0\.1:\d+\/#key=[0-9a-f]+)/);
  return line.match(/open (\S+)/)[1];
}

let failed = false;
try {
  const relayPort = await freePort();

  // --- server: zero-argument start, configuration created in the browser ---
  const sdir = tmpdir("server");
  const server = startGt("server", ["server"], sdir);
  const page = await browser("en-US");
  await page.goto(await loginLink(server));
  await page.waitForSelector("#nav:not([hidden])");
  await openPage(page, "config");
  await page.waitForSelector('input[data-field="options.addr"]');
  await page.fill('input[data-field="options.addr"]', "127.0.0.1:" + relayPort);
  await page.fill('input[data-field="options.admin"]', "root");
  await page.fill('input[data-field="options.password"]', "browser-admin-password");
  await page.click("#config-add");
  const item = page.locator("#config-list .item").last();
  await item.locator("input").first().fill("alice");
  await item.locator('input[data-field$=".secret"]').fill(SECRET);
  await shot(page, "server-config");
  await page.click("#config-save");
  await page.waitForFunction(() => document.getElementById("config-result").textContent === "Saved and applied.");
  await waitLine(server, new RegExp("listening on 127\\.0\\.0\\.1:" + relayPort));
  if (!fs.readFileSync(path.join(sdir, "server.yaml"), "utf8").includes("pbkdf2-sha256$"))
    throw new Error("the password is not stored hashed");
  await openPage(page, "overview");
  await page.waitForFunction((p) => document.getElementById("overview").textContent.includes("127.0.0.1:" + p), relayPort);
  await shot(page, "server-overview");
  for (const name of ["users", "connections", "traffic", "logs", "account"]) {
    await openPage(page, name);
    await page.waitForTimeout(500);
    await shot(page, "server-" + name);
  }
  const logs = await page.textContent("#logs");
  if (logs.includes(SECRET) || logs.includes("#key=")) throw new Error("a secret is in the log page");
  log("ok server set up from the browser");

  // --- client: add a service, watch its request in the live table (Simplified Chinese UI) ---
  const svc1 = await startService("svc1", 0);
  const svc2 = await startService("svc2", 4000);
  const cdir = tmpdir("client");
  const client = startGt("client", ["client"], cdir);
  const cpage = await browser("zh-CN");
  await cpage.goto(await loginLink(client));
  await cpage.waitForSelector("#nav:not([hidden])");
  const navText = await cpage.textContent("#nav");
  if (!navText.includes("配置") || !navText.includes("连接")) throw new Error("the UI is not in Chinese: " + navText);
  await openPage(cpage, "config");
  await cpage.waitForSelector('input[data-field="options.id"]');
  await cpage.fill('input[data-field="options.id"]', "alice");
  await cpage.fill('input[data-field="options.secret"]', SECRET);
  await cpage.fill('input[data-field="options.remote"]', "tcp://127.0.0.1:" + relayPort);
  await cpage.click("#config-add");
  const sitem = cpage.locator("#config-list .item").last();
  await sitem.locator('input[data-field$=".local"]').fill("http://127.0.0.1:" + svc1.port);
  await sitem.locator('input[data-field$=".hostPrefix"]').fill("first");
  await shot(cpage, "client-config");
  await cpage.click("#config-save");
  await cpage.waitForFunction(() => document.getElementById("config-result").textContent === "已保存并应用。");
  await waitLine(client, /tunnel started/);
  let r = await get(relayPort, "first.example.com", "/hello");
  if (r.status !== 200 || r.body !== "svc1 /hello") throw new Error("first service: " + r.status + " " + r.body);

  await openPage(cpage, "services");
  const before = client.lines.length;
  await cpage.fill('#service-form input[name="local"]', "http://127.0.0.1:" + svc2.port);
  await cpage.fill('#service-form input[name="hostPrefix"]', "second");
  await cpage.press('#service-form input[name="hostPrefix"]', "Enter");
  await cpage.waitForFunction(() => document.getElementById("services-result").textContent === "已保存并应用。");
  await waitLine(client, /tunnel started/, before);
  await cpage.waitForFunction((p) => document.getElementById("services-body").textContent.includes(":" + p), svc2.port);
  await shot(cpage, "client-services");

  await openPage(cpage, "connections");
  // The new service answers /slow after 4 s: its stream shows in the live table meanwhile.
  let slow = null;
  for (let i = 0; i < 20 && !slow; i++) {
    const probe = await get(relayPort, "second.example.com", "/fast");
    if (probe.status === 200) slow = get(relayPort, "second.example.com", "/slow");
    else await new Promise((res) => setTimeout(res, 250));
  }
  if (!slow) throw new Error("the second service never answered");
  await cpage.waitForFunction((p) => document.getElementById("streams-body").textContent.includes("127.0.0.1:" + p), svc2.port);
  await shot(cpage, "client-connections");
  r = await slow;
  if (r.status !== 200 || r.body !== "svc2 /slow") throw new Error("second service: " + r.status + " " + r.body);
  for (const name of ["overview", "traffic", "logs"]) {
    await openPage(cpage, name);
    await cpage.waitForTimeout(500);
    await shot(cpage, "client-" + name);
  }
  log("ok client service added and its request seen live");
  svc1.server.close(); svc2.server.close();
} catch (e) {
  failed = true;
  console.log("not ok " + (e && e.stack ? e.stack : e));
} finally {
  for (const ctx of contexts) await ctx.close().catch(() => {});
  for (const c of children.reverse()) c.kill("SIGTERM");
  await new Promise((res) => setTimeout(res, 500));
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  log("screenshots in " + LOG_DIR);
}
process.exit(failed ? 1 : 0);
