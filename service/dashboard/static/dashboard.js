// Junction operator dashboard: fetches /dashboard/api/* with the admin token (kept in
// sessionStorage, sent only as a bearer header) and draws the charts with plotly.js.
"use strict";

(function () {
  const TOKEN_KEY = "junction.adminToken";
  const REFRESH_MS = 10000;
  const PALETTE = ["#2f6fde", "#e8793b", "#1f9d55", "#c53030", "#8b5cf6", "#0891b2", "#ca8a04",
    "#db2777", "#4b5563", "#65a30d", "#0d9488", "#9333ea", "#b45309", "#2563eb", "#dc2626",
    "#16a34a", "#7c3aed", "#0284c7", "#a16207", "#be185d"];
  const LAYOUT = {
    margin: { l: 52, r: 12, t: 8, b: 40 }, font: { family: "system-ui, sans-serif", size: 11, color: "#1c2430" },
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    xaxis: { gridcolor: "#eef1f6", zeroline: false }, yaxis: { gridcolor: "#eef1f6", zeroline: false },
    legend: { orientation: "h", y: -0.2, font: { size: 10 } }, hoverlabel: { font: { size: 11 } },
  };
  // No mode bar (it covered the top right of each chart); drag to zoom, double-click to reset.
  const CONFIG = { displaylogo: false, responsive: true, displayModeBar: false };
  const $ = (id) => document.getElementById(id);
  const colours = {};
  let timer = null;
  let frontierRouter = "";

  function assignColours(names) {
    names.slice().sort().forEach((n, i) => { colours[n] = PALETTE[i % PALETTE.length]; });
  }
  function colour(name) {
    if (!(name in colours)) {
      let h = 0;
      for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
      colours[name] = PALETTE[h % PALETTE.length];
    }
    return colours[name];
  }
  function esc(s) {
    return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }
  const usd = (v, d = 4) => (v === null || v === undefined ? "–" : "$" + Number(v).toFixed(d));
  const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
  const num = (v, d = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  async function call(method, path, body, contentType) {
    const headers = { Authorization: "Bearer " + token() };
    let payload = body;
    if (body !== undefined && contentType === undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    } else if (contentType) {
      headers["Content-Type"] = contentType;
    }
    const r = await fetch(path, { method, headers, body: payload, cache: "no-store" });
    const text = await r.text();
    const data = text ? JSON.parse(text) : {};
    if (r.status === 401) { signOut("The admin token was not accepted."); throw new Error("unauthorised"); }
    if (!r.ok) throw new Error((data.error && data.error.message) || r.statusText);
    return data;
  }

  function empty(id, text) {
    const el = $(id);
    if (window.Plotly) Plotly.purge(el);
    el.innerHTML = '<div class="empty">' + esc(text) + "</div>";
  }
  function plot(id, traces, layout) {
    const el = $(id);
    if (el.querySelector(".empty")) el.innerHTML = "";
    const merged = Object.assign({}, LAYOUT, layout || {});
    merged.xaxis = Object.assign({}, LAYOUT.xaxis, (layout || {}).xaxis || {});
    merged.yaxis = Object.assign({}, LAYOUT.yaxis, (layout || {}).yaxis || {});
    Plotly.react(el, traces, merged, CONFIG);
  }

  // --- panels
  function renderKpis(s) {
    const o = s.overall;
    const items = [
      ["Requests", o.requests, `${o.routed_requests} routed, last ${s.window_hours} h`],
      ["Routed cost / 1k req", usd(o.routed_cost_per_1k_usd), "billed"],
      ["Best model cost / 1k req", usd(o.best_model_cost_per_1k_usd), s.best_model ? esc(s.best_model) : "no routed traffic yet"],
      ["Saved", o.saved_fraction === undefined || o.saved_fraction === null ? "–" : pct(o.saved_fraction),
        o.saved_per_1k_usd === undefined ? "" : usd(o.saved_per_1k_usd) + " per 1k requests"],
      ["Realised quality", o.realised_quality_routed === undefined ? "–" : num(o.realised_quality_routed),
        o.requests_with_outcomes ? `best model ${num(o.realised_quality_best_model)} on the same ${o.requests_with_outcomes}` : "no evaluated requests yet"],
      ["Predicted quality", o.predicted_quality_routed === undefined ? "–" : num(o.predicted_quality_routed),
        o.predicted_quality_best_model === undefined ? "" : `best model ${num(o.predicted_quality_best_model)}`],
    ];
    $("kpis").innerHTML = items.map(([l, v, sub], i) =>
      `<div class="kpi"><div class="label">${esc(l)}</div><div class="value${i === 3 && o.saved_fraction > 0 ? " good" : ""}">${esc(v)}</div><div class="sub">${sub}</div></div>`).join("");
  }

  function renderMap(pool) {
    if (!pool.length) return empty("map", "No models registered.");
    // Every model is labelled (small, grey; full details on hover); neighbours along x take
    // turns above and below their point so that labels in a cluster overlap less.
    const order = pool.map((m, i) => [m.x, i]).sort((a, b) => a[0] - b[0]).map(([, i]) => i);
    const place = {};
    order.forEach((i, k) => { place[pool[i].name] = ["top center", "bottom center"][k % 2]; });
    const traces = {};
    for (const m of pool) {
      const key = m.backend === "openai" ? "live backend" : "replay (data-set model)";
      const t = traces[key] || (traces[key] = { x: [], y: [], text: [], hovertext: [], textposition: [], customdata: [], marker: { size: [], color: [], line: { color: [], width: 2 } } });
      t.x.push(m.x); t.y.push(m.y); t.hovertext.push(m.name); t.text.push(m.name);
      t.textposition.push(place[m.name]);
      const near = m.neighbours.map((n) => `${n.model} (${n.distance.toFixed(2)})`).join("<br>  ");
      t.customdata.push([m.input_per_mtok, m.output_per_mtok, m.health, near || "–", m.requests, m.num_evaluations]);
      t.marker.size.push(11 + Math.min(26, 4 * Math.sqrt(m.requests)));
      t.marker.color.push(colour(m.name));
      t.marker.line.color.push(m.health === "ok" ? "#ffffff" : "#c53030");
    }
    const data = Object.entries(traces).map(([name, t]) => ({
      type: "scatter", mode: "markers+text", name, x: t.x, y: t.y, text: t.text, hovertext: t.hovertext, customdata: t.customdata,
      textposition: t.textposition, textfont: { size: 9, color: "#6b7685" },
      marker: Object.assign({ symbol: name === "live backend" ? "diamond" : "circle", opacity: 0.9 }, t.marker),
      hovertemplate: "<b>%{hovertext}</b><br>price: $%{customdata[0]} / $%{customdata[1]} per M tokens (in / out)" +
        "<br>health: %{customdata[2]}<br>requests served: %{customdata[4]}<br>evaluations: %{customdata[5]}" +
        "<br>nearest:<br>  %{customdata[3]}<extra></extra>",
    }));
    plot("map", data, { xaxis: { title: { text: "PC 1" }, showticklabels: false }, yaxis: { title: { text: "PC 2" }, showticklabels: false }, legend: { orientation: "h", y: -0.08 } });
  }

  function renderHealth(h) {
    // Trouble first: cooling backends, then those with errors or fallbacks, then the rest.
    const weight = (m) => (m.state !== "ok" ? 0 : Object.keys(m.upstream_errors).length || m.fell_back_from ? 1 : m.backend === "openai" ? 2 : 3);
    const rows = h.models.slice().sort((a, b) => weight(a) - weight(b) || a.model.localeCompare(b.model));
    const errs = (e) => Object.entries(e).map(([k, v]) => `${k} ${v}`).join(", ") || "–";
    $("health").innerHTML =
      `<p class="muted">${h.fallbacks} request(s) served after a fallback in the window. Fallbacks: away from a model / to it.</p>` +
      "<table><thead><tr><th>model</th><th>state</th><th>errors</th><th class=num>fallbacks</th></tr></thead><tbody>" +
      rows.map((m) => `<tr title="${esc(m.backend)}${m.url ? " " + esc(m.url) : ""}"><td>${esc(m.model)}${m.backend === "openai" ? ' <span class="muted">live</span>' : ""}</td>` +
        `<td><span class="dot${m.state === "ok" ? "" : " cooling"}"></span>${esc(m.state)}${m.cooldown_left_s ? " (" + m.cooldown_left_s + " s)" : ""}</td>` +
        `<td>${esc(errs(m.upstream_errors))}</td><td class=num>${m.fell_back_from} / ${m.served_after_fallback}</td></tr>`).join("") +
      "</tbody></table>";
  }

  function renderTraffic(t) {
    const models = Object.keys(t.models);
    if (!models.length) {
      empty("share", "No traffic yet: send a chat request to /v1/chat/completions.");
      empty("quality", "No traffic yet.");
      return;
    }
    const half = (t.bucket_s * 1000) / 2;
    const xaxis = { type: "date", range: [new Date(Date.parse(t.buckets[0]) - half).toISOString(),
      new Date(Date.parse(t.buckets[t.buckets.length - 1]) + half).toISOString()] };
    plot("share", models.map((m) => ({
      type: "bar", name: m, x: t.buckets, y: t.models[m].requests, marker: { color: colour(m) }, width: t.bucket_s * 1000 * 0.8,
      hovertemplate: "%{y} request(s) to " + esc(m) + "<extra></extra>",
    })), { barmode: "stack", xaxis, yaxis: { title: { text: `requests per ${t.bucket_s / 60} min` } } });
    const traces = [];
    for (const m of models) {
      traces.push({ type: "scatter", mode: "lines+markers", name: m + " predicted", x: t.buckets, y: t.models[m].predicted,
        line: { color: colour(m), dash: "dot" }, legendgroup: m, connectgaps: true });
      if (t.models[m].realised.some((v) => v !== null)) {
        traces.push({ type: "scatter", mode: "lines+markers", name: m + " realised", x: t.buckets, y: t.models[m].realised,
          customdata: t.models[m].realised_n, line: { color: colour(m) }, legendgroup: m, connectgaps: true,
          hovertemplate: "%{y:.2f} on %{customdata} evaluated request(s)<extra>" + esc(m) + " realised</extra>" });
      }
    }
    plot("quality", traces, { xaxis, yaxis: { title: { text: "p(correct)" }, range: [-0.05, 1.05] } });
  }

  function renderSavings(s) {
    const rows = s.per_key;
    const label = (r) => r.prefix ? `${r.name} (${r.prefix}…)` : r.name;
    const withCost = rows.filter((r) => r.routed_cost_per_1k_usd !== null);
    if (!withCost.length) empty("savings-chart", "No routed requests in the window yet.");
    else plot("savings-chart", [
      { type: "bar", name: "routed", x: withCost.map(label), y: withCost.map((r) => r.routed_cost_per_1k_usd), marker: { color: "#2f6fde" } },
      { type: "bar", name: "best single model" + (s.best_model ? ` (${s.best_model})` : ""), x: withCost.map(label), y: withCost.map((r) => r.best_model_cost_per_1k_usd), marker: { color: "#c7cfdb" } },
    ], { barmode: "group", yaxis: { title: { text: "USD per 1,000 requests" } } });
    const all = [Object.assign({ name: "all keys" }, s.overall), ...rows];
    $("savings-table").innerHTML = "<table><thead><tr><th>API key</th><th class=num>requests</th><th class=num>routed $/1k</th><th class=num>best $/1k</th><th class=num>saved</th><th class=num>realised q (routed / best, n)</th></tr></thead><tbody>" +
      all.map((r) => `<tr><td>${esc(label(r))}</td><td class=num>${r.requests}</td><td class=num>${usd(r.routed_cost_per_1k_usd)}</td>` +
        `<td class=num>${usd(r.best_model_cost_per_1k_usd)}</td><td class=num>${r.saved_fraction === undefined ? "–" : pct(r.saved_fraction)}</td>` +
        `<td class=num>${r.requests_with_outcomes ? num(r.realised_quality_routed, 2) + " / " + num(r.realised_quality_best_model, 2) + ", " + r.requests_with_outcomes : "–"}</td></tr>`).join("") +
      "</tbody></table>";
  }

  function renderFrontier(f) {
    if (!f.points || !f.points.length) {
      $("frontier-note").textContent = "";
      return empty("frontier", "No held-out questions with known outcomes for this pool.");
    }
    $("frontier-note").textContent = `${f.router} on ${f.questions} held-out ${f.dataset} questions` + (f.excluded && f.excluded.length ? `; not on them: ${f.excluded.join(", ")}` : "");
    const pts = f.points.filter((p) => p.cost_per_1k_usd > 0);
    const cur = f.points.filter((p) => p.current);
    plot("frontier", [
      { type: "scatter", mode: "markers", name: "single models", x: f.models.map((m) => m.cost_per_1k_usd), y: f.models.map((m) => m.accuracy),
        text: f.models.map((m) => m.model), marker: { color: "#9aa5b4", size: 7 }, hovertemplate: "%{text}<br>$%{x:.4f} / 1k, accuracy %{y:.3f}<extra></extra>" },
      { type: "scatter", mode: "lines+markers", name: "router over lambda", x: pts.map((p) => p.cost_per_1k_usd), y: pts.map((p) => p.accuracy),
        customdata: pts.map((p) => p.lambda), line: { color: "#2f6fde", shape: "hv" }, marker: { size: 4 },
        hovertemplate: "lambda %{customdata:.3g}<br>$%{x:.4f} / 1k, accuracy %{y:.3f}<extra></extra>" },
      { type: "scatter", mode: "markers", name: `current lambda = ${f.lambda}`, x: cur.map((p) => Math.max(p.cost_per_1k_usd, 1e-9)), y: cur.map((p) => p.accuracy),
        marker: { color: "#c53030", size: 14, symbol: "star" }, hovertemplate: "current lambda<br>$%{x:.4f} / 1k, accuracy %{y:.3f}<extra></extra>" },
    ], { xaxis: { type: "log", dtick: "D2", tickprefix: "$", title: { text: "USD per 1,000 requests (log)" } }, yaxis: { title: { text: "realised accuracy" } } });
  }

  function renderFederation(fed) {
    const runs = fed.runs.filter((r) => r.rounds.length);
    if (!runs.length) {
      empty("federation", "No federated runs found. Run: junction federate simulate --out " + (fed.folders[0] || "DIR") + "/NAME");
    } else {
      const traces = [];
      for (const r of runs) {
        const xs = r.rounds.map((p) => p.round);
        traces.push({ type: "scatter", mode: "lines+markers", name: `${r.name} (${r.clients} clients)`,
          x: xs, y: r.rounds.map((p) => p.auc), line: { color: colour(r.name) } });
        if (r.centralized_auc !== null && r.centralized_auc !== undefined) {
          traces.push({ type: "scatter", mode: "lines", name: `${r.name}: centralised`, x: [Math.min(...xs), Math.max(...xs)],
            y: [r.centralized_auc, r.centralized_auc], line: { color: colour(r.name), dash: "dot", width: 1 } });
        }
      }
      plot("federation", traces, { xaxis: { title: { text: "round" } }, yaxis: { title: { text: "AUC (global test)" } },
        legend: { orientation: "h", y: 1.15, font: { size: 10 } }, margin: { l: 52, r: 12, t: 28, b: 40 } });
    }
    $("federation-table").innerHTML = fed.runs.length ? "<table><thead><tr><th>run</th><th>router</th><th>logs</th><th class=num>clients</th><th class=num>rounds</th><th class=num>federated / centralised AUC</th></tr></thead><tbody>" +
      fed.runs.map((r) => `<tr><td>${esc(r.name)}</td><td>${esc(r.router)}</td><td>${esc(r.logs)}</td><td class=num>${esc(r.clients)}</td><td class=num>${esc(r.rounds_planned)}</td>` +
        `<td class=num>${num(r.federated_auc)} / ${num(r.centralized_auc)}</td></tr>`).join("") + "</tbody></table>" : "";
  }

  function renderBudgets(b) {
    if (!b.length) return empty("budgets", "No budgeted conversations yet (send budget: {conversation_id, total_tokens}).");
    const names = b.map((c) => c.conversation.slice(0, 8));
    plot("budgets", [
      { type: "bar", orientation: "h", name: "used", y: names, x: b.map((c) => c.completion_tokens), marker: { color: "#2f6fde" },
        customdata: b.map((c) => [c.turns, c.total, c.left ?? "–"]), hovertemplate: "%{x} tokens in %{customdata[0]} turn(s) of %{customdata[1]}; left %{customdata[2]}<extra></extra>" },
      { type: "bar", orientation: "h", name: "left", y: names, x: b.map((c) => Math.max(0, c.left ?? 0)), marker: { color: "#d6dde8" } },
    ], { barmode: "stack", xaxis: { title: { text: "completion tokens" } }, margin: { l: 80, r: 12, t: 8, b: 40 } });
  }

  function renderRouters(r) {
    const select = $("frontier-router");
    const options = r.available;
    if (select.options.length !== options.length) {
      select.innerHTML = options.map((n) => `<option value="${esc(n)}">${esc(n)}${n === r.default ? " (default)" : ""}</option>`).join("");
      select.value = frontierRouter || r.default;
    }
    if (!r.artifacts.length) {
      $("routers").innerHTML = `<p class="muted">Built in: ${esc(r.available.join(", "))} (default ${esc(r.default)}). No uploaded router artifacts: publish one with <code>junction federate publish</code> or <code>POST /admin/routers</code>.</p>`;
      return;
    }
    $("routers").innerHTML = "<table><thead><tr><th>name</th><th class=num>version</th><th>kind</th><th>uploaded</th><th></th></tr></thead><tbody>" +
      r.artifacts.map((a) => `<tr><td>${esc(a.name)}</td><td class=num>${a.version}</td><td>${esc(a.kind)}</td><td>${esc(a.created_at.replace("T", " ").slice(0, 16))}</td>` +
        `<td>${a.active ? '<span class="ok">active</span>' : `<button type="button" class="small" data-activate="${esc(a.name)}" data-version="${a.version}">Activate</button>`}</td></tr>`).join("") +
      "</tbody></table>";
  }

  // --- loading
  async function refresh() {
    try {
      const [ov, sv, fed] = await Promise.all([
        call("GET", "/dashboard/api/overview"), call("GET", "/dashboard/api/savings"), call("GET", "/dashboard/api/federation"),
      ]);
      $("registry").textContent = `registry v${ov.registry_version} · ${ov.pool.length} models · lambda ${ov.lambda}`;
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      assignColours(ov.pool.map((m) => m.name));
      renderKpis(sv);
      renderMap(ov.pool);
      renderHealth(ov.health);
      renderTraffic(ov.traffic);
      renderSavings(sv);
      renderBudgets(ov.budgets);
      renderFederation(fed);
      renderRouters(ov.routers);
      document.body.dataset.ready = "true";
      document.body.dataset.models = String(ov.pool.length);
    } catch (e) {
      if (e.message !== "unauthorised") $("updated").textContent = "refresh failed: " + e.message;
    }
  }
  async function loadFrontier() {
    try {
      const q = frontierRouter ? "?router=" + encodeURIComponent(frontierRouter) : "";
      renderFrontier(await call("GET", "/dashboard/api/frontier" + q));
    } catch (e) {
      if (e.message !== "unauthorised") empty("frontier", "Frontier unavailable: " + e.message);
    }
  }

  function schedule() {
    clearInterval(timer);
    if ($("autorefresh").checked) timer = setInterval(refresh, REFRESH_MS);
  }

  async function register(ev) {
    ev.preventDefault();
    const f = ev.target;
    const out = $("register-result");
    const btn = f.querySelector("button");
    btn.disabled = true;
    out.className = "";
    out.textContent = "reading the evaluations…";
    try {
      const file = f.file.files[0];
      const name = f.name.value.trim();
      const parsed = await call("POST", "/dashboard/api/evaluations/parse?filename=" + encodeURIComponent(file.name) +
        "&model=" + encodeURIComponent(name), await file.text(), "text/plain");
      out.textContent = `embedding ${parsed.evaluations.length} evaluations with LOCUS…`;
      const backend = f.kind.value === "replay" ? { kind: "replay", model: f.model.value.trim() || null }
        : { kind: "openai", url: f.url.value.trim(), model: f.model.value.trim() || name };
      const m = await call("POST", "/admin/models", {
        name, backend, evaluations: parsed.evaluations,
        pricing: { input_per_mtok: Number(f.input.value), output_per_mtok: Number(f.output.value) },
      });
      out.className = "ok";
      out.textContent = `${m.name} registered from ${m.num_evaluations} evaluations${m.routable ? ", routable now" : ""}.`;
      f.reset();
      await refresh();
      await loadFrontier();
    } catch (e) {
      out.className = "error";
      out.textContent = e.message;
    } finally {
      btn.disabled = false;
    }
  }

  async function activate(ev) {
    const b = ev.target.closest("button[data-activate]");
    if (!b) return;
    b.disabled = true;
    try {
      const r = await call("POST", "/admin/routers/activate", { name: b.dataset.activate, version: Number(b.dataset.version) });
      $("router-result").className = "ok";
      $("router-result").textContent = `${r.name} v${r.version} is active.`;
      await refresh();
    } catch (e) {
      $("router-result").className = "error";
      $("router-result").textContent = e.message;
      b.disabled = false;
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearInterval(timer);
    $("main").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
  }

  async function start() {
    $("login").hidden = true;
    $("main").hidden = false;
    $("signout").hidden = false;
    await refresh();
    if (token()) { await loadFrontier(); schedule(); }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
      $("token").value = "";
      start();
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("autorefresh").addEventListener("change", schedule);
    $("register-form").addEventListener("submit", register);
    $("routers").addEventListener("click", activate);
    $("frontier-router").addEventListener("change", (ev) => { frontierRouter = ev.target.value; loadFrontier(); });
    $("register-form").kind.addEventListener("change", (ev) => {
      $("register-form").url.disabled = ev.target.value === "replay";
    });
    if (token()) start(); else signOut("");
  });
})();
