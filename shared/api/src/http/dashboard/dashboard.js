// Stowage's storage dashboard. Every few seconds it reads /api/storageinfo (repositories,
// binaries, shards, queue) and /api/v1/metrics (this node's counters), shows the figures, and
// keeps an hour of samples in the page for the charts: rates are the counters' differences
// between two samples. The server keeps no history for it. Text from the server is set as
// text, never parsed as HTML.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const everySecs = Math.max(1, Number(params.get("every")) || 5);
  const keep = Math.ceil(3600 / everySecs);
  // The page is /ui/storage, under the context path or not: the API is two levels up.
  const api = (path) => new URL("../" + path, location.href).toString();

  const $ = (id) => document.getElementById(id);
  const text = (id, value) => { $(id).textContent = value; };

  // Sizes in SI units, as /api/storageinfo prints them ("12.8 kB").
  function human(bytes) {
    if (bytes == null) return "–";
    const units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let v = Number(bytes), u = 0;
    while (v >= 1000 && u < units.length - 1) { v /= 1000; u += 1; }
    return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
  }

  async function get(path, as) {
    const r = await fetch(api(path), { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) {
      const error = new Error(`${path}: ${r.status} ${r.statusText}`);
      error.status = r.status;
      throw error;
    }
    return as === "json" ? r.json() : r.text();
  }

  // Prometheus text → [{name, labels, value}].
  function parseMetrics(body) {
    const out = [];
    for (const line of body.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      for (const pair of (m[3] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[pair[1]] = pair[2];
      }
      out.push({ name: m[1], labels, value: Number(m[4]) });
    }
    return out;
  }

  // The sum of `name` over the samples whose labels match `where`; null if there is none.
  function sum(samples, name, where = {}) {
    let total = null;
    for (const s of samples) {
      if (s.name !== name) continue;
      if (!Object.entries(where).every(([k, v]) => s.labels[k] === v)) continue;
      total = (total ?? 0) + s.value;
    }
    return total;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell;
      tr.appendChild(td);
    }
    return tr;
  }

  function renderSummary(info) {
    const b = info.binariesSummary;
    text("artifacts-count", b.artifactsCount);
    text("artifacts-size", b.artifactsSize);
    text("binaries-count", b.binariesCount);
    text("binaries-size", b.binariesSize);
    text("dedup-ratio", `${Number(b.dedupRatio).toFixed(2)}×`);
    const f = info.fileStoreSummary;
    text("free-space", f.freeSpace ?? "–");
  }

  function renderRepositories(info) {
    const body = $("repositories").tBodies[0];
    const repos = info.repositoriesSummaryList || [];
    const largest = Math.max(1, ...repos.map((r) => r.usedSpaceInBytes));
    body.replaceChildren(...repos.map((r) => {
      const bar = document.createElement("span");
      bar.style.width = `${(100 * r.usedSpaceInBytes) / largest}%`;
      const tr = row([r.repoKey, String(r.filesCount), String(r.foldersCount), r.usedSpace, bar]);
      tr.dataset.repo = r.repoKey;
      tr.dataset.files = String(r.filesCount);
      tr.dataset.bytes = String(r.usedSpaceInBytes);
      tr.cells[3].title = `${r.usedSpaceInBytes} bytes`;
      tr.cells[4].className = "bar";
      return tr;
    }));
  }

  function renderShards(info) {
    const shards = info.shards;
    $("shards-section").hidden = !shards;
    if (!shards) return;
    $("shards").tBodies[0].replaceChildren(...shards.mounts.map((m) => {
      const tr = row([m.id, m.state, m.writeEnabled ? "on" : "off",
        m.binariesCount == null ? "–" : String(m.binariesCount), human(m.freeSpace), human(m.totalSpace)]);
      tr.dataset.mount = m.id;
      tr.cells[1].className = `state-${m.state}`;
      return tr;
    }));
  }

  // Charts: uPlot series over the samples kept in the page.
  const series = { t: [], deploys: [], downloads: [], redirects: [], depth: [], oldest: [], hits: [] };
  let previous = null;
  const charts = {};

  function chart(id, label, lines) {
    const el = $(id);
    const opts = {
      width: Math.max(300, el.clientWidth - 16),
      height: 200,
      scales: { x: { time: true } },
      axes: [{}, { label }],
      series: [{}, ...lines.map(([name, stroke]) => ({ label: name, stroke, width: 2, points: { show: true, size: 4 } }))],
    };
    return new uPlot(opts, [[], ...lines.map(() => [])], el);
  }

  function push(name, value) {
    series[name].push(value);
    if (series[name].length > keep) series[name].shift();
  }

  function sample(samples, info) {
    const now = Date.now() / 1000;
    const counters = {
      deploys: sum(samples, "stowage_deploys_total") ?? 0,
      downloads: sum(samples, "stowage_downloads_total", { answer: "bytes" }) ?? 0,
      redirects: sum(samples, "stowage_downloads_total", { answer: "redirect" }) ?? 0,
      hits: sum(samples, "stowage_cache_hits_total"),
      misses: sum(samples, "stowage_cache_misses_total"),
    };
    if (previous) {
      const dt = Math.max(0.001, now - previous.at);
      const rate = (k) => Math.max(0, counters[k] - previous.counters[k]) / dt;
      push("t", now);
      push("deploys", rate("deploys"));
      push("downloads", rate("downloads"));
      push("redirects", rate("redirects"));
      const q = info.eventualQueue;
      push("depth", q ? q.depth : null);
      push("oldest", q ? (q.oldestAgeSecs ?? 0) : null);
      const looked = counters.hits == null ? null
        : (counters.hits - previous.counters.hits) + (counters.misses - previous.counters.misses);
      push("hits", looked ? (counters.hits - previous.counters.hits) / looked : null);
    }
    previous = { at: now, counters };
    if (counters.hits != null) {
      const looked = counters.hits + counters.misses;
      text("hit-ratio", looked ? `${((100 * counters.hits) / looked).toFixed(1)}%` : "no reads yet");
    } else {
      text("hit-ratio", "no cache");
    }
    $("queue-none").hidden = !!info.eventualQueue;
    $("queue-chart").hidden = !info.eventualQueue;
    $("cache-section").hidden = counters.hits == null;
    charts.rates.setData([series.t, series.deploys, series.downloads, series.redirects]);
    charts.queue.setData([series.t, series.depth, series.oldest]);
    charts.cache.setData([series.t, series.hits]);
  }

  async function poll() {
    const polls = Number(document.body.dataset.polls) + 1;
    try {
      const [info, metrics] = await Promise.all([
        get("api/storageinfo", "json"),
        get("api/v1/metrics", "text").catch((e) => (e.status === 404 ? "" : Promise.reject(e))),
      ]);
      renderSummary(info);
      renderRepositories(info);
      renderShards(info);
      sample(parseMetrics(metrics), info);
      const status = $("status");
      status.className = "";
      status.textContent = metrics
        ? `Updated ${new Date().toLocaleTimeString()}, every ${everySecs} s`
        : "Metrics are off on this node ([metrics] enabled = false): no charts";
      document.body.dataset.ready = "true";
    } catch (e) {
      const status = $("status");
      status.className = "error";
      status.textContent = e.status === 401 || e.status === 403
        ? "An administrator's credentials are needed to read the storage figures."
        : `Cannot read the figures: ${e.message}`;
    }
    document.body.dataset.polls = String(polls);
  }

  // What the charts hold, for a person at the console (and the browser test).
  window.stowageDashboard = { series };

  function start() {
    charts.rates = chart("rates-chart", "per second",
      [["deploys", "#2f6fde"], ["downloads", "#1e8449"], ["redirects", "#d68910"]]);
    charts.queue = chart("queue-chart", "binaries / seconds",
      [["queued binaries", "#8e44ad"], ["oldest (s)", "#c0392b"]]);
    charts.cache = chart("cache-chart", "hit ratio", [["hit ratio", "#16a085"]]);
    poll();
    setInterval(poll, everySecs * 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
