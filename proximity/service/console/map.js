/* proximity console: the map. A hand-written Canvas 2D renderer, no library, no network.
 *
 * Coordinates are Web Mercator metres (EPSG:3857), so an operator's raster tiles
 * ({z}/{x}/{y}, optional) line up under the fences. Fences are drawn once per view
 * into an off-screen layer (one path per style, culled by bounding box); each frame
 * then copies that layer, and draws beacons, devices (interpolated between feed
 * updates), event flashes and the scale bar. Panning and zooming move the cached
 * layer and redraw it when the gesture pauses, so frames stay cheap with 10,000
 * fences and thousands of moving devices.
 *
 * Used by the live console (app.js) and by the static reports (report.js).
 */
(function () {
  "use strict";
  const R = 6378137;
  const MAX_LAT = 85.05112878;
  const KIND_COLOURS = { enter: "#1a9850", dwell: "#fdae61", exit: "#d73027", offer: "#7b3294" };

  function project(lon, lat) {
    const la = Math.max(-MAX_LAT, Math.min(MAX_LAT, lat));
    return [R * lon * Math.PI / 180, R * Math.log(Math.tan(Math.PI / 4 + la * Math.PI / 360))];
  }
  function unproject(x, y) {
    return [x / R * 180 / Math.PI, (2 * Math.atan(Math.exp(y / R)) - Math.PI / 2) * 180 / Math.PI];
  }

  /* One fence: projected rings (Float64Array x,y,x,y...), bbox, label point, circle if any. */
  function parseFence(feature, index) {
    const props = feature.properties || {};
    const id = String(feature.id !== undefined && feature.id !== null ? feature.id : (props.id || "fence-" + index));
    const geom = feature.geometry || {};
    const polys = [];
    let circle = null;
    if (geom.type === "Point" && props.radius_m) {
      const c = project(geom.coordinates[0], geom.coordinates[1]);
      const scale = 1 / Math.cos(geom.coordinates[1] * Math.PI / 180);
      circle = { x: c[0], y: c[1], r: props.radius_m * scale };
    } else if (geom.type === "Polygon") {
      polys.push(geom.coordinates);
    } else if (geom.type === "MultiPolygon") {
      for (const p of geom.coordinates) polys.push(p);
    }
    const rings = [];
    let minx = Infinity, miny = Infinity, maxx = -Infinity, maxy = -Infinity;
    for (const poly of polys) {
      for (const ring of poly) {
        const a = new Float64Array(ring.length * 2);
        let prevLon = null;
        for (let i = 0; i < ring.length; i++) {
          let lon = ring[i][0];
          if (prevLon !== null && Math.abs(lon - prevLon) > 180) lon += lon < prevLon ? 360 : -360; // antimeridian
          prevLon = lon;
          const p = project(lon, ring[i][1]);
          a[2 * i] = p[0]; a[2 * i + 1] = p[1];
          if (p[0] < minx) minx = p[0]; if (p[0] > maxx) maxx = p[0];
          if (p[1] < miny) miny = p[1]; if (p[1] > maxy) maxy = p[1];
        }
        rings.push(a);
      }
    }
    if (circle) {
      minx = circle.x - circle.r; maxx = circle.x + circle.r; miny = circle.y - circle.r; maxy = circle.y + circle.r;
    }
    const tags = Array.isArray(props.tags) ? props.tags.map(String) : [];
    return { id, name: String(props.name || id), tags, props, rings, circle,
             bbox: [minx, miny, maxx, maxy], cx: (minx + maxx) / 2, cy: (miny + maxy) / 2, visible: true,
             highlight: false };
  }

  function pointInRings(rings, x, y) {
    let inside = false;
    for (const a of rings) {
      for (let i = 0, j = a.length - 2; i < a.length; j = i, i += 2) {
        const xi = a[i], yi = a[i + 1], xj = a[j], yj = a[j + 1];
        if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) inside = !inside;
      }
    }
    return inside;
  }

  function niceMetres(m) {
    const p = Math.pow(10, Math.floor(Math.log10(m)));
    for (const f of [5, 2, 1]) if (f * p <= m) return f * p;
    return p;
  }

  class ProximityMap {
    constructor(container, options) {
      this.options = options || {};
      this.container = container;
      this.canvas = document.createElement("canvas");
      this.canvas.className = "pm-canvas";
      this.canvas.setAttribute("data-testid", "map-canvas");
      container.appendChild(this.canvas);
      this.tip = document.createElement("div");
      this.tip.className = "pm-tip";
      this.tip.hidden = true;
      container.appendChild(this.tip);
      this.ctx = this.canvas.getContext("2d");
      this.layer = document.createElement("canvas");
      this.fences = [];
      this.fenceById = new Map();
      this.beacons = [];
      this.devices = new Map();
      this.flashes = [];
      this.view = { cx: 0, cy: 0, res: 10 }; // centre (mercator m) and metres per CSS pixel
      this.layerView = null;
      this.layerDirty = true;
      this.stats = { frames: 0, fencesDrawn: 0, devicesDrawn: 0, layerRenders: 0, lastFrameMs: 0, tilesDrawn: 0 };
      this.frameTimes = [];
      this.tiles = new Map();
      this.tileUrl = this.options.tileUrl || null;
      this.onSelect = null;
      this._bindEvents();
      this._resize();
      new ResizeObserver(() => this._resize()).observe(container);
      this._tick = this._tick.bind(this);
      requestAnimationFrame(this._tick);
    }

    /* ----- data ----- */
    setFences(geojson) {
      const feats = (geojson && geojson.features) || [];
      this.fences = feats.map(parseFence);
      this.fenceById = new Map(this.fences.map((f) => [f.id, f]));
      this._buildGrid();
      this.layerDirty = true;
      return this.fences.length;
    }
    setBeacons(list) {
      this.beacons = (list || []).map((b, i) => {
        let x, y;
        if (b.position) { [x, y] = project(b.position[0], b.position[1]); }
        else {
          const f = this.fenceById.get(b.fence_id);
          if (!f) return null;
          const w = (f.bbox[2] - f.bbox[0]) * 0.25, ang = i * 2.399963;
          x = f.cx + Math.cos(ang) * w; y = f.cy + Math.sin(ang) * w;
        }
        return { ...b, x, y };
      }).filter(Boolean);
    }
    setFilter(predicate) {
      for (const f of this.fences) f.visible = predicate ? !!predicate(f) : true;
      this.layerDirty = true;
    }
    highlight(ids) {
      const set = new Set(ids || []);
      for (const f of this.fences) f.highlight = set.has(f.id);
      this.layerDirty = true;
    }
    /* rows: [device_id, lon, lat, accuracy_m, ts]; positions glide to the new place over `glideMs` */
    updateDevices(rows, glideMs) {
      const now = performance.now();
      const glide = glideMs === undefined ? 250 : glideMs;
      for (const r of rows) {
        const p = project(r[1], r[2]);
        const d = this.devices.get(r[0]);
        if (d) {
          const cur = this._devicePos(d, now);
          d.x0 = cur[0]; d.y0 = cur[1]; d.x1 = p[0]; d.y1 = p[1]; d.t0 = now; d.t1 = now + glide; d.acc = r[3]; d.ts = r[4];
        } else {
          this.devices.set(r[0], { id: r[0], x0: p[0], y0: p[1], x1: p[0], y1: p[1], t0: now, t1: now, acc: r[3], ts: r[4] });
        }
      }
    }
    removeDevicesOlderThan(ts) {
      for (const [id, d] of this.devices) if (d.ts < ts) this.devices.delete(id);
    }
    clearDevices() { this.devices.clear(); }
    /* an enter/dwell/exit/offer flash at the device (when known) or the fence */
    flash(msg) {
      const kind = msg.type === "offer" ? "offer" : msg.kind;
      const d = this.devices.get(msg.device_id);
      const f = this.fenceById.get(msg.fence_id);
      let x, y;
      if (d) { const p = this._devicePos(d, performance.now()); x = p[0]; y = p[1]; }
      else if (f) { x = f.cx; y = f.cy; } else return;
      const label = msg.probability !== undefined && msg.probability !== null
        ? kind + " " + Math.round(msg.probability * 100) + "%" : kind;
      this.flashes.push({ x, y, kind, label, start: performance.now() });
      if (this.flashes.length > 500) this.flashes.splice(0, this.flashes.length - 500);
    }

    /* ----- view ----- */
    fit(bbox) {
      const b = bbox || this._extent();
      if (!b || !isFinite(b[0])) return;
      const w = Math.max(b[2] - b[0], 50), h = Math.max(b[3] - b[1], 50);
      this.view.cx = (b[0] + b[2]) / 2; this.view.cy = (b[1] + b[3]) / 2;
      this.view.res = Math.max(w / Math.max(this.width - 40, 50), h / Math.max(this.height - 40, 50));
      this.layerDirty = true;
      this.placed = true;
    }
    _extent() {
      let b = [Infinity, Infinity, -Infinity, -Infinity];
      for (const f of this.fences) {
        b = [Math.min(b[0], f.bbox[0]), Math.min(b[1], f.bbox[1]), Math.max(b[2], f.bbox[2]), Math.max(b[3], f.bbox[3])];
      }
      return b;
    }
    toScreen(x, y) {
      return [(x - this.view.cx) / this.view.res + this.width / 2, (this.view.cy - y) / this.view.res + this.height / 2];
    }
    toWorld(sx, sy) {
      return [(sx - this.width / 2) * this.view.res + this.view.cx, this.view.cy - (sy - this.height / 2) * this.view.res];
    }
    screenOfLonLat(lon, lat) { const p = project(lon, lat); return this.toScreen(p[0], p[1]); }

    /* ----- measuring ----- */
    measureFps(ms) {
      return new Promise((resolve) => {
        const times = [];
        const t0 = performance.now();
        const step = (t) => {
          times.push(t);
          if (t - t0 < ms) requestAnimationFrame(step);
          else {
            const gaps = times.slice(1).map((v, i) => v - times[i]).sort((a, b) => a - b);
            const p95 = gaps[Math.floor(gaps.length * 0.95)] || 0;
            resolve({ fps: (times.length - 1) / ((times[times.length - 1] - times[0]) / 1000),
                      frames: times.length - 1, p95_frame_ms: p95, fences: this.stats.fencesDrawn,
                      devices: this.stats.devicesDrawn, draw_ms_last: this.stats.lastFrameMs });
          }
        };
        requestAnimationFrame(step);
      });
    }

    /* ----- internals ----- */
    _resize() {
      const dpr = window.devicePixelRatio || 1;
      const r = this.container.getBoundingClientRect();
      this.width = Math.max(100, r.width); this.height = Math.max(100, r.height);
      this.dpr = dpr;
      for (const c of [this.canvas, this.layer]) { c.width = Math.round(this.width * dpr); c.height = Math.round(this.height * dpr); }
      this.canvas.style.width = this.width + "px"; this.canvas.style.height = this.height + "px";
      this.layerDirty = true;
      if (!this.userMoved && this.fences && this.fences.length) this.fit();  // shown after being hidden
    }
    _buildGrid() {
      const b = this._extent();
      this.grid = null;
      if (!this.fences.length || !isFinite(b[0])) return;
      const n = Math.max(1, Math.ceil(Math.sqrt(this.fences.length / 4)));
      const cw = Math.max((b[2] - b[0]) / n, 1e-6), ch = Math.max((b[3] - b[1]) / n, 1e-6);
      const cells = new Array(n * n);
      for (let i = 0; i < cells.length; i++) cells[i] = [];
      this.fences.forEach((f, idx) => {
        const x0 = Math.max(0, Math.floor((f.bbox[0] - b[0]) / cw)), x1 = Math.min(n - 1, Math.floor((f.bbox[2] - b[0]) / cw));
        const y0 = Math.max(0, Math.floor((f.bbox[1] - b[1]) / ch)), y1 = Math.min(n - 1, Math.floor((f.bbox[3] - b[1]) / ch));
        for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) cells[y * n + x].push(idx);
      });
      this.grid = { b, n, cw, ch, cells };
    }
    fenceAt(x, y) {
      const g = this.grid;
      if (!g) return null;
      const cx = Math.floor((x - g.b[0]) / g.cw), cy = Math.floor((y - g.b[1]) / g.ch);
      if (cx < 0 || cy < 0 || cx >= g.n || cy >= g.n) return null;
      let best = null;
      for (const idx of g.cells[cy * g.n + cx]) {
        const f = this.fences[idx];
        if (!f.visible || x < f.bbox[0] || x > f.bbox[2] || y < f.bbox[1] || y > f.bbox[3]) continue;
        const hit = f.circle ? Math.hypot(x - f.circle.x, y - f.circle.y) <= f.circle.r : pointInRings(f.rings, x, y);
        if (hit && (!best || (f.bbox[2] - f.bbox[0]) < (best.bbox[2] - best.bbox[0]))) best = f; // the smallest on top
      }
      return best;
    }
    _devicePos(d, now) {
      if (now >= d.t1 || d.t1 <= d.t0) return [d.x1, d.y1];
      const k = (now - d.t0) / (d.t1 - d.t0);
      return [d.x0 + (d.x1 - d.x0) * k, d.y0 + (d.y1 - d.y0) * k];
    }
    _bindEvents() {
      let drag = null;
      const c = this.canvas;
      c.addEventListener("pointerdown", (e) => { this.userMoved = true; drag = { x: e.clientX, y: e.clientY, cx: this.view.cx, cy: this.view.cy }; c.setPointerCapture(e.pointerId); });
      c.addEventListener("pointermove", (e) => {
        if (drag) {
          this.view.cx = drag.cx - (e.clientX - drag.x) * this.view.res;
          this.view.cy = drag.cy + (e.clientY - drag.y) * this.view.res;
          this._settle();
        } else this._hover(e);
      });
      c.addEventListener("pointerup", () => { drag = null; this._settle(0); });
      c.addEventListener("pointerleave", () => { this.tip.hidden = true; });
      c.addEventListener("wheel", (e) => {
        e.preventDefault();
        this.userMoved = true;
        const r = c.getBoundingClientRect();
        const sx = e.clientX - r.left, sy = e.clientY - r.top;
        const before = this.toWorld(sx, sy);
        this.view.res *= Math.exp(Math.max(-1, Math.min(1, e.deltaY / 300)));
        const after = this.toWorld(sx, sy);
        this.view.cx += before[0] - after[0]; this.view.cy += before[1] - after[1];
        this._settle();
      }, { passive: false });
      c.addEventListener("click", (e) => {
        const r = c.getBoundingClientRect();
        const w = this.toWorld(e.clientX - r.left, e.clientY - r.top);
        const f = this.fenceAt(w[0], w[1]);
        if (this.onSelect) this.onSelect(f);
      });
    }
    _settle(delay) {  // redraw the fence layer when the gesture pauses; meanwhile the old layer is moved
      clearTimeout(this._settleTimer);
      this._settleTimer = setTimeout(() => { this.layerDirty = true; }, delay === undefined ? 120 : delay);
    }
    _hover(e) {
      const r = this.canvas.getBoundingClientRect();
      const sx = e.clientX - r.left, sy = e.clientY - r.top;
      const w = this.toWorld(sx, sy);
      let html = null;
      const now = performance.now();
      for (const b of this.beacons) {
        const p = this.toScreen(b.x, b.y);
        if (Math.hypot(p[0] - sx, p[1] - sy) < 6) { html = `<b>beacon</b> ${esc(b.key)}<br>${esc(b.fence_id)} ${esc(b.zone || "")} · ${esc(b.status || "")}`; break; }
      }
      if (!html) {
        for (const d of this.devices.values()) {
          const q = this._devicePos(d, now), p = this.toScreen(q[0], q[1]);
          if (Math.abs(p[0] - sx) < 4 && Math.abs(p[1] - sy) < 4) { html = `<b>device</b> ${esc(d.id)}<br>±${Math.round(d.acc)} m`; break; }
        }
      }
      if (!html) {
        const f = this.fenceAt(w[0], w[1]);
        if (f) html = `<b>${esc(f.id)}</b> ${esc(f.name)}<br>${f.tags.length ? "tags: " + f.tags.map(esc).join(", ") : "no tags"}`
          + (f.circle ? `<br>circle ${Math.round(f.props.radius_m)} m` : "");
      }
      this.tip.hidden = !html;
      if (html) { this.tip.innerHTML = html; this.tip.style.left = (sx + 12) + "px"; this.tip.style.top = (sy + 12) + "px"; }
    }
    _renderLayer() {
      const ctx = this.layer.getContext("2d");
      const dpr = this.dpr;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, this.layer.width, this.layer.height);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      const v = this.view;
      const halfW = this.width / 2 * v.res, halfH = this.height / 2 * v.res;
      const vx0 = v.cx - halfW, vx1 = v.cx + halfW, vy0 = v.cy - halfH, vy1 = v.cy + halfH;
      const plain = new Path2D(), lit = new Path2D();
      let drawn = 0;
      const ox = this.width / 2 - v.cx / v.res, oy = this.height / 2 + v.cy / v.res, k = 1 / v.res;
      const labels = [];
      for (const f of this.fences) {
        if (!f.visible || f.bbox[2] < vx0 || f.bbox[0] > vx1 || f.bbox[3] < vy0 || f.bbox[1] > vy1) continue;
        drawn++;
        const path = f.highlight ? lit : plain;
        const pxSize = (f.bbox[2] - f.bbox[0]) * k;
        if (pxSize < 1.5) { path.rect(f.cx * k + ox - 0.75, oy - f.cy * k - 0.75, 1.5, 1.5); continue; }
        if (f.circle) {
          const sx = f.circle.x * k + ox, sy = oy - f.circle.y * k;
          path.moveTo(sx + f.circle.r * k, sy);
          path.arc(sx, sy, f.circle.r * k, 0, Math.PI * 2);
        }
        for (const a of f.rings) {
          path.moveTo(a[0] * k + ox, oy - a[1] * k);
          for (let i = 2; i < a.length; i += 2) path.lineTo(a[i] * k + ox, oy - a[i + 1] * k);
          path.closePath();
        }
        if (pxSize > 60 && labels.length < 400) labels.push(f);
      }
      ctx.fillStyle = "rgba(49,130,189,0.18)"; ctx.strokeStyle = "rgba(33,102,172,0.9)"; ctx.lineWidth = 1;
      ctx.fill(plain, "evenodd"); ctx.stroke(plain);
      ctx.fillStyle = "rgba(240,59,32,0.25)"; ctx.strokeStyle = "rgba(189,0,38,0.95)"; ctx.lineWidth = 2;
      ctx.fill(lit, "evenodd"); ctx.stroke(lit);
      ctx.fillStyle = "#222"; ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "center";
      for (const f of labels) ctx.fillText(f.name, f.cx * k + ox, oy - f.cy * k);
      this.layerView = { cx: v.cx, cy: v.cy, res: v.res };
      this.stats.fencesDrawn = drawn;
      this.stats.layerRenders++;
      this.layerDirty = false;
    }
    _drawTiles(ctx) {
      if (!this.tileUrl || !this.placed) return;  // no tiles for the placeholder view before the first fit
      const v = this.view;
      const z = Math.max(0, Math.min(22, Math.round(Math.log2(2 * Math.PI * R / 256 / v.res))));
      const n = Math.pow(2, z), size = 2 * Math.PI * R / n;
      const [x0w, y1w] = this.toWorld(0, 0), [x1w, y0w] = this.toWorld(this.width, this.height);
      const tx0 = Math.floor((x0w + Math.PI * R) / size), tx1 = Math.floor((x1w + Math.PI * R) / size);
      const ty0 = Math.floor((Math.PI * R - y1w) / size), ty1 = Math.floor((Math.PI * R - y0w) / size);
      if ((tx1 - tx0 + 1) * (ty1 - ty0 + 1) > 64) return;
      for (let ty = Math.max(0, ty0); ty <= Math.min(n - 1, ty1); ty++) {
        for (let tx = tx0; tx <= tx1; tx++) {
          const wx = ((tx % n) + n) % n;
          const url = this.tileUrl.replace("{z}", z).replace("{x}", wx).replace("{y}", ty);
          let img = this.tiles.get(url);
          if (!img) {
            img = new Image(); img.src = url; this.tiles.set(url, img);  // no CORS needed: pixels are never read
            if (this.tiles.size > 400) this.tiles.delete(this.tiles.keys().next().value);
          }
          if (!img.complete || !img.naturalWidth) continue;
          const p = this.toScreen(tx * size - Math.PI * R, Math.PI * R - ty * size);
          ctx.drawImage(img, p[0], p[1], size / v.res + 0.5, size / v.res + 0.5);
          this.stats.tilesDrawn++;
        }
      }
    }
    _drawScale(ctx) {
      const lat = unproject(this.view.cx, this.view.cy)[1];
      const mPerPx = this.view.res * Math.cos(lat * Math.PI / 180);
      const metres = niceMetres(mPerPx * 120);
      const px = metres / mPerPx;
      const x = 12, y = this.height - 16;
      ctx.fillStyle = "rgba(255,255,255,0.8)"; ctx.fillRect(x - 4, y - 16, px + 8, 22);
      ctx.strokeStyle = "#222"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.moveTo(x, y - 4); ctx.lineTo(x, y); ctx.lineTo(x + px, y); ctx.lineTo(x + px, y - 4); ctx.stroke();
      ctx.fillStyle = "#222"; ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "left";
      ctx.fillText(metres >= 1000 ? metres / 1000 + " km" : metres + " m", x + 2, y - 5);
      this.scaleBar = { metres, px };
      if (this.options.attribution) { ctx.textAlign = "right"; ctx.fillText(this.options.attribution, this.width - 6, this.height - 6); }
    }
    _tick(t) {
      const started = performance.now();
      const ctx = this.ctx, dpr = this.dpr;
      if (this.layerDirty) this._renderLayer();
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = this.options.background || "#f4f1ea";
      ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      this._drawTiles(ctx);
      const lv = this.layerView;
      if (lv) {  // the cached fence layer, moved and scaled to the current view
        const s = lv.res / this.view.res;
        const dx = (lv.cx - this.view.cx) / this.view.res, dy = (this.view.cy - lv.cy) / this.view.res;
        ctx.drawImage(this.layer, this.width / 2 * (1 - s) + dx, this.height / 2 * (1 - s) + dy, this.width * s, this.height * s);
      }
      const v = this.view, k = 1 / v.res, ox = this.width / 2 - v.cx * k, oy = this.height / 2 + v.cy * k;
      // beacons
      ctx.fillStyle = "#542788";
      for (const b of this.beacons) {
        const x = b.x * k + ox, y = oy - b.y * k;
        ctx.beginPath(); ctx.moveTo(x, y - 5); ctx.lineTo(x + 4, y + 3); ctx.lineTo(x - 4, y + 3); ctx.closePath();
        ctx.fillStyle = b.status && b.status !== "ok" ? "#e08214" : "#542788"; ctx.fill();
      }
      // devices
      const now = performance.now();
      const dots = new Path2D();
      let nd = 0;
      for (const d of this.devices.values()) {
        const p = this._devicePos(d, now);
        const x = p[0] * k + ox, y = oy - p[1] * k;
        if (x < -5 || y < -5 || x > this.width + 5 || y > this.height + 5) continue;
        dots.rect(x - 2, y - 2, 4, 4); nd++;
      }
      ctx.fillStyle = "#252525"; ctx.fill(dots);
      this.stats.devicesDrawn = nd;
      // flashes: a ring that grows and fades over 1.5 s, with the kind (and probability)
      const keep = [];
      ctx.textAlign = "left"; ctx.font = "11px system-ui, sans-serif";
      for (const f of this.flashes) {
        const age = (now - f.start) / 1500;
        if (age >= 1) continue;
        keep.push(f);
        const x = f.x * k + ox, y = oy - f.y * k;
        ctx.globalAlpha = 1 - age;
        ctx.strokeStyle = KIND_COLOURS[f.kind] || "#000"; ctx.lineWidth = 3;
        ctx.beginPath(); ctx.arc(x, y, 6 + 24 * age, 0, Math.PI * 2); ctx.stroke();
        ctx.fillStyle = KIND_COLOURS[f.kind] || "#000"; ctx.fillText(f.label, x + 10, y - 10);
        ctx.globalAlpha = 1;
      }
      this.flashes = keep;
      this._drawScale(ctx);
      this.stats.frames++;
      this.stats.lastFrameMs = performance.now() - started;
      requestAnimationFrame(this._tick);
    }
  }

  function esc(s) {
    return String(s === undefined || s === null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  window.ProximityMap = ProximityMap;
  window.ProximityMap.project = project;
  window.ProximityMap.esc = esc;
})();
