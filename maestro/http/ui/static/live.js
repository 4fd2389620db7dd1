// Live pages over Server-Sent Events: no reload, no polling.
//
// A run's page follows the API's own stream of that run (GET /api/v1/runs/{id}/events); each
// event says something changed, and the run's current state is read back from the API (the runs
// read model is updated in the same transaction as the event, so it is never behind it). Reads
// are coalesced: one in flight, at most one more queued, however fast events come.
// The runs list follows /ui/live/runs, whose events carry each changed run's row.

function coalesced(fetchAndApply) {
  let running = false, again = false;
  return async function trigger() {
    if (running) { again = true; return; }
    running = true;
    try {
      do { again = false; await fetchAndApply(); } while (again);
    } finally {
      running = false;
    }
  };
}

function setState(el, state) {
  for (const c of [...el.classList]) if (c.startsWith("state-")) el.classList.remove(c);
  el.classList.add(`state-${state}`);
  el.dataset.state = state;
}

const FINAL = new Set(["succeeded", "failed", "cancelled", "skipped"]);

// Once a run has ended, its summary, timeline and jobs are read again as the server draws them
// (a fetch of this page, parts swapped in place: no reload).
async function redrawSections() {
  const resp = await fetch(location.href, { headers: { Accept: "text/html" } });
  if (!resp.ok) return;
  const fresh = new DOMParser().parseFromString(await resp.text(), "text/html");
  for (const el of document.querySelectorAll("[data-live-section]")) {
    const next = fresh.querySelector(`[data-live-section="${el.dataset.liveSection}"]`);
    if (next) el.replaceWith(document.importNode(next, true));
  }
}

export function followRun(root) {
  const runId = root.dataset.runLive;
  let redrawn = FINAL.has(root.querySelector("[data-run-status]")?.dataset.state);
  const refresh = coalesced(async () => {
    const resp = await fetch(`/api/v1/runs/${encodeURIComponent(runId)}`, { headers: { Accept: "application/json" } });
    if (!resp.ok) return;
    const run = await resp.json();
    const status = document.querySelector("[data-run-status]");
    if (status) { status.textContent = run.status + (run.cancel_requested && run.status === "running" ? " (cancelling)" : ""); setState(status, run.status); }
    for (const t of run.tables) {
      for (const el of document.querySelectorAll(`[data-table-state="${CSS.escape(t.table_id)}"]`)) {
        setState(el, t.state);
        if (el.tagName !== "g") el.textContent = t.state;
      }
      const err = document.querySelector(`[data-table-error="${CSS.escape(t.table_id)}"]`);
      if (err) err.textContent = t.error || "";
    }
    const counts = document.querySelector("[data-run-counts]");
    if (counts) counts.textContent = Object.entries(run.counts).map(([k, v]) => `${k}: ${v}`).join(", ") || "-";
    for (const b of document.querySelectorAll("[data-when-running]")) b.hidden = run.status !== "running" && run.status !== "queued";
    for (const b of document.querySelectorAll("[data-when-failed]")) b.hidden = run.status !== "failed" && run.status !== "cancelled";
    if (FINAL.has(run.status) && !redrawn) { redrawn = true; await redrawSections(); }
  });
  const source = new EventSource(`/api/v1/runs/${encodeURIComponent(runId)}/events`);
  source.onmessage = refresh;
  for (const type of ["RunPlanned", "RunQueued", "RunCancelRequested", "RunRetryRequested", "RunFinished", "RunSkipped",
    "JobPlanned", "JobSubmitted", "JobSucceeded", "JobFailed", "JobCancelled", "JobSkipped", "ImportProgress"]) {
    source.addEventListener(type, refresh);
  }
  // A finished run's stream answers 204 and the browser stops; a retry restarts it (page reload).
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) refresh(); };
  root.dataset.following = "yes";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

export function followRuns(tbody) {
  const source = new EventSource("/ui/live/runs");
  source.addEventListener("runs", (event) => {
    for (const run of JSON.parse(event.data)) {
      let row = tbody.querySelector(`tr[data-run-id="${CSS.escape(run.id)}"]`);
      if (!row) {
        if (tbody.dataset.insert !== "yes") continue;  // a filtered or later page: new runs are not ours
        row = document.createElement("tr");
        row.dataset.runId = run.id;
        const link = document.createElement("a");
        link.href = `/runs/${encodeURIComponent(run.id)}`;
        link.textContent = run.id;
        const first = cell("");
        first.appendChild(link);
        row.append(first, cell(run.frequency || "-"), cell(run.trigger), cell(run.planned_at), cell("", "status"),
          cell(run.finished_at || "-", "finished"), cell("-", "counts"), cell("-", "cost"));
        tbody.prepend(row);
      }
      const status = row.querySelector(".status");
      status.textContent = run.status;
      setState(status, run.status);
      row.querySelector(".finished").textContent = run.finished_at || "-";
      row.querySelector(".counts").textContent = run.counts || "-";
    }
  });
  tbody.dataset.following = "yes";
}
