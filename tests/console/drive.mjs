// Drives tcf's web console in Debian's headless Chromium (no browser is
// downloaded: playwright-core only). Run by tests/tests/console.rs against a
// live federation; exits non-zero with the reason when the page does not do
// what it should. Every step leaves a screenshot in SHOTS_DIR.
//
// Environment: CONSOLE_URL (http://HOST:PORT/tcf/console of A's worker),
// INFO_TOKEN, TOGGLE_TOKEN, SHOTS_DIR, PROFILE_DIR (a fresh, empty
// directory), CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import path from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const url = env("CONSOLE_URL");
const shots = env("SHOTS_DIR");
const WAIT = 60_000;

let step = 0;
async function shot(page, name) {
  step += 1;
  const file = path.join(shots, `${String(step).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
}

async function useToken(page, token) {
  await page.fill("#token", token);
  await page.click("#token-apply");
}

// Waits until the card of `cluster` shows `status`.
async function waitStatus(page, cluster, status) {
  await page.waitForSelector(`#cluster-${cluster}[data-status="${status}"]`, { timeout: WAIT });
}

const context = await chromium.launchPersistentContext(env("PROFILE_DIR"), {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
  viewport: { width: 1280, height: 1100 },
});
const page = context.pages()[0] || (await context.newPage());
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => {
  // Refused calls (401/403/409) are logged by Chromium as failed loads.
  if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
    problems.push(`console error: ${m.text()}`);
  }
});
// Offline: the page may load nothing from anywhere but its worker.
const origin = new URL(url).origin;
page.on("request", (r) => {
  if (!r.url().startsWith(origin)) problems.push(`request outside the worker: ${r.url()}`);
});

try {
  // 1. The state, read with an info token.
  await page.goto(url);
  await useToken(page, env("INFO_TOKEN"));
  await waitStatus(page, "A", "active");
  await waitStatus(page, "B", "passive");
  await page.waitForSelector('#replicasets tr[data-pair="A → B"][data-replicaset="rs1"]', { timeout: WAIT });
  await page.waitForSelector("#lag-graph polyline", { state: "attached", timeout: WAIT });
  const lb = await page.textContent("#cluster-A");
  if (!lb.includes("200 active")) throw new Error(`A's card does not show its LB answer 200: ${lb}`);
  await shot(page, "state-a-active");

  // 2. A wrong token is refused: the data is gone, the banner says why, and
  //    a switchover attempt is refused too.
  await useToken(page, "not-a-token");
  await page.waitForSelector('body[data-auth="refused"]', { timeout: WAIT });
  const banner = await page.textContent("#banner");
  if (!banner.includes("401")) throw new Error(`no 401 in the banner: ${banner}`);
  await page.click("#switchover-btn");
  await page.waitForFunction(
    () => document.querySelector("#action-result").textContent.includes("refused"),
    null,
    { timeout: WAIT },
  );
  await shot(page, "wrong-token-refused");

  // 3. An info token may read but not switch over (403).
  await useToken(page, env("INFO_TOKEN"));
  await waitStatus(page, "A", "active");
  await page.click("#switchover-btn");
  await page.waitForFunction(
    () => document.querySelector("#action-result").textContent.includes("403"),
    null,
    { timeout: WAIT },
  );
  await shot(page, "info-token-cannot-switch");

  // 4. With a toggle token: the dry run's prechecks, then the switchover.
  await useToken(page, env("TOGGLE_TOKEN"));
  await waitStatus(page, "A", "active");
  await page.click("#switchover-btn");
  await page.waitForSelector("dialog#dialog[open] .checks li", { timeout: WAIT });
  const failed = await page.$$eval("dialog#dialog .checks li.bad", (l) => l.map((e) => e.textContent));
  if (failed.length) throw new Error(`the dry run failed: ${failed.join("; ")}`);
  const checks = await page.$$eval("dialog#dialog .checks li", (l) => l.map((e) => e.dataset.check));
  for (const c of ["state", "promotable", "lag", "unmarked_writes", "reverse_pair"]) {
    if (!checks.includes(c)) throw new Error(`the dry run does not show the ${c} check: ${checks}`);
  }
  await shot(page, "dry-run-prechecks");
  await page.click("#dialog-confirm");
  await page.waitForFunction(
    () => document.querySelector("#action-result").textContent.startsWith("switchover done"),
    null,
    { timeout: 120_000 },
  );
  await waitStatus(page, "B", "active");
  await waitStatus(page, "A", "passive");
  await page.waitForSelector('#history tbody tr td:nth-child(2)', { timeout: WAIT });
  const result = await page.textContent("#action-result");
  console.log(`console: ${result}`);
  await shot(page, "switched-b-active");

  if (problems.length) throw new Error(problems.join("\n"));
  console.log("console: OK");
} catch (e) {
  try {
    await shot(page, "failure");
  } catch (_) {
    // the page is gone
  }
  console.error(`console test failed: ${e.stack || e}`);
  if (problems.length) console.error(problems.join("\n"));
  await context.close();
  process.exit(1);
}
await context.close();
