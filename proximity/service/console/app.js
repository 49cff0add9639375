/* proximity console: sign-in, the pages, the API and the live feed. No library, no network beyond this server. */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const esc = window.ProximityMap.esc;
  const KEY_STORE = "proximity.console.key";
  const state = { key: null, session: null, map: null, ws: null, feedOpen: false, fencesDoc: null,
                  campaigns: [], filterFences: null, campaignFilter: "", events: [], eventsSeen: 0,
                  pendingFences: null, timers: [] };

  class ApiError extends Error {
    constructor(status, body) { super((body && body.error) || ("HTTP " + status)); this.status = status; this.body = body; }
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = Object.assign({ "X-API-Key": state.key }, opts.headers || {});
    const r = await fetch(path, { method: opts.method || "GET", headers, body: opts.body });
    const type = r.headers.get("Content-Type") || "";
    const body = type.includes("json") ? await r.json().catch(() => null) : await r.text();
    if (!r.ok) throw new ApiError(r.status, typeof body === "object" ? body : { error: String(body).slice(0, 300) });
    return body;
  }

  function b64url(text) {
    const bytes = new TextEncoder().encode(text);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function ago(ts) {
    if (ts === null || ts === undefined) return "never";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  const num = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits || 0));

  /* ----------------------------------------------------------------- sign-in */
  async function signIn(key) {
    state.key = key;
    try {
      state.session = await api("/v1/console/session");
    } catch (e) {
      state.key = null;
      sessionStorage.removeItem(KEY_STORE);
      $("signin-error").textContent = e.status === 401 ? "This key is not known to the server." :
        e.status === 403 ? "This key may not read the console (it needs the read or admin scope)." : "Sign-in failed: " + e.message;
      return false;
    }
    sessionStorage.setItem(KEY_STORE, key);
    $("signin").hidden = true;
    $("nav").hidden = false;
    $("signout").hidden = false;
    const s = state.session;
    $("who").textContent = `key ${s.key} · ${s.can_change ? "admin: sees and changes" : "read-only: sees, cannot change"}`
      + (s.replay_demo ? ` · demo replay ${s.replay_demo}x` : "");
    document.body.classList.toggle("read-only", !s.can_change);
    location.hash = location.hash || "#map";
    route();
    await startMap();
    return true;
  }

  function signOut() {
    sessionStorage.removeItem(KEY_STORE);
    location.hash = "";
    location.reload();
  }

  /* ----------------------------------------------------------------- pages */
  function route() {
    const page = (location.hash || "#map").slice(1);
    for (const p of ["map", "campaigns", "fleet", "fences"]) {
      $("page-" + p).hidden = p !== page;
      const a = document.querySelector(`nav a[data-page=${p}]`);
      if (a) a.classList.toggle("active", p === page);
    }
    for (const t of state.timers) clearInterval(t);
    state.timers = [];
    const every = (fn, ms) => { fn(); state.timers.push(setInterval(fn, ms)); };
    if (page === "campaigns") every(loadCampaigns, 3000);
    if (page === "fleet") every(loadFleet, 5000);
  }

  /* ----------------------------------------------------------------- map */
  async function startMap() {
    if (!state.map) {
      state.map = new window.ProximityMap($("map"), { tileUrl: state.session.tile_url,
                                                       attribution: state.session.tile_attribution });
      state.map.onSelect = (f) => { if (f) { $("f-store").value = f.id; applyFilters(); } };
    }
    await loadFences();
    state.map.fit();
    await Promise.all([loadBeacons(), loadCampaignList()]);
    connectFeed();
  }

  async function loadFences() {
    try {
      state.fencesDoc = await api("/v1/fences");
      if (typeof state.fencesDoc === "string") state.fencesDoc = JSON.parse(state.fencesDoc);
    } catch (e) {
      if (e.status !== 404) throw e;
      state.fencesDoc = { type: "FeatureCollection", features: [] };
    }
    const n = state.map.setFences(state.fencesDoc);
    const tags = new Set();
    const ids = [];
    for (const f of state.map.fences) { f.tags.forEach((t) => tags.add(t)); if (ids.length < 5000) ids.push(f.id); }
    $("store-ids").innerHTML = ids.map((i) => `<option value="${esc(i)}">`).join("");
    const tagSel = $("f-tag"), keep = tagSel.value;
    tagSel.innerHTML = '<option value="">any</option>' + [...tags].sort().map((t) => `<option>${esc(t)}</option>`).join("");
    tagSel.value = keep;
    applyFilters();
    status(`${n} fences`);
    return n;
  }

  async function loadBeacons() {
    try {
      const fleet = await api("/v1/console/fleet");
      state.map.setBeacons(fleet.beacons);
    } catch (e) { status("beacons: " + e.message); }
  }

  async function loadCampaignList() {
    try {
      const doc = await api("/v1/console/campaigns");
      state.campaigns = doc.campaigns;
    } catch (e) { state.campaigns = []; }
    const sel = $("f-campaign"), keep = sel.value;
    sel.innerHTML = '<option value="">any</option>' + state.campaigns.map((c) => `<option value="${esc(c.id)}">${esc(c.name)}</option>`).join("");
    sel.value = keep;
  }

  function fencePredicate() {
    const store = $("f-store").value.trim(), tag = $("f-tag").value, cid = $("f-campaign").value;
    const c = state.campaigns.find((x) => x.id === cid);
    return (f) => {
      if (store && !f.id.startsWith(store)) return false;
      if (tag && !f.tags.includes(tag)) return false;
      if (c) {
        const t = c.trigger;
        if (t.fences && !t.fences.includes(f.id)) return false;
        if (t.tags && !f.tags.some((x) => t.tags.includes(x))) return false;
      }
      return true;
    };
  }

  function applyFilters() {
    const pred = fencePredicate();
    state.map.setFilter(pred);
    state.campaignFilter = $("f-campaign").value;
    const shown = state.map.fences.filter((f) => f.visible).length;
    status(`${shown} of ${state.map.fences.length} fences shown`);
  }

  function status(text) { $("map-status").textContent = text; }

  function connectFeed() {
    if (state.ws) return;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/events?kind=enter,dwell,exit,offer,positions";
    const ws = new WebSocket(url, ["proximity.v1", "proximity.key." + b64url(state.key)]);
    state.ws = ws;
    ws.onopen = () => { state.feedOpen = true; };
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      if (msg.type === "positions") state.map.updateDevices(msg.devices);
      else if (msg.type === "event" || msg.type === "offer") onEvent(msg);
    };
    ws.onclose = () => {
      state.feedOpen = false; state.ws = null;
      if (state.key) setTimeout(connectFeed, 2000);  // the server restarted or the network blinked
    };
  }

  function onEvent(msg) {
    const f = state.map.fenceById.get(msg.fence_id);
    if (f && !f.visible) return;
    if (state.campaignFilter && msg.type === "offer" && msg.campaign_id !== state.campaignFilter) return;
    state.map.flash(msg);
    state.eventsSeen++;
    const kind = msg.type === "offer" ? "offer" : msg.kind;
    state.events.push(msg);
    if (state.events.length > 1000) state.events.splice(0, 500);
    const li = document.createElement("li");
    li.className = kind;
    li.dataset.kind = kind; li.dataset.fence = msg.fence_id || ""; li.dataset.device = msg.device_id || "";
    const when = new Date((msg.ts || Date.now() / 1000) * 1000).toLocaleTimeString();
    const p = msg.probability !== undefined && msg.probability !== null ? ` p=${Number(msg.probability).toFixed(2)}` : "";
    li.innerHTML = msg.type === "offer"
      ? `${when} <b>offer</b> ${esc(msg.campaign_id)} → ${esc(msg.device_id)} @ ${esc(msg.fence_id)}`
      : `${when} <b>${esc(kind)}</b> ${esc(msg.device_id)} @ ${esc(msg.place || msg.fence_id)}${p}`;
    const list = $("events");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 100) list.removeChild(list.lastChild);
  }

  /* ----------------------------------------------------------------- campaigns */
  async function loadCampaigns() {
    let doc;
    try { doc = await api("/v1/console/campaigns"); } catch (e) { $("campaigns").textContent = e.message; return; }
    state.campaigns = doc.campaigns;
    $("campaigns-note").textContent = `Counts per hour of event time (UTC hours shown in local time), `
      + (doc.shared ? "summed over every worker. " : "as this worker saw them. ")
      + `Outbox: ${doc.outbox_pending === null ? "unknown" : doc.outbox_pending + " offers waiting"} (all workers)`
      + (doc.outbox_dropped ? `; dropped when due: ${doc.outbox_dropped.expired} expired, `
        + `${doc.outbox_dropped.cancelled} cancelled (the device came back).` : ".");
    const box = $("campaigns");
    const open = new Set([...box.querySelectorAll("details[open]")].map((d) => d.dataset.id));
    box.innerHTML = doc.campaigns.map(renderCampaign).join("") || "<p>No campaigns are loaded.</p>";
    for (const d of box.querySelectorAll("details")) if (open.has(d.dataset.id)) d.open = true;
    for (const b of box.querySelectorAll("button[data-status]")) {
      b.addEventListener("click", () => setStatus(b.dataset.id, b.dataset.status));
    }
  }

  function renderCampaign(c) {
    const can = state.session.can_change;
    const next = c.status === "active" ? "paused" : "active";
    const hours = c.hours.slice(-24).reverse();
    const max = Math.max(1, ...hours.map((h) => h.matched));
    const rows = hours.map((h) => `<tr><td class="l">${new Date(h.hour * 1000).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })}</td>
      <td class="l"><span class="bar" style="width:${Math.round(80 * h.matched / max)}px"></span> ${h.matched}</td>
      <td>${h.issued}</td><td>${h.held}</td><td>${h.dropped}</td><td>${h.blocked}</td><td>${h.delivered}</td>
      <td class="l">${Object.entries(h.caps).map(([k, v]) => `${esc(k)}: ${v}`).join("<br>") || ""}</td></tr>`).join("");
    const t = c.trigger;
    const trig = `${esc(t.on)}` + (t.fences ? ` at ${t.fences.map(esc).join(", ")}` : "") + (t.tags ? ` tagged ${t.tags.map(esc).join(", ")}` : "")
      + (t.zones ? ` in zones ${t.zones.map(esc).join(", ")}` : "");
    return `<div class="campaign" data-id="${esc(c.id)}" data-status="${esc(c.status)}">
      <h3>${esc(c.name)} <span class="muted">${esc(c.id)}</span> <span class="status-${esc(c.status)}" data-testid="status">${esc(c.status)}</span></h3>
      <div>trigger: ${trig} · priority ${c.priority} · backlog ${c.backlog}
        <button data-id="${esc(c.id)}" data-status="${next}" ${can ? "" : "disabled title=\"needs a key with the admin scope\""}>${next === "paused" ? "Pause" : "Resume"}</button>
        <span class="msg" data-msg="${esc(c.id)}"></span></div>
      <div class="report" data-report="${esc(c.id)}">${c.report ? renderReport(c.report) : '<span class="muted">conversions and lift: no report yet</span>'}</div>
      <details data-id="${esc(c.id)}"><summary>per hour (${c.hours.length} hours)</summary>
      <table class="grid"><tr><th class="l">hour</th><th class="l">matched</th><th>issued</th><th>held</th><th>dropped</th><th>blocked</th><th>delivered</th><th class="l">refusals per cap</th></tr>${rows}</table></details>
    </div>`;
  }

  async function setStatus(id, status) {
    const msg = document.querySelector(`[data-msg="${CSS.escape(id)}"]`);
    try {
      const r = await api(`/v1/campaigns/${encodeURIComponent(id)}/status`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ status }) });
      if (msg) { msg.className = "msg ok"; msg.textContent = `${r.status} (config version ${r.version})`; }
      await loadCampaigns();
      return r;
    } catch (e) {
      if (msg) { msg.className = "msg error"; msg.textContent = `not changed: ${e.message}`; }
      return { error: e.message, status: e.status };
    }
  }

  /* a campaign report: whatever numbers it holds, top level first, then one row per group (variant, store) */
  function renderReport(r) {
    const flat = Object.entries(r).filter(([, v]) => typeof v === "number" || typeof v === "string");
    let html = "<b>conversions and lift</b>: " + flat.map(([k, v]) => `${esc(k)} ${typeof v === "number" ? Number(v.toPrecision(4)) : esc(v)}`).join(" · ");
    for (const [k, v] of Object.entries(r)) {
      const rows = Array.isArray(v) ? v : (v && typeof v === "object" ? Object.entries(v).map(([n, o]) => (o && typeof o === "object" ? { name: n, ...o } : { name: n, value: o })) : null);
      if (!rows || !rows.length || typeof rows[0] !== "object") continue;
      const cols = [...new Set(rows.flatMap((x) => Object.keys(x).filter((c) => typeof x[c] !== "object" || x[c] === null)))];
      html += `<table class="grid"><caption>${esc(k)}</caption><tr>${cols.map((c) => `<th>${esc(c)}</th>`).join("")}</tr>`
        + rows.map((x) => `<tr>${cols.map((c) => `<td>${typeof x[c] === "number" ? Number(x[c].toPrecision(4)) : esc(x[c])}</td>`).join("")}</tr>`).join("") + "</table>";
    }
    return html;
  }

  /* ----------------------------------------------------------------- fleet */
  async function loadFleet() {
    let doc;
    try { doc = await api("/v1/console/fleet"); } catch (e) { $("fleet-note").textContent = e.message; return; }
    $("fleet-note").textContent = `A beacon is silent when not heard for ${doc.silent_after_s} s, low on battery under ${doc.low_battery_mv} mV `
      + `(the thresholds of "proximity beacons health"); a gateway is down when its last batch is older than ${doc.silent_after_s} s.`;
    $("gateways").innerHTML = `<tr><th class="l">gateway</th><th class="l">store</th><th class="l">zone</th><th class="l">status</th><th>last heard</th></tr>`
      + doc.gateways.map((g) => `<tr><td class="l">${esc(g.gateway_id)}${g.registered ? "" : " (unregistered)"}</td><td class="l">${esc(g.fence_id || "–")}</td>
        <td class="l">${esc(g.zone || "–")}</td><td class="l status-${esc(g.status)}">${esc(g.status)}</td><td>${ago(g.last_heard)}</td></tr>`).join("");
    const row = (b) => `<tr><td class="l">${esc(b.key)}</td><td class="l">${esc(b.fence_id || "–")}</td><td class="l">${esc(b.zone || "–")}</td>
        <td class="l ${b.status.split(",").map((s) => "status-" + esc(s)).join(" ")}">${esc(b.status)}</td><td>${ago(b.last_seen)}</td>
        <td>${num(b.last_rssi)}</td><td>${b.battery_mv === null ? "–" : b.battery_mv + " mV"}</td><td>${b.temperature_c === null ? "–" : num(b.temperature_c, 1) + " °C"}</td>
        <td>${b.sightings}</td><td class="l">${b.heard_by.map(esc).join(", ")}</td></tr>`;
    const head = `<tr><th class="l">beacon</th><th class="l">store</th><th class="l">zone</th><th class="l">status</th><th>last heard</th><th>RSSI</th><th>battery</th><th>temp</th><th>sightings</th><th class="l">heard by</th></tr>`;
    $("beacons").innerHTML = head + doc.beacons.map(row).join("");
    $("unregistered").innerHTML = doc.unregistered.length ? head + doc.unregistered.map(row).join("") : "<tr><td class=\"l\">none</td></tr>";
    if (state.map) state.map.setBeacons(doc.beacons);
  }

  /* ----------------------------------------------------------------- fences upload */
  async function checkFences() {
    const file = $("fences-file").files[0];
    const out = $("fences-result");
    $("fences-apply").disabled = true;
    state.pendingFences = null;
    if (!file) { out.innerHTML = '<p class="error">Choose a GeoJSON file first.</p>'; return null; }
    const text = await file.text();
    let r;
    try {
      r = await api("/v1/fences/check?source=" + encodeURIComponent(file.name), {
        method: "POST", headers: { "Content-Type": "application/geo+json" }, body: text });
    } catch (e) {
      out.innerHTML = `<p class="error">${esc(e.status === 403 ? "Checking and applying fences needs a key with the admin scope." : e.message)}</p>`;
      return null;
    }
    if (!r.valid) {
      out.innerHTML = `<p class="error">${esc(file.name)} is not valid; nothing was changed.</p><pre class="problems" data-testid="problems">${r.errors.map((e) => esc(e.cli)).join("\n")}</pre>`;
      return r;
    }
    const d = r.diff, c = d.counts;
    const list = (name, ids, n) => `<div><b>${name}: ${n}</b>${ids.length ? "<ul>" + ids.map((i) => `<li>${esc(i)}</li>`).join("") + (n > ids.length ? `<li>… and ${n - ids.length} more</li>` : "") + "</ul>" : ""}</div>`;
    out.innerHTML = `<div class="diff" data-testid="diff"><p class="ok">${esc(file.name)}: ${r.count} valid fences. Applying it would change:</p>`
      + list("added", d.added, c.added) + list("removed", d.removed, c.removed) + list("changed", d.changed, c.changed)
      + `<div>unchanged: ${c.unchanged}</div></div>`;
    state.pendingFences = { text, name: file.name };
    $("fences-apply").disabled = !state.session.can_change;
    if (state.map) state.map.highlight([...d.added, ...d.changed]);
    return r;
  }

  async function applyFences() {
    const p = state.pendingFences;
    const out = $("fences-result");
    if (!p) return null;
    $("fences-apply").disabled = true;
    try {
      const r = await api("/v1/fences", { method: "PUT", headers: { "Content-Type": "application/geo+json" }, body: p.text });
      out.insertAdjacentHTML("beforeend", `<p class="ok" data-testid="applied">Applied ${esc(p.name)}: ${r.count} fences, config version ${r.version}; every worker reloads it.</p>`);
      state.pendingFences = null;
      await loadFences();
      state.map.highlight([]);
      return r;
    } catch (e) {
      const errs = e.body && e.body.errors ? e.body.errors.map((x) => x.cli).join("\n") : e.message;
      out.insertAdjacentHTML("beforeend", `<pre class="problems">${esc(errs)}</pre>`);
      return null;
    }
  }

  /* ----------------------------------------------------------------- wiring */
  $("signin-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("key").value.trim()); });
  $("signout").addEventListener("click", signOut);
  $("fit").addEventListener("click", () => state.map && state.map.fit());
  for (const id of ["f-store", "f-tag", "f-campaign"]) $(id).addEventListener("input", applyFilters);
  $("fences-check").addEventListener("click", checkFences);
  $("fences-apply").addEventListener("click", applyFences);
  window.addEventListener("hashchange", () => { if (state.session) route(); });
  const saved = sessionStorage.getItem(KEY_STORE);
  if (saved) signIn(saved);

  window.consoleApp = { state, api, setStatus, loadCampaigns, loadFleet, loadFences, checkFences, applyFences, signIn,
                        get map() { return state.map; } };
})();
