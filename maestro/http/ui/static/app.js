// Maestro's pages: server-rendered HTML; what changes anything calls the JSON API (the same
// routes, under the same rules) with the session's CSRF token. No framework: a few handlers.
import { attachEditors, showSqlError } from "./sql-editor.js";
import { followRun, followRuns } from "./live.js";

const CSRF_COOKIE = "__Host-maestro_csrf";

export function csrf() {
  for (const part of document.cookie.split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === CSRF_COOKIE) return decodeURIComponent(value.join("="));
  }
  return "";
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const text = resp.status === 204 ? "" : await resp.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = { error: { code: "bad_response", message: text.slice(0, 300) } }; }
  }
  return { ok: resp.ok, status: resp.status, data };
}

export function flash(message, kind = "ok") {
  const box = document.getElementById("flash");
  if (!box) return;
  box.textContent = message;
  box.className = kind;
}

// ------------------------------------------------------------------ forms -> JSON bodies
function value(el) {
  const type = el.dataset.type || "";
  if (el.type === "checkbox") return el.checked;
  const raw = el.value;
  if (type === "int") return raw.trim() === "" ? null : Number(raw);
  if (type === "json") return raw.trim() === "" ? null : JSON.parse(raw);
  if (type === "list") return raw.split(",").map((s) => s.trim()).filter(Boolean);
  if (type === "nullable") return raw === "" ? null : raw;
  if (type === "datetime") return raw === "" ? null : new Date(raw).toISOString();  // local time, sent with its zone
  return raw;
}

function body(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled || el.dataset.ignore !== undefined) continue;
    if (el.dataset.skipEmpty !== undefined && el.value.trim() === "") continue;
    let v;
    try {
      v = value(el);
    } catch (exc) {
      throw { field: el.name, message: `not valid JSON: ${exc.message}` };
    }
    if (el.dataset.spread !== undefined) {
      if (v !== null && (typeof v !== "object" || Array.isArray(v))) throw { field: el.name, message: "must be a JSON object" };
      Object.assign(out, v || {});
    } else {
      out[el.name] = v;
    }
  }
  return out;
}

function clearErrors(form) {
  for (const el of form.querySelectorAll("[data-error-for]")) { el.textContent = ""; el.hidden = true; }
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

function slotFor(form, field) {
  if (field) {
    const top = String(field).split(".")[0];
    for (const name of [field, top]) {
      const slot = form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
      if (slot) return slot;
    }
    const spread = form.querySelector("[data-spread]");
    if (spread) return form.querySelector(`[data-error-for="${CSS.escape(spread.name)}"]`);
  }
  return form.querySelector('[data-error-for="_form"]');
}

function mark(form, slot, message) {
  if (!slot) { flash(message, "error"); return; }
  slot.textContent = message;
  slot.hidden = false;
  const field = form.querySelector(`[name="${CSS.escape(slot.dataset.errorFor)}"]`);
  if (field) field.setAttribute("aria-invalid", "true");
}

// The API's error, next to the field it concerns; SQL errors at their line and column.
export function showError(form, error) {
  const details = error.details || {};
  const sql = form.querySelector("textarea[data-sql]");
  if (details.line != null && sql) {
    mark(form, slotFor(form, sql.name), error.message);
    showSqlError(sql, details.line, details.column || 1);
    return;
  }
  const problems = details.problems || [];
  if (problems.length) {
    for (const p of problems) mark(form, slotFor(form, p.field), `${p.field}: ${p.message}`);
  } else {
    const named = /^([a-z_][a-z0-9_.]*): /.exec(error.message || "");
    mark(form, slotFor(form, named ? named[1] : null), error.message || `failed (${error.code})`);
  }
  const first = form.querySelector("[aria-invalid]");
  if (first) first.focus();
}

async function submit(form, event) {
  event.preventDefault();
  clearErrors(form);
  let payload;
  try {
    payload = body(form);
  } catch (problem) {
    mark(form, slotFor(form, problem.field), `${problem.field}: ${problem.message}`);
    return;
  }
  const button = form.querySelector("[type=submit]");
  if (button) button.disabled = true;
  try {
    // getAttribute, not form.dataset: a form's named fields shadow its properties (a field "dataset").
    const { ok, data } = await api(form.getAttribute("data-method") || "POST", form.getAttribute("data-path"), payload);
    if (!ok) { showError(form, (data && data.error) || { code: "error", message: "the request failed" }); return; }
    done(form.getAttribute("data-then"), data, form);
  } catch (exc) {
    mark(form, slotFor(form, null), `could not reach Maestro: ${exc.message}`);
  } finally {
    if (button) button.disabled = false;
  }
}

// What happens after success: reload, go to a page (``goto:/runs/{id}``), or show a message.
function done(then, data, where) {
  if (!then || then === "reload") { location.reload(); return; }
  if (then.startsWith("goto:")) {
    location.assign(then.slice(5).replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(data[k])));
    return;
  }
  if (then === "token") {  // a new API token: shown once
    const out = document.getElementById("new-token");
    out.hidden = false;
    out.querySelector("code").textContent = data.token;
    return;
  }
  if (then === "extracts") {
    const list = document.querySelector("[data-extract-files]");
    list.replaceChildren();
    const files = (data.extract && data.extract.files) || [];
    if (!files.length) list.textContent = "No extract yet.";
    for (const f of files) {
      const li = document.createElement("li"), a = document.createElement("a");
      a.href = f.url;
      a.textContent = f.uri;
      li.appendChild(a);
      list.appendChild(li);
    }
    return;
  }
  if (then === "estimate") {
    const out = where.closest("[data-estimate-root]")?.querySelector("[data-estimate]") || document.querySelector("[data-estimate]");
    out.textContent = data.valid
      ? `Valid. Processes ${formatBytes(data.bytes_processed)}, about $${data.usd.toFixed(4)}.`
      : `Not valid: ${data.error ? data.error.message : "BigQuery refused it"}`;
    out.className = data.valid ? "ok" : "error";
    return;
  }
  flash(then, "ok");
}

export function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

// Buttons that call one API route: data-method, data-path, optional data-body (JSON) and data-confirm.
async function act(button) {
  if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
  button.disabled = true;
  try {
    const payload = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
    const { ok, data } = await api(button.dataset.method || "POST", button.dataset.path, payload);
    if (!ok) {
      const error = (data && data.error) || { message: "the request failed" };
      const slot = button.dataset.errorIn ? document.querySelector(button.dataset.errorIn) : null;
      if (slot) { slot.textContent = error.message; slot.hidden = false; } else flash(error.message, "error");
      return;
    }
    done(button.dataset.then, data || {}, button);
  } finally {
    button.disabled = false;
  }
}

async function logout() {
  await api("POST", "/logout");
  location.assign("/signin");
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.matches("form[data-path]")) submit(form, event);
});
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-path]");
  if (button && !button.form) { event.preventDefault(); act(button); }
  else if (button && button.type !== "submit") { event.preventDefault(); act(button); }
  if (event.target.closest("[data-logout]")) logout();
  const add = event.target.closest("button[data-add-member]");
  if (add) {
    const group = add.form.querySelector("[data-member-select]").value;
    add.dataset.path = `/api/v1/groups/${encodeURIComponent(group)}/members/${encodeURIComponent(add.dataset.addMember)}`;
    add.dataset.then = "reload";
    add.dataset.errorIn = "#user-error";
    act(add);
  }
});
// A select that filters a list page submits its form at once (the GET form works without it).
document.addEventListener("change", (event) => {
  const el = event.target;
  if (el.matches("form.filters select")) el.form.requestSubmit();
});

attachEditors(document);
const run = document.querySelector("[data-run-live]");
if (run) followRun(run);
const runs = document.querySelector("[data-runs-live]");
if (runs) followRuns(runs);
