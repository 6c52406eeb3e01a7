// tcf web console. Reads GET /tcf/api/v1/overview and /tcf/api/v1/lag of
// the worker that serves it (tcf_api::operator::{Overview, LagHistory}) with
// the token typed in, every REFRESH_MS; switches over (dry run first) and
// fails over through the worker's own routes. Text from the server is only
// ever put into the page as text (textContent), never as markup.
"use strict";

const REFRESH_MS = 2000;
const TOKEN_KEY = "tcf-console-token";

const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let last = null;
let busy = false;

// Builds an element: el("td", {class: "num"}, "text", child, ...).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

function badge(text, kind) {
  return el("span", { class: "badge " + (kind || text) }, text);
}

function fmtTime(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

function fmtVclock(v) {
  if (!v) return "";
  const parts = Object.entries(v).map(([id, lsn]) => id + ":" + lsn);
  return "{" + parts.join(", ") + "}";
}

function showBanner(text) {
  const b = $("banner");
  b.textContent = text;
  b.hidden = !text;
}

// Calls the worker; resolves to {status, body} (body parsed when JSON).
async function api(method, path, body) {
  const headers = {};
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await r.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch (_) {
    // not JSON: keep the text
  }
  return { status: r.status, body: parsed };
}

function errorText(r) {
  const why = r.body && typeof r.body === "object" ? r.body.error : r.body;
  if (r.status === 401) return "token refused (401): " + (why || "missing or unknown token");
  if (r.status === 403) return "token refused (403): " + (why || "its role is too low");
  return "HTTP " + r.status + ": " + (why || "");
}

async function refresh() {
  if (!token) {
    document.body.dataset.auth = "none";
    return;
  }
  let ov, lag;
  try {
    [ov, lag] = await Promise.all([api("GET", "/tcf/api/v1/overview"), api("GET", "/tcf/api/v1/lag")]);
  } catch (e) {
    showBanner("the worker does not answer: " + e);
    return;
  }
  if (ov.status !== 200) {
    const refused = ov.status === 401 || ov.status === 403;
    document.body.dataset.auth = refused ? "refused" : "error";
    showBanner(errorText(ov));
    if (refused) fill($("clusters"), el("p", { class: "muted" }, "This token may not read the federation."));
    return;
  }
  document.body.dataset.auth = "ok";
  showBanner("");
  last = ov.body;
  render(ov.body);
  if (lag.status === 200) renderLag(lag.body);
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function infoOf(ov, cluster) {
  if (ov.worker.cluster === cluster) return ov.worker;
  if (ov.peer && ov.peer.cluster === cluster) return ov.peer;
  return null;
}

function render(ov) {
  const w = ov.worker;
  $("federation").textContent = w.federation;
  const clusters = w.clusters || {};
  $("term").textContent =
    "term " + (w.term ?? "?") + " · coordinator " + (w.leader || "none") + (w.stale ? " · state stale" : "");
  const names = Object.keys(clusters).length ? Object.keys(clusters) : [w.cluster, w.peer];
  fill(
    $("clusters"),
    names.map((name) => clusterCard(ov, name, clusters[name] || "unknown")),
  );
  renderSwitch(w);
  renderReplicasets(w);
  renderAlarms(ov);
  renderHistory(w.history || []);
}

function clusterCard(ov, name, status) {
  const info = infoOf(ov, name);
  const lb = ov.lb.filter((a) => a.cluster === name);
  const rows = [];
  const item = (k, v) => rows.push(el("dt", {}, k), el("dd", {}, v));
  item(
    "load balancers",
    lb.length
      ? lb.map((a) =>
          el("div", {}, badge(a.code === null ? "no answer" : a.code + " " + a.answer, a.code === 200 ? "ok" : a.code === 418 ? "passive" : "bad"), " ", el("code", {}, a.worker)),
        )
      : "unknown",
  );
  if (info) {
    item("worker", info.worker);
    item("fence", info.fence ? (info.fence.fenced ? "fenced" : "open") + " at term " + info.fence.term : "not applied yet");
    item("state", info.confirmed ? (info.stale ? "confirmed by a peer (etcd stale)" : "confirmed") : "NOT confirmed");
    item("unmarked writes", info.unmarked_commits.alarm ? badge("ALARM: " + info.unmarked_commits.count, "bad") : "none");
  } else if (ov.peer && ov.peer.error) {
    item("worker", el("span", { class: "badge bad" }, "peer does not answer"));
    item("why", ov.peer.error);
  }
  return el(
    "div",
    { class: "card", id: "cluster-" + name, "data-cluster": name, "data-status": status },
    el("h3", {}, "cluster " + name, badge(status, status)),
    el("dl", {}, rows),
  );
}

function renderSwitch(w) {
  const s = w.switch;
  if (!s) {
    fill($("switch"), "no switch yet");
    return;
  }
  const parts = [
    el("strong", {}, s.kind + " " + s.from + " → " + s.to),
    " ",
    badge(s.phase, s.phase === "done" ? "ok" : s.phase === "rolled_back" ? "bad" : "warn"),
    " term " + s.term + " · started " + fmtTime(s.started_ms) + " · requested by " + s.requested_by,
  ];
  if (s.error) parts.push(el("div", { class: "err" }, "error: " + s.error));
  if (w.switch_error && !["done", "rolled_back"].includes(s.phase)) parts.push(el("div", {}, "waiting: " + w.switch_error));
  const node = $("switch");
  node.dataset.phase = s.phase;
  fill(node, parts);
}

function renderReplicasets(w) {
  const body = $("replicasets").tBodies[0];
  const r = w.replicators;
  if (!r) {
    fill(body, el("tr", {}, el("td", { colspan: 8, class: "muted" }, "this worker drives no replicators")));
    return;
  }
  const rows = [];
  const pairs = [];
  for (const [list, from, to] of [
    [r.outgoing, w.cluster, w.peer],
    [r.incoming, w.peer, w.cluster],
  ]) {
    list.forEach((pair, i) => pairs.push([pair, from + " → " + to + (list.length > 1 ? " #" + i : "")]));
  }
  for (const [pair, label] of pairs) {
    const gw = pair.gateway && pair.gateway.replicasets ? pair.gateway : null;
    const d = pair.destination && pair.destination.replicasets ? pair.destination : null;
    if (!d) {
      const why = (pair.destination && pair.destination.error) || "no status";
      rows.push(el("tr", { "data-pair": label }, el("td", {}, label), el("td", { colspan: 6 }, "destination: —"), el("td", { class: "err" }, why)));
      continue;
    }
    for (const [rs, s] of Object.entries(d.replicasets)) {
      const state = d.running ? s.state : "stopped";
      const g = gw && gw.replicasets[rs];
      const gstate = gw ? (gw.running ? (g ? g.state : "—") : "stopped") : "no answer";
      rows.push(
        el(
          "tr",
          { "data-pair": label, "data-replicaset": rs },
          el("td", {}, label),
          el("td", {}, rs),
          el("td", {}, badge(gstate, gstate)),
          el("td", {}, badge(state, state)),
          el("td", {}, el("code", {}, fmtVclock(s.applied_vclock))),
          el("td", { class: "num" }, Number(s.lag_seconds).toFixed(3)),
          el("td", { class: "num" }, s.lag_lsn),
          el("td", { class: "err" }, s.last_error || ""),
        ),
      );
    }
  }
  fill(body, rows);
}

function alarmsOf(info, where) {
  const out = [];
  if (!info) return out;
  if (info.unmarked_commits.alarm) out.push(where + ": unmarked-write alarm: " + info.unmarked_commits.count + " write(s) not made by tcf on a passive cluster");
  if (!info.confirmed) out.push(where + ": state not confirmed (is_active answers 503)");
  else if (info.stale) out.push(where + ": etcd not read within fencing_timeout (state confirmed by a peer)");
  if (info.etcd_error) out.push(where + ": etcd: " + info.etcd_error);
  if (info.fence_error) out.push(where + ": fence: " + info.fence_error);
  if (info.replicator_error) out.push(where + ": replicators: " + info.replicator_error);
  const v = info.coordinator && info.coordinator.leading ? info.coordinator.verdict : null;
  if (v && v.problem) out.push(where + ": coordinator: " + v.problem);
  if (v && v.failover_blocked) out.push(where + ": automatic failover blocked: " + v.failover_blocked);
  return out;
}

function renderAlarms(ov) {
  const items = alarmsOf(ov.worker, "worker " + ov.worker.worker);
  if (ov.peer && ov.peer.error) items.push("peer worker: " + ov.peer.error);
  else if (ov.peer) items.push(...alarmsOf(ov.peer, "worker " + ov.peer.worker));
  const active = ov.lb.filter((a) => a.code === 200).map((a) => a.cluster);
  if (new Set(active).size !== 1) {
    items.push("load balancers: " + (active.length ? "more than one cluster answers 200 (" + active.join(", ") + ")" : "no worker answers 200: no cluster receives traffic"));
  }
  for (const a of ov.lb.filter((a) => a.code === null || a.code === 503)) {
    items.push("load balancer probe of " + a.worker + ": " + (a.code === null ? "no answer: " : "503: ") + a.answer);
  }
  const list = $("alarms");
  list.dataset.count = String(items.length);
  fill(list, items.length ? items.map((t) => el("li", { class: "bad" }, t)) : [el("li", { class: "muted" }, "none")]);
}

function renderHistory(history) {
  const body = $("history").tBodies[0];
  if (!history.length) {
    fill(body, el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no switch yet")));
    return;
  }
  fill(
    body,
    history.map((h) =>
      el(
        "tr",
        {},
        el("td", {}, fmtTime(h.at_ms)),
        el("td", {}, h.kind),
        el("td", {}, badge(h.outcome, h.outcome === "done" ? "ok" : "bad")),
        el("td", {}, h.from + " → " + h.to),
        el("td", { class: "num" }, h.term),
        el("td", {}, h.by),
      ),
    ),
  );
}

function renderLag(h) {
  const g = $("lag-graph");
  const W = 800, H = 220, L = 48, B = 20, T = 10;
  const now = Date.now();
  const x0 = now - h.window_ms;
  $("lag-window").textContent = Math.round(h.window_ms / 60000) + " minutes";
  let max = 1;
  for (const s of h.series) for (const p of s.points) max = Math.max(max, p.seconds);
  max = Math.ceil(max * 1.1);
  const x = (t) => L + ((t - x0) / h.window_ms) * (W - L - 4);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const nodes = [
    svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    svg("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B }),
    svg("text", { x: 4, y: T + 10 }, max + " s"),
    svg("text", { x: 4, y: H - B }, "0 s"),
    svg("text", { x: L, y: H - 4 }, "-" + Math.round(h.window_ms / 60000) + " min"),
    svg("text", { x: W - 30, y: H - 4 }, "now"),
  ];
  const legend = [];
  h.series.forEach((s, i) => {
    const cls = "c" + (i % 6);
    const pts = s.points.filter((p) => p.at_ms >= x0).map((p) => x(p.at_ms).toFixed(1) + "," + y(p.seconds).toFixed(1));
    nodes.push(svg("polyline", { class: cls, points: pts.join(" "), "data-series": s.from + "->" + s.to + "/" + s.replicaset }));
    const lastP = s.points[s.points.length - 1];
    legend.push(
      el("span", {}, el("span", { class: "swatch " + cls }), s.from + " → " + s.to + " " + s.replicaset + (lastP ? ": " + lastP.seconds.toFixed(2) + " s, " + lastP.rows + " rows" : "")),
    );
  });
  if (!h.series.length) legend.push(el("span", { class: "muted" }, "no pair is meant to run, or no sample yet"));
  g.replaceChildren(...nodes);
  fill($("lag-legend"), legend);
}

function setResult(text, ok) {
  const r = $("action-result");
  r.textContent = text;
  r.className = ok ? "ok" : "bad";
}

function openDialog(title, body, confirmText, onConfirm) {
  const d = $("dialog");
  $("dialog-title").textContent = title;
  fill($("dialog-body"), body);
  const c = $("dialog-confirm");
  c.textContent = confirmText || "Confirm";
  c.disabled = !onConfirm;
  c.onclick = async () => {
    d.close();
    if (onConfirm) await onConfirm();
  };
  $("dialog-cancel").onclick = () => d.close();
  d.showModal();
}

function checksList(p) {
  if (!p) return null;
  return el(
    "ul",
    { class: "checks" },
    p.checks.map((c) => el("li", { class: c.ok ? "ok" : "bad", "data-check": c.name }, el("strong", {}, c.name), ": " + c.detail)),
  );
}

async function runAction(label, fn) {
  if (!token) {
    setResult("enter a token first", false);
    return;
  }
  if (busy) return;
  busy = true;
  for (const b of [$("switchover-btn"), $("failover-btn")]) b.disabled = true;
  try {
    await fn();
  } catch (e) {
    setResult(label + ": the worker does not answer: " + e, false);
  } finally {
    busy = false;
    for (const b of [$("switchover-btn"), $("failover-btn")]) b.disabled = false;
    refresh();
  }
}

async function switchover() {
  setResult("dry run…", true);
  const dry = await api("POST", "/tcf/switchover", { dry_run: true });
  if (dry.status === 401 || dry.status === 403 || typeof dry.body !== "object") {
    setResult("switchover refused: " + errorText(dry), false);
    return;
  }
  const a = dry.body;
  const title = "Switchover " + (a.from || "?") + " → " + (a.to || "?") + " (dry run: " + a.result + ")";
  const body = [checksList(a.prechecks)];
  if (a.result === "ready") {
    body.push(el("p", {}, "It would:"), el("ol", {}, (a.plan || []).map((s) => el("li", {}, s))));
    setResult("dry run passed: confirm to switch over", true);
    openDialog(title, body, "Switch over now", async () => {
      setResult("switching over " + a.from + " → " + a.to + "…", true);
      const r = await api("POST", "/tcf/switchover", {});
      const b = r.body && typeof r.body === "object" ? r.body : {};
      if (r.status === 200 && b.result === "done") {
        setResult("switchover done: " + b.from + " → " + b.to + ", term " + b.term + ", " + b.duration_ms + " ms", true);
      } else {
        setResult("switchover " + (b.result || "failed") + ": " + (b.error || errorText(r)), false);
      }
    });
  } else {
    body.push(el("p", { class: "err" }, "refused: " + (a.error || "")));
    setResult("switchover refused by its prechecks: " + (a.error || ""), false);
    openDialog(title, body, "Switch over now", null);
  }
}

async function failover() {
  const from = last ? Object.entries(last.worker.clusters || {}).find(([, s]) => s === "active") : null;
  const name = from ? from[0] : "the active cluster";
  const body = [
    el("p", {}, "Fail " + name + " over to its peer now, without waiting for it. Whatever it committed that the peer has not applied stays on it only (the loss point is recorded); it comes back diverged."),
    el("p", {}, "Use a switchover when the active cluster is alive."),
  ];
  openDialog("Failover of " + name, body, "Fail over now", async () => {
    setResult("failing over…", true);
    const r = await api("POST", "/tcf/failover");
    const b = r.body && typeof r.body === "object" ? r.body : {};
    if (r.status === 200 && b.failover) {
      setResult("failover done: " + b.failover.from + " → " + b.failover.to + ", term " + b.failover.term, true);
    } else {
      setResult("failover refused: " + errorText(r), false);
    }
  });
}

$("token").value = token;
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  setResult("", true);
  refresh();
});
$("switchover-btn").addEventListener("click", () => runAction("switchover", switchover));
$("failover-btn").addEventListener("click", () => runAction("failover", failover));
refresh();
setInterval(refresh, REFRESH_MS);
