// The vbs dashboard: a static page over the service's own APIs (Cinder v3 and v2, the
// VBS policy API, /metrics for admins), signed in with the caller's token. Every value
// from the server goes into the page as text, never as markup.
"use strict";

const $ = (selector) => document.querySelector(selector);
const REFRESH_MS = 1500;
// While a backup or restore runs, its progress is read this often.
const BUSY_REFRESH_MS = 500;
let busy = false;
let session = null; // {token, project}
let timer = null;

class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The message of an error answer in any of the service's envelopes: Keystone-style
// `{"error": {...}}`, Cinder faults `{"badRequest": {"message": ...}}`, VBS
// `{"error_code": ..., "error_msg": ...}`.
function faultMessage(data, status) {
  if (data && typeof data === "object") {
    if (data.error && data.error.message) return data.error.message;
    if (data.error_msg) return `${data.error_msg} (${data.error_code})`;
    for (const v of Object.values(data)) {
      if (v && typeof v === "object" && v.message) return v.message;
    }
  }
  return `The service answered HTTP ${status}.`;
}

async function call(method, path, body) {
  const headers = { "X-Auth-Token": session.token, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!resp.ok) throw new ApiFailure(resp.status, faultMessage(data, resp.status));
  return data === null ? text : data;
}

function showError(message) {
  const e = $("#error");
  e.textContent = message;
  e.hidden = !message;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    if (c instanceof Node) {
      const td = document.createElement("td");
      td.appendChild(c);
      tr.appendChild(td);
    } else {
      tr.appendChild(el("td", c));
    }
  }
  return tr;
}

function fill(table, rows, empty) {
  const body = $(table).tBodies[0];
  body.replaceChildren(...rows);
  if (!rows.length) {
    const tr = row([empty]);
    tr.firstChild.colSpan = $(table).tHead.rows[0].cells.length;
    tr.className = "empty";
    body.appendChild(tr);
  }
}

function bytes(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

const when = (t) => (t ? t.replace("T", " ").replace(/\.\d+$/, "") : "–");

function statusCell(status) {
  return el("span", status, `status-${status}`);
}

function button(label, cls, id, action) {
  const b = el("button", label, cls);
  b.dataset.id = id;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await action();
      showError("");
      await refresh();
    } catch (e) {
      showError(e.message);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

// The engine's figures a finished backup recorded (v2 views show service_metadata).
function stats(b) {
  try {
    const m = JSON.parse(b.service_metadata || "null");
    return m && typeof m === "object" ? m : {};
  } catch (_) {
    return {};
  }
}

async function progressOf(b) {
  if (b.status !== "creating" && b.status !== "restoring") return null;
  try {
    const shown = await call("GET", `/v3/${session.project}/backups/${b.id}`);
    return shown.backup["os-vbs:progress"] || null;
  } catch (_) {
    return null;
  }
}

function progressCell(id, p) {
  const wrap = el("span", null, "progress");
  wrap.dataset.id = id;
  if (!p || !p.bytes_total) {
    wrap.textContent = "–";
    return wrap;
  }
  const bar = el("progress");
  bar.max = p.bytes_total;
  bar.value = p.bytes_done;
  const pct = Math.floor((100 * p.bytes_done) / p.bytes_total);
  wrap.append(bar, el("span", ` ${pct}%`, "pct"));
  wrap.dataset.percent = String(pct);
  return wrap;
}

async function renderBackups(volumes, backups) {
  const names = new Map(volumes.map((v) => [v.id, v.name || v.id]));
  const sorted = [...backups].sort(
    (a, b) => a.volume_id.localeCompare(b.volume_id) || a.created_at.localeCompare(b.created_at),
  );
  const progress = await Promise.all(sorted.map(progressOf));
  busy = sorted.some((b) => b.status === "creating" || b.status === "restoring");
  let stored = 0;
  let read = 0;
  const rows = sorted.map((b, i) => {
    const s = stats(b);
    if (s.bytes_stored !== undefined && s.bytes_read) {
      stored += s.bytes_stored;
      read += s.bytes_read;
    }
    const saved = s.bytes_read ? `${Math.max(0, 100 - (100 * s.bytes_stored) / s.bytes_read).toFixed(0)}%` : "–";
    const restore = b.status === "available"
      ? button("Restore", "restore", b.id, () =>
        call("POST", `/v3/${session.project}/backups/${b.id}/restore`, { restore: {} }))
      : el("span");
    const tr = row([
      b.is_incremental ? "I" : "F",
      b.name || "",
      names.get(b.volume_id) || b.volume_id,
      `${b.size} GiB`,
      bytes(s.bytes_stored),
      saved,
      statusCell(b.status),
      progressCell(b.id, progress[i]),
      when(b.created_at),
      restore,
    ]);
    tr.dataset.id = b.id;
    tr.dataset.status = b.status;
    if (!b.is_incremental) tr.classList.add("chain-start");
    if (b.fail_reason) tr.title = b.fail_reason;
    return tr;
  });
  fill("#backups", rows, "No backups yet.");
  return { stored, read };
}

function renderVolumes(volumes, backups) {
  const backedUp = new Set(backups.filter((b) => b.status === "available").map((b) => b.volume_id));
  const rows = [...volumes]
    .sort((a, b) => (a.name || "").localeCompare(b.name || "") || a.id.localeCompare(b.id))
    .map((v) => {
      const action = v.status === "available" || v.status === "in-use"
        ? button("Back up", "backup", v.id, () =>
          call("POST", `/v3/${session.project}/backups`, {
            backup: {
              volume_id: v.id,
              name: `dashboard-${new Date().toISOString().slice(0, 19)}`,
              incremental: backedUp.has(v.id),
              force: v.status === "in-use",
            },
          }))
        : el("span");
      const tr = row([v.name || "", el("span", v.id), `${v.size} GiB`, statusCell(v.status), action]);
      tr.cells[1].className = "mono";
      tr.dataset.id = v.id;
      return tr;
    });
  fill("#volumes", rows, "No volumes.");
}

async function renderPolicies() {
  let policies;
  try {
    policies = (await call("GET", `/v2/${session.project}/backuppolicy`)).backup_policies || [];
  } catch (e) {
    fill("#policies", [], `Policies unavailable: ${e.message}`);
    return;
  }
  const rows = policies.map((p) => {
    const sp = p.scheduled_policy || {};
    const keep = [];
    if (sp.rentention_num) keep.push(`${sp.rentention_num} backups`);
    if (sp.rentention_day) keep.push(`${sp.rentention_day} days`);
    const tr = row([
      p.backup_policy_name,
      statusCell(sp.status),
      sp.start_time,
      keep.join(", ") || "–",
      p.policy_resource_count,
      when(p["os-vbs:next_run"]),
    ]);
    tr.dataset.id = p.backup_policy_id;
    return tr;
  });
  fill("#policies", rows, "No policies.");
}

// Admins read the service's own /metrics; anyone else is refused and sees no section.
async function renderAdmin() {
  let text;
  try {
    text = await call("GET", "/metrics");
  } catch (_) {
    $("#admin").hidden = true;
    return;
  }
  $("#admin").hidden = false;
  const sample = (series) => {
    const line = text.split("\n").find((l) => l.startsWith(`${series} `));
    return line ? Number(line.slice(series.length + 1)) : undefined;
  };
  const dl = $("#repository");
  dl.replaceChildren();
  for (const [label, value] of [
    ["Packs", `${sample('vbs_repository_objects{kind="packs"}') ?? "–"} (${bytes(sample('vbs_repository_bytes{kind="packs"}'))})`],
    ["Manifests", `${sample('vbs_repository_objects{kind="manifests"}') ?? "–"} (${bytes(sample('vbs_repository_bytes{kind="manifests"}'))})`],
    ["Jobs queued", sample('vbs_job_queue{state="queued"}') ?? "–"],
    ["Jobs running", sample('vbs_job_queue{state="running"}') ?? "–"],
  ]) {
    dl.append(el("dt", label), el("dd", value));
  }
  const nodes = [];
  for (const l of text.split("\n")) {
    const m = /^vbs_node_up\{node="([^"]*)",roles="([^"]*)"\} 1$/.exec(l)
      || /^vbs_node_up\{roles="([^"]*)",node="([^"]*)"\} 1$/.exec(l);
    if (m) nodes.push(row(l.includes("{node=") ? [m[1], m[2]] : [m[2], m[1]]));
  }
  fill("#nodes", nodes, "No live nodes.");
}

async function refresh() {
  if (!session) return;
  const [volumes, backups] = await Promise.all([
    call("GET", `/v3/${session.project}/volumes/detail`).then((r) => r.volumes || []),
    call("GET", `/v2/${session.project}/backups/detail`).then((r) => r.backups || []),
  ]);
  renderVolumes(volumes, backups);
  const totals = await renderBackups(volumes, backups);
  await Promise.all([renderPolicies(), renderAdmin()]);
  const dl = $("#summary");
  dl.replaceChildren();
  for (const [label, value] of [
    ["Volumes", volumes.length],
    ["Backups", backups.length],
    ["Stored by backups", bytes(totals.stored)],
    ["Read from volumes", bytes(totals.read)],
    ["Saved by dedup and compression", totals.read ? `${Math.max(0, 100 - (100 * totals.stored) / totals.read).toFixed(0)}%` : "–"],
  ]) {
    dl.append(el("dt", label), el("dd", value));
  }
  $("#updated").textContent = new Date().toISOString().replace("T", " ").slice(0, 19);
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(async () => {
    try {
      await refresh();
      showError("");
    } catch (e) {
      showError(e.message);
      if (e.status === 401) {
        signOut(e.message);
        return;
      }
    }
    schedule();
  }, busy ? BUSY_REFRESH_MS : REFRESH_MS);
}

function signOut(message) {
  clearTimeout(timer);
  session = null;
  sessionStorage.removeItem("vbs-session");
  $("#app").hidden = true;
  $("#signin").hidden = false;
  $("#signout").hidden = true;
  $("#who").textContent = "";
  showError(message || "");
}

async function signIn(token, project) {
  session = { token, project };
  try {
    await refresh();
  } catch (e) {
    signOut(e.message);
    return;
  }
  sessionStorage.setItem("vbs-session", JSON.stringify(session));
  showError("");
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#signout").hidden = false;
  $("#who").textContent = `project ${project}`;
  schedule();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#signin").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("#token").value.trim();
    let project = $("#project").value.trim();
    if (!project && token.includes(":")) project = token.split(":")[1];
    if (!project) {
      showError("Give the project id: a Keystone token does not show it.");
      return;
    }
    signIn(token, project);
  });
  $("#signout").addEventListener("click", () => signOut(""));
  const saved = sessionStorage.getItem("vbs-session");
  if (saved) {
    try {
      const s = JSON.parse(saved);
      signIn(s.token, s.project);
    } catch (_) {
      sessionStorage.removeItem("vbs-session");
    }
  }
});
