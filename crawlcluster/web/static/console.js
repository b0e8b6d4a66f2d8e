// The crawl console's one script: the dashboard's figures refresh from /api/dashboard every
// few seconds without reloading the page, and a part marked data-live (the workers page's
// tables) is swapped for its URL's fresh HTML; the forms work without it.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const part = document.querySelector("[data-live]");
  if (!part) return;
  async function refresh() {
    const note = document.getElementById("refreshed");
    try {
      const answer = await fetch(part.dataset.live, { credentials: "same-origin" });
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      part.innerHTML = await answer.text();  // the console's own escaped template
      if (note) note.textContent = "updated " + new Date().toLocaleTimeString();
      document.body.dataset.refreshed = String(Date.now());
    } catch (err) {
      if (note) note.textContent = "not updated: " + err.message;
    }
    setTimeout(refresh, REFRESH_MS);
  }
  setTimeout(refresh, REFRESH_MS);
})();

(function () {
  const REFRESH_MS = 2000;
  const table = document.getElementById("projects");
  if (!table) return;

  function fmt(n) { return Number(n || 0).toLocaleString("en-US"); }

  function setText(root, field, text) {
    const el = root.querySelector('[data-field="' + field + '"]');
    if (el && el.textContent !== text) el.textContent = text;
    return el;
  }

  function updateBar(row, bar) {
    const el = row.querySelector('.bar[data-window="' + bar.window + '"]');
    if (!el) return;
    const segs = el.querySelectorAll(".seg");
    bar.parts.forEach(function (part, i) { if (segs[i]) segs[i].style.width = part.percent + "%"; });
    el.title = bar.label + ": " + bar.parts.map(function (p) { return p.name + " " + p.count; }).join(", ");
    const label = el.querySelector(".bar-label");
    if (label) label.textContent = bar.label + " · " + fmt(bar.total);
  }

  function updateProject(p) {
    const row = table.querySelector('tr[data-project="' + CSS.escape(p.name) + '"]');
    if (!row) return false;
    const status = setText(row, "status", p.status);
    if (status) status.className = "status status-" + p.status;
    setText(row, "pending", fmt(p.pages.pending + p.pages.queued));
    setText(row, "done", fmt(p.pages.done));
    setText(row, "failed", fmt(p.pages.failed));
    setText(row, "items", fmt(p.items));
    setText(row, "pages_per_second", p.pages_per_second.toFixed(1));
    setText(row, "eta", p.eta);
    setText(row, "bytes", p.bytes_text);
    setText(row, "waiting", p.waiting.join("; "));
    p.bars.forEach(function (bar) { updateBar(row, bar); });
    return true;
  }

  function updatePipeline(stages, scheduler) {
    stages.forEach(function (s) {
      const el = document.querySelector('.stage[data-queue="' + s.queue + '"]');
      if (!el) return;
      setText(el, "waiting", s.waiting === null ? "-" : fmt(s.waiting));
      const c = el.querySelector('[data-field="consumers"]');
      if (c) {
        c.textContent = s.consumers === null ? "consumers unknown"
          : s.consumers.length + (s.consumers.length === 1 ? " consumer" : " consumers");
        c.title = (s.consumers || []).join(", ");
        c.classList.toggle("warn", s.consumers !== null && s.consumers.length === 0);
      }
    });
    const box = document.getElementById("scheduler");
    if (box) {
      box.classList.toggle("ok", scheduler.alive);
      box.classList.toggle("bad", !scheduler.alive);
      setText(box, "scheduler-state", scheduler.alive ? "alive" : (scheduler.message || "not running"));
      let holder = scheduler.holder || "no lease holder";
      if (scheduler.seconds_since_seen !== null) holder += " · last tick " + Math.round(scheduler.seconds_since_seen) + " s ago";
      setText(box, "scheduler-holder", holder);
    }
  }

  let timer = null;
  async function refresh() {
    const note = document.getElementById("refreshed");
    try {
      const answer = await fetch("/api/dashboard", { headers: { "Accept": "application/json" }, credentials: "same-origin" });
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const data = await answer.json();
      const known = data.projects.every(updateProject);
      updatePipeline(data.pipeline, data.scheduler);
      if (!known || table.querySelectorAll("tr[data-project]").length !== data.projects.length) {
        window.location.reload();  // a project came or went: draw the table afresh
        return;
      }
      if (note) note.textContent = "updated " + new Date().toLocaleTimeString();
      document.body.dataset.refreshed = String(Date.now());
    } catch (err) {
      if (note) note.textContent = "not updated: " + err.message;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }
  timer = setTimeout(refresh, REFRESH_MS);
})();
