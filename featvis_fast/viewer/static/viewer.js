// featvis viewer page: one or two panels of a similarity heat map over an image, driven by
// hovering, plus feature-vector bar charts. Protocol: featvis_fast/viewer/protocol.py.

import { VectorCharts, drawLut, fmt } from "./charts.js";
import { ViewerClient } from "./client.js";
import { wireCanvas, wireChart, wireKeys } from "./input.js";
import { applyLut, downloadAs, fetchJson, loadPhoto, packLut, withToken } from "./net.js";
import { PanelView, View } from "./view.js";

const $ = (id) => document.getElementById(id);
const MAX_LATENCIES = 20000;

const ui = {
  image: $("image-select"),
  upload: $("upload"),
  uploadLabel: $("upload-label"),
  metric: $("metric-select"),
  colormap: $("colormap-select"),
  opacity: $("opacity"),
  stretchMode: $("stretch-mode"),
  stretchLo: $("stretch-lo"),
  stretchHi: $("stretch-hi"),
  second: $("second-panel"),
  panMode: $("pan-mode"),
  fit: $("fit"),
  unpin: $("unpin"),
  download: $("download"),
  statusMsg: $("status-msg"),
  statusTiming: $("status-timing"),
};

const app = {
  state: null, // GET /api/state
  image: null, // info of the shown image
  photo: null, // its <img>
  loads: 0, // image switches started (the newest wins)
  ref: null, // heat-map reference pixel while not pinned (the latest hover)
  pin: null, // pinned pixel
  cursor: null, // latest hovered pixel (drawn as a cross while pinned)
  stretch: "minmax", // the last valid stretch
  panMode: false,
  spaceDown: false,
  drawQueued: false,
};

class Panel {
  constructor(index) {
    this.index = index;
    this.layer = null;
    this.channel = null; // a single channel's map instead of the similarity map
    this.lastFrame = null; // {header, rgba}: rgba is the painted map (index8 frames: after the LUT)
    this.shownRef = null; // image pixel the shown map refers to
    this.paintedSeq = 0;
    this.timing = null; // {server, rtt} of the last painted frame, ms
    this.element = $(`panel-${index}`);
    this.select = $(index === 0 ? "layer-select" : "layer1-select");
    this.info = $(`info-${index}`);
    this.lo = $(`lo-${index}`);
    this.hi = $(`hi-${index}`);
    this.lut = this.element.querySelector(".lut");
    this.view = new PanelView($(`view-${index}`));
  }

  get visible() {
    return this.index === 0 || ui.second.checked;
  }
}

const view = new View(); // zoom/pan, shared by both panels
const panels = [new Panel(0), new Panel(1)];
const charts = new VectorCharts({
  hovered: $("chart-hovered"),
  pinned: $("chart-pinned"),
  hoveredInfo: $("chart-hovered-info"),
  pinnedInfo: $("chart-pinned-info"),
});
const client = new ViewerClient({
  open: onOpen, close: onClose, frame: onFrame, vector: onVector, layerReady: onLayerReady, error: onError,
});

// ---- test hooks (used by the Playwright test and the latency benchmark) ------------------------
const hooks = {
  ready: false, // state loaded, WebSocket open, first image drawn with its first heat map
  panels, // each has lastFrame = {header, rgba}
  framesPainted: 0,
  // {seq, panel, ms, server_ms, queued_ms, rtt_ms, paint_ms}: pointer event -> frame painted, split
  // into waiting for the in-flight frame, send -> received, received -> painted
  latencies: [],
  heatCanvas: (panel) => panels[panel].view.heat,
  hoverAt: (panel, x, y) => {
    checkPanel(panel);
    hover(x, y, performance.now());
  },
  clickAt: (panel, x, y) => {
    checkPanel(panel);
    click(x, y);
  },
  unpin: () => unpin(),
  setOption,
  downloadUrl: () => heatmapUrl().href,
  view,
  get state() {
    return app.state;
  },
  get image() {
    return app.image && app.image.id;
  },
  get pinned() {
    return app.pin;
  },
};
window.featvis = hooks;

function checkPanel(panel) {
  if (panel !== 0 && panel !== 1) throw new Error(`panel must be 0 or 1, got ${panel}`);
}

// Waiting for the first heat map too means nothing is in flight when a test starts hovering.
function checkReady() {
  if (!hooks.ready && app.state && app.photo && client.isOpen && hooks.framesPainted > 0) hooks.ready = true;
}

// ---- status -----------------------------------------------------------------------------------
function setMessage(text, kind = "info") {
  ui.statusMsg.textContent = text;
  ui.statusMsg.className = kind;
}

const ms = (value) => (value === null || value === undefined ? "–" : `${value.toFixed(1)} ms`);

/** Only assign text that changed: every assignment costs the page a layout. */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

const TIMING_INTERVAL_MS = 250; // the timing line updates at most 4x per second

function updateTiming() {
  const now = performance.now();
  if (now - (app.timingShownAt || 0) < TIMING_INTERVAL_MS) {
    if (!app.timingQueued) {
      app.timingQueued = true;
      setTimeout(() => {
        app.timingQueued = false;
        updateTiming();
      }, TIMING_INTERVAL_MS);
    }
    return;
  }
  app.timingShownAt = now;
  const parts = panels
    .filter((p) => p.visible && p.timing)
    .map((p) => `panel ${p.index}: server ${ms(p.timing.server)}, round trip ${ms(p.timing.rtt)}`);
  if (app.state) parts.push(`${app.state.device} · ${app.state.dtype}`);
  setText(ui.statusTiming, parts.join("  |  "));
}

// ---- requests ---------------------------------------------------------------------------------
const reference = () => app.pin || app.ref;
const center = () => ({ x: app.image.width / 2, y: app.image.height / 2 });
const inside = (x, y) =>
  app.image !== null && Number.isFinite(x) && Number.isFinite(y) &&
  x >= 0 && y >= 0 && x < app.image.width && y < app.image.height;

/** Ask for a panel's frame at pos; t: performance.now() of the pointer event behind it, or null. */
function wantFrame(panel, pos, t = null) {
  if (!panel.visible || !app.image || !pos) return;
  const image = app.image.id;
  const build = () => (app.image && app.image.id === image ? {
    type: "hover", panel: panel.index, image, layer: panel.layer, x: pos.x, y: pos.y,
    metric: ui.metric.value, colormap: ui.colormap.value, stretch: app.stretch, channel: panel.channel,
    encoding: "index8", // a quarter of the bytes of RGBA; the LUT is applied here
  } : null);
  client.wantFrame(panel.index, build, { pos, t, pinned: app.pin !== null });
}

function refreshFrames() {
  for (const panel of panels) wantFrame(panel, reference());
}

/** The raw vector at pos in panel 0's layer (the charts' layer); purpose: "pin" | "hover". */
function wantVector(purpose, pos) {
  const image = app.image.id;
  const layer = panels[0].layer;
  const build = () => (app.image && app.image.id === image && panels[0].layer === layer
    ? { type: "vector", image, layer, x: pos.x, y: pos.y } : null);
  client.wantVector(purpose, build);
}

/** Compute a panel's layer first (the status says so), then ask for its frame. */
function startLayer(panel) {
  if (!panel.visible || !app.image) return;
  setMessage(`computing layer ${panel.layer}…`, "busy");
  client.computeLayer(panel.index, app.image.id, panel.layer);
  wantFrame(panel, reference() || center());
}

// ---- server messages --------------------------------------------------------------------------
function onOpen() {
  checkReady();
  if (ui.statusMsg.textContent.startsWith("connection lost")) setMessage("reconnected");
}

function onClose() {
  setMessage("connection lost; reconnecting…", "error");
}

const packedLuts = new Map(); // colour map name -> LUT packed for applyLut

function onFrame({ header, rgba, indices, vector, request }) {
  const received = performance.now();
  const panel = panels[header.panel];
  if (!app.image || header.image !== app.image.id || header.layer !== panel.layer) return;
  if (!request && header.seq < panel.paintedSeq) return;
  if (indices) {
    if (!packedLuts.has(header.colormap)) packedLuts.set(header.colormap, packLut(app.state.colormaps[header.colormap]));
    rgba = applyLut(indices, packedLuts.get(header.colormap));
  }
  panel.lastFrame = { header, rgba };
  panel.shownRef = request ? request.meta.pos : cellCenter(header);
  panel.paintedSeq = header.seq;
  panel.view.putHeat(rgba, header.width, header.height);
  drawPanel(panel);
  // "Painted" is taken right after the synchronous drawImage calls, not at the next vsync.
  const painted = performance.now();
  hooks.framesPainted++;
  const t = request ? request.meta.t : null;
  if (t !== null) {
    hooks.latencies.push({
      seq: header.seq, panel: panel.index, ms: painted - t, server_ms: header.server_ms,
      server_queued_ms: header.queued_ms,
      queued_ms: request.sentAt - t, rtt_ms: received - request.sentAt, paint_ms: painted - received,
    });
    if (hooks.latencies.length > MAX_LATENCIES) hooks.latencies.shift();
  }
  panel.timing = { server: header.server_ms, rtt: request ? received - request.sentAt : null };
  showFrameInfo(panel, header);
  checkReady();
  if (panel.index === 0) {
    const pinnedFrame = request ? request.meta.pinned : app.pin !== null;
    if (pinnedFrame === (app.pin !== null)) charts.set(pinnedFrame ? "pinned" : "hovered", vector, chartLabel(header));
  }
  updateTiming();
}

function onVector({ header, vector, request }) {
  if (!request || !app.pin || !app.image || header.image !== app.image.id || header.layer !== panels[0].layer) return;
  charts.set(request.key === "pin" ? "pinned" : "hovered", vector, chartLabel(header));
}

function onLayerReady(msg) {
  if (panels.some((p) => client.isComputing(p.index))) return;
  setMessage(`layer ${msg.layer}: ${msg.height}×${msg.width} cells, ${msg.channels} channels (${ms(msg.server_ms)})`);
}

function onError(msg) {
  setMessage(msg.message, "error");
}

function cellCenter(header) {
  const [row, col] = header.cell;
  return { x: ((col + 0.5) * app.image.width) / header.width, y: ((row + 0.5) * app.image.height) / header.height };
}

function chartLabel(header) {
  const [row, col] = header.cell;
  return `${header.layer} · cell ${row},${col} · ${header.channels} ch`;
}

// ---- drawing ----------------------------------------------------------------------------------
function drawPanel(panel) {
  if (!panel.visible) return;
  const marks = { ref: panel.shownRef, pin: app.pin, cursor: app.pin ? app.cursor : null };
  panel.view.draw(app.photo, view, Number(ui.opacity.value), marks);
}

function drawAll() {
  app.drawQueued = false;
  for (const panel of panels) drawPanel(panel);
}

function scheduleDraw() {
  if (app.drawQueued) return;
  app.drawQueued = true;
  requestAnimationFrame(drawAll);
}

function showFrameInfo(panel, header) {
  setText(panel.lo, fmt(header.lo));
  setText(panel.hi, fmt(header.hi));
  const what = header.channel === null ? header.metric : `channel ${header.channel}`;
  setText(panel.info, `${what} · ${header.height}×${header.width} cells · ${header.channels} ch`);
}

function fitView() {
  const canvas = panels[0].view.canvas;
  if (app.photo && canvas.clientWidth > 0) {
    view.fit(app.photo.naturalWidth, app.photo.naturalHeight, canvas.clientWidth, canvas.clientHeight);
  }
}

function drawLegends() {
  const lut = app.state.colormaps[ui.colormap.value];
  if (lut) for (const panel of panels) drawLut(panel.lut, lut);
}

// ---- interaction ------------------------------------------------------------------------------
/** A pointer at image pixel (x, y) of either panel: both panels follow (shared cursor). */
function hover(x, y, t) {
  if (!inside(x, y)) return;
  app.cursor = { x, y };
  if (app.pin) {
    wantVector("hover", app.cursor); // the maps stay at the pin; only the hovered chart follows
    scheduleDraw();
    return;
  }
  app.ref = app.cursor;
  for (const panel of panels) wantFrame(panel, app.ref, t);
}

function click(x, y) {
  if (!inside(x, y)) return;
  if (app.pin) {
    unpin();
    hover(x, y, performance.now());
  } else {
    pin(x, y);
  }
}

function pin(x, y) {
  app.pin = { x, y };
  app.ref = app.pin;
  app.cursor = app.pin;
  ui.unpin.disabled = false;
  wantVector("pin", app.pin);
  refreshFrames();
  scheduleDraw();
}

function unpin() {
  if (!app.pin) return;
  app.pin = null;
  client.dropVectors();
  ui.unpin.disabled = true;
  charts.clear("pinned");
  if (app.cursor) app.ref = app.cursor;
  refreshFrames();
  scheduleDraw();
}

/** Hovering a bar shows that channel's map in panel 0 (the charts' layer); null: similarity. */
function showChannel(k, t) {
  const panel = panels[0];
  if (panel.channel === k) return;
  panel.channel = k;
  charts.channel = k;
  charts.draw();
  wantFrame(panel, reference(), t);
}

function setLayer(panel, layer) {
  requireOption(panel.select, layer, panel.index === 0 ? "layer" : "layer1");
  panel.select.value = layer;
  if (panel.layer === layer) return;
  panel.layer = layer;
  if (panel.index === 0) {
    panel.channel = charts.channel = null;
    charts.clear();
    if (app.pin) wantVector("pin", app.pin);
  }
  startLayer(panel);
}

function setSecondPanel(on) {
  ui.second.checked = on;
  panels[1].element.hidden = !on;
  if (on) {
    startLayer(panels[1]);
  } else {
    client.dropFrame(1);
    client.cancelLayer(1);
    updateTiming();
  }
}

function onStretch(prefill = false) {
  const fixed = ui.stretchMode.value === "fixed";
  ui.stretchLo.disabled = !fixed;
  ui.stretchHi.disabled = !fixed;
  if (fixed && prefill && panels[0].lastFrame) {
    ui.stretchLo.value = Number(panels[0].lastFrame.header.lo.toPrecision(4));
    ui.stretchHi.value = Number(panels[0].lastFrame.header.hi.toPrecision(4));
  }
  if (fixed) {
    const lo = Number.parseFloat(ui.stretchLo.value);
    const hi = Number.parseFloat(ui.stretchHi.value);
    if (!(Number.isFinite(lo) && Number.isFinite(hi) && lo < hi)) {
      setMessage("fixed stretch needs two numbers with low < high", "error");
      return;
    }
    app.stretch = [lo, hi];
  } else {
    app.stretch = "minmax";
  }
  refreshFrames();
}

function requireOption(select, value, name) {
  if (![...select.options].some((o) => o.value === value)) {
    throw new Error(`unknown ${name} ${JSON.stringify(value)}`);
  }
}

/** Test hook for the controls: acts as the control would, and updates it. */
function setOption(name, value) {
  switch (name) {
    case "image":
      return setImage(value);
    case "layer":
      return setLayer(panels[0], value);
    case "layer1":
      return setLayer(panels[1], value);
    case "metric":
    case "colormap":
      requireOption(ui[name], value, name);
      ui[name].value = value;
      ui[name].dispatchEvent(new Event("change"));
      return undefined;
    case "opacity":
      ui.opacity.value = String(value);
      ui.opacity.dispatchEvent(new Event("input"));
      return undefined;
    case "stretch":
      ui.stretchMode.value = value === "minmax" ? "minmax" : "fixed";
      if (value !== "minmax") [ui.stretchLo.value, ui.stretchHi.value] = value.map(String);
      return onStretch();
    case "secondPanel":
    case "second-panel":
      return setSecondPanel(Boolean(value));
    default:
      throw new Error(`unknown option ${JSON.stringify(name)}`);
  }
}

// ---- images -----------------------------------------------------------------------------------
function option(value, label) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = label; // server-provided names go in as text, never as HTML
  return element;
}

function fillSelect(select, values, labels = values) {
  select.replaceChildren(...values.map((value, i) => option(value, labels[i])));
}

/** Layer choices for an image, keeping each panel's layer when the image has it too. */
function chooseLayers(info) {
  const layers = info.layers || app.state.layers;
  const defaults = [layers[Math.floor((layers.length - 1) * 0.6)], layers[Math.floor((layers.length - 1) * 0.9)]];
  for (const panel of panels) {
    fillSelect(panel.select, layers);
    if (!layers.includes(panel.layer)) panel.layer = defaults[panel.index];
    panel.select.value = panel.layer;
  }
}

async function setImage(id) {
  const info = app.state.images.find((i) => i.id === id);
  if (!info) throw new Error(`unknown image ${JSON.stringify(id)}`);
  ui.image.value = id;
  const load = ++app.loads;
  setMessage(`loading ${info.name}…`, "busy");
  const photo = await loadPhoto(id);
  if (load !== app.loads) return;
  app.image = info;
  app.photo = photo;
  app.pin = app.ref = app.cursor = null;
  ui.unpin.disabled = true;
  client.dropVectors();
  for (const panel of panels) {
    client.dropFrame(panel.index);
    panel.view.clearHeat();
    panel.shownRef = null;
    panel.channel = null;
  }
  charts.channel = null;
  charts.clear();
  chooseLayers(info);
  fitView();
  drawAll();
  for (const panel of panels) startLayer(panel);
  checkReady();
}

async function uploadFile(file) {
  setMessage(`uploading ${file.name}…`, "busy");
  const info = await fetchJson(withToken("/api/images", { name: file.name }), {
    method: "POST",
    body: file,
    headers: { "Content-Type": file.type || "application/octet-stream" },
  }).catch((err) => {
    throw new Error(`upload of ${file.name} failed: ${err.message}`);
  });
  app.state.images.push(info);
  ui.image.append(option(info.id, info.name));
  await setImage(info.id);
}

/** /api/heatmap.png for panel 0's current view (at the pin, else the last hovered pixel). */
function heatmapUrl() {
  const panel = panels[0];
  const pos = reference() || center();
  const params = {
    image: app.image.id, layer: panel.layer, x: pos.x, y: pos.y, metric: ui.metric.value,
    colormap: ui.colormap.value, channel: panel.channel, alpha: ui.opacity.value,
  };
  if (Array.isArray(app.stretch)) [params.lo, params.hi] = app.stretch;
  return withToken("/api/heatmap.png", params);
}

async function download() {
  if (!app.image) return;
  await downloadAs(heatmapUrl(), `${app.image.id}_${panels[0].layer}_${ui.metric.value}.png`);
  setMessage("heat map downloaded");
}

// ---- wiring -----------------------------------------------------------------------------------
/** Run an action from a control; any failure goes to the status line. */
function report(action) {
  const fail = (err) => setMessage(String((err && err.message) || err), "error");
  try {
    return Promise.resolve(action()).catch(fail);
  } catch (err) {
    return fail(err);
  }
}

function wirePanel(panel) {
  const at = (clientX, clientY) => panel.view.toImage(view, clientX, clientY);
  wireCanvas(panel.view.canvas, {
    hover: (cx, cy, t) => {
      const { x, y } = at(cx, cy);
      hover(x, y, t);
    },
    click: (cx, cy) => {
      const { x, y } = at(cx, cy);
      click(x, y);
    },
    pan: (dx, dy) => {
      view.panBy(dx, dy);
      scheduleDraw();
    },
    zoom: (px, py, factor) => {
      view.zoomAt(px, py, factor);
      scheduleDraw();
    },
    panning: (e) => e.shiftKey || app.spaceDown || app.panMode,
  });
}

function setPanMode(on) {
  app.panMode = on;
  ui.panMode.setAttribute("aria-pressed", String(on));
  for (const panel of panels) panel.view.canvas.classList.toggle("panning", on || app.spaceDown);
}

function wireControls() {
  ui.image.addEventListener("change", () => report(() => setImage(ui.image.value)));
  for (const panel of panels) {
    panel.select.addEventListener("change", () => report(() => setLayer(panel, panel.select.value)));
  }
  ui.metric.addEventListener("change", refreshFrames);
  ui.colormap.addEventListener("change", () => {
    drawLegends();
    refreshFrames();
  });
  ui.opacity.addEventListener("input", scheduleDraw);
  ui.stretchMode.addEventListener("change", () => onStretch(true));
  ui.stretchLo.addEventListener("change", () => onStretch());
  ui.stretchHi.addEventListener("change", () => onStretch());
  ui.second.addEventListener("change", () => setSecondPanel(ui.second.checked));
  ui.panMode.addEventListener("click", () => setPanMode(!app.panMode));
  ui.fit.addEventListener("click", () => {
    fitView();
    scheduleDraw();
  });
  ui.unpin.addEventListener("click", unpin);
  ui.download.addEventListener("click", () => report(download));
  ui.upload.addEventListener("change", () => {
    const file = ui.upload.files[0];
    ui.upload.value = ""; // the same file can be chosen again
    if (file) report(() => uploadFile(file));
  });
  wireKeys({
    escape: unpin,
    space: (down) => {
      app.spaceDown = down;
      setPanMode(app.panMode);
    },
  });
  panels.forEach(wirePanel);
  wireChart(charts.hovered, showChannel);
  wireChart(charts.pinned, showChannel);
  const resized = new ResizeObserver(() => {
    if (view.fitted) fitView();
    drawAll();
    charts.draw();
  });
  for (const panel of panels) resized.observe(panel.view.canvas);
  resized.observe(charts.hovered.canvas);
}

async function init() {
  wireControls();
  client.connect();
  app.state = await fetchJson(withToken("/api/state"));
  fillSelect(ui.image, app.state.images.map((i) => i.id), app.state.images.map((i) => i.name));
  fillSelect(ui.metric, app.state.metrics);
  fillSelect(ui.colormap, Object.keys(app.state.colormaps));
  ui.uploadLabel.hidden = !app.state.can_upload;
  drawLegends();
  updateTiming();
  if (app.state.images.length === 0) {
    setMessage(app.state.can_upload ? "no images yet: upload one" : "no images loaded", "error");
    return;
  }
  await setImage(app.state.images[0].id);
}

report(init);
