// WebSocket client for the viewer protocol (see featvis_fast/viewer/protocol.py) and the
// client side of "latest wins": a Slot keeps at most one request in flight.

const TOKEN = new URLSearchParams(location.search).get("token");

/** `path` with the page's token appended (the cookie also authorizes; this is belt and braces). */
export function withToken(path, params = {}) {
  const url = new URL(path, location.href);
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) url.searchParams.set(key, String(value));
  }
  if (TOKEN) url.searchParams.set("token", TOKEN);
  return url;
}

/** Split a binary message: uint32 LE header length, JSON header, payload. */
export function decodeBinary(buffer) {
  const view = new DataView(buffer);
  const n = view.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, n)));
  let offset = 4 + n;
  let rgba = null;
  let indices = null; // "index8" frames: one colour-map index per cell, coloured by the page
  if (header.type === "frame") {
    if (header.encoding === "index8") indices = new Uint8Array(buffer, offset, header.map_bytes);
    else rgba = new Uint8ClampedArray(buffer, offset, header.map_bytes);
    offset += header.map_bytes;
  }
  const count = header.vector_bytes / 4;
  const vector = new Float32Array(count);
  for (let i = 0; i < count; i++) vector[i] = view.getFloat32(offset + 4 * i, true);
  return { header, rgba, indices, vector };
}

/**
 * One WebSocket with reconnects. Handlers: open, close, frame({header, rgba, indices, vector}),
 * vector({header, vector}), layer_ready(msg), error(msg).
 */
export class Connection {
  constructor(handlers) {
    this.handlers = handlers;
    this.seq = 0;
    this.ws = null;
    this.retryMs = 500;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    const url = withToken("/ws");
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      this.retryMs = 500;
      this.handlers.open();
    };
    ws.onclose = (event) => {
      this.ws = null;
      this.handlers.close(event);
      setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 8000);
    };
    ws.onmessage = (event) => this.dispatch(event.data);
    this.ws = ws;
  }

  dispatch(data) {
    if (typeof data === "string") {
      const msg = JSON.parse(data);
      (this.handlers[msg.type] || (() => {}))(msg);
      return;
    }
    const decoded = decodeBinary(data);
    (this.handlers[decoded.header.type] || (() => {}))(decoded);
  }

  /** Send a message with a fresh seq; returns the seq. */
  send(message) {
    const seq = ++this.seq;
    this.ws.send(JSON.stringify({ ...message, seq }));
    return seq;
  }
}

/**
 * The client half of a server slot where a newer request replaces a waiting one: at most one
 * request in flight; while it is, only the newest wish per key is kept. `want` takes a builder
 * so a message is made at send time with the settings current then.
 */
export class Slot {
  constructor(conn, { priority = [], blocked = () => false } = {}) {
    this.conn = conn;
    this.priority = priority;
    this.blocked = blocked;
    this.pending = new Map();
    this.inflight = null;
  }

  want(key, build, meta = {}) {
    this.pending.delete(key);
    this.pending.set(key, { key, build, meta });
    this.pump();
  }

  drop(key) {
    this.pending.delete(key);
  }

  pump() {
    if (this.inflight || !this.conn.isOpen || this.blocked() || this.pending.size === 0) return;
    const key = this.priority.find((k) => this.pending.has(k)) ?? this.pending.keys().next().value;
    const entry = this.pending.get(key);
    this.pending.delete(key);
    const message = entry.build();
    if (!message) return this.pump();
    const seq = this.conn.send(message);
    this.inflight = { ...entry, message, seq, sentAt: performance.now() };
  }

  /** The in-flight entry answered by `seq` (then the next wish goes out), else null. */
  settle(seq) {
    if (!this.inflight || this.inflight.seq !== seq) return null;
    const done = this.inflight;
    this.inflight = null;
    this.pump();
    return done;
  }

  /** Forget the in-flight request (connection lost, or an unattributable error); re-wish it. */
  reset() {
    const lost = this.inflight;
    this.inflight = null;
    if (lost && !this.pending.has(lost.key)) this.pending.set(lost.key, lost);
  }
}

/** The photo of an image as a loaded <img>. */
export function loadPhoto(id) {
  return new Promise((resolve, reject) => {
    const photo = new Image();
    photo.onload = () => resolve(photo);
    photo.onerror = () => reject(new Error(`could not load image ${id}`));
    photo.src = withToken(`/api/images/${encodeURIComponent(id)}`).href;
  });
}

/** fetch, then the JSON body ({} when there is none); throws Error(detail) unless ok. */
export async function fetchJson(url, options = {}) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${body.detail || response.statusText}`);
  return body;
}

/** Fetch url and save it as a file (errors carry the server's detail). */
export async function downloadAs(url, filename) {
  const response = await fetch(url);
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(`download failed (HTTP ${response.status}): ${body.detail || response.statusText}`);
  }
  const href = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = href;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 30000);
}

/** uint8 colour-map indices -> RGBA bytes through a (256, 4) LUT packed as 32-bit words. */
export function applyLut(indices, lut32) {
  const out = new Uint32Array(indices.length);
  for (let i = 0; i < indices.length; i++) out[i] = lut32[indices[i]];
  return new Uint8ClampedArray(out.buffer);
}

/** A LUT given as 256 [r, g, b, a] rows, packed for applyLut (byte order = the platform's). */
export function packLut(rows) {
  const bytes = new Uint8Array(rows.length * 4);
  rows.forEach((rgba, i) => bytes.set(rgba, i * 4));
  return new Uint32Array(bytes.buffer);
}
