/* proximity reports: the console's map, offline. The page carries its data (fences, pings, events, offers)
 * in <script type="application/json" id="pm-data">; a timeline replays it: devices move, events flash. */
(function () {
  "use strict";
  const esc = window.ProximityMap.esc;
  const data = JSON.parse(document.getElementById("pm-data").textContent);
  const map = new window.ProximityMap(document.getElementById("pm-map"), {});
  map.setFences(data.fences);
  map.fit();
  const p = data.pings || { d: [], lon: [], lat: [], acc: [], t: [] };
  const names = data.devices || [];
  const events = (data.events || []).slice().sort((a, b) => a.t - b.t);
  const t0 = data.t0 || 0;
  const tEnd = Math.max(p.t.length ? p.t[p.t.length - 1] : 0, events.length ? events[events.length - 1].t : 0);
  const slider = document.getElementById("pm-time"), label = document.getElementById("pm-clock");
  const log = document.getElementById("pm-events"), playBtn = document.getElementById("pm-play");
  const speedSel = document.getElementById("pm-speed");
  slider.max = String(Math.ceil(tEnd));
  let cur = 0, iPing = 0, iEvent = 0, playing = false, last = null;

  function clock(t) {
    return new Date((t0 + t) * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }
  function logEvent(e) {
    const li = document.createElement("li");
    li.className = e.kind;
    const pr = e.probability !== undefined && e.probability !== null ? " p=" + Number(e.probability).toFixed(2) : "";
    li.innerHTML = `${clock(e.t).slice(11, 19)} <b>${esc(e.kind)}</b> ${esc(e.device_id)} @ ${esc(e.fence_id)}`
      + (e.campaign_id ? ` (${esc(e.campaign_id)})` : "") + pr;
    log.insertBefore(li, log.firstChild);
    while (log.children.length > 200) log.removeChild(log.lastChild);
  }
  /* move on to data time t: pings and events in (cur, t]; `live` flashes and glides, else jumps */
  function advance(t, live) {
    const rows = [];
    while (iPing < p.t.length && p.t[iPing] <= t) {
      rows.push([names[p.d[iPing]], p.lon[iPing], p.lat[iPing], p.acc[iPing], p.t[iPing]]);
      iPing++;
    }
    map.updateDevices(rows, live ? 120 : 0);
    while (iEvent < events.length && events[iEvent].t <= t) {
      const e = events[iEvent++];
      if (live) { map.flash(e); logEvent(e); }
    }
    map.removeDevicesOlderThan(t - 1800);
    cur = t;
    slider.value = String(Math.floor(t));
    label.textContent = clock(t);
  }
  function seek(t) {
    if (t < cur) { map.clearDevices(); iPing = 0; iEvent = 0; log.innerHTML = ""; }
    advance(t, false);
  }
  function frame(now) {
    if (!playing) return;
    if (last !== null) {
      let next = cur + (now - last) / 1000 * Number(speedSel.value);
      const upcoming = Math.min(iPing < p.t.length ? p.t[iPing] : Infinity, iEvent < events.length ? events[iEvent].t : Infinity);
      if (upcoming - cur > 600) next = Math.max(next, upcoming - 30);  // skip quiet hours
      advance(Math.min(tEnd, next), true);
    }
    last = now;
    if (cur >= tEnd) { playing = false; playBtn.textContent = "Play"; return; }
    requestAnimationFrame(frame);
  }
  function play() {
    playing = !playing;
    playBtn.textContent = playing ? "Pause" : "Play";
    last = null;
    if (playing) { if (cur >= tEnd) seek(0); requestAnimationFrame(frame); }
  }
  slider.addEventListener("input", () => seek(Number(slider.value)));
  playBtn.addEventListener("click", play);
  document.getElementById("pm-fit").addEventListener("click", () => map.fit());
  seek(0);
  window.reportMap = { map, seek, play, data, get time() { return cur; } };
})();
