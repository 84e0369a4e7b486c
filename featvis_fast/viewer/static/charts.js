// Bar charts of feature vectors and the colour bar legend.

const BAR = "#6fa8dc";
const BAR_HOT = "#ffd166";
const AXIS = "#555b66";
const TEXT = "#9aa3ad";

/** Fit a canvas's backing store to its CSS size; returns the 2D context in CSS pixels. */
export function fitCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/** [lo, hi] covering zero and every finite value of the given vectors. */
export function jointRange(...vectors) {
  let lo = 0;
  let hi = 0;
  for (const v of vectors) {
    if (!v) continue;
    for (const x of v) {
      if (x < lo) lo = x;
      if (x > hi) hi = x;
    }
  }
  return hi > lo ? [lo, hi] : [-1, 1];
}

export class BarChart {
  constructor(canvas, emptyText) {
    this.canvas = canvas;
    this.emptyText = emptyText;
    this.vector = null;
    this.label = "";
    this.highlight = null;
    this.range = [-1, 1];
  }

  set(vector) {
    this.vector = vector;
  }

  /** Channel index under a client x coordinate, or null outside the bars. */
  channelAt(clientX) {
    if (!this.vector || this.vector.length === 0) return null;
    const rect = this.canvas.getBoundingClientRect();
    const k = Math.floor(((clientX - rect.left) / rect.width) * this.vector.length);
    return k >= 0 && k < this.vector.length ? k : null;
  }

  draw() {
    const ctx = fitCanvas(this.canvas);
    const w = this.canvas.clientWidth;
    const h = this.canvas.clientHeight;
    ctx.clearRect(0, 0, w, h);
    if (!this.vector) {
      ctx.fillStyle = TEXT;
      ctx.font = "12px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.fillText(this.emptyText, w / 2, h / 2);
      return;
    }
    const [lo, hi] = this.range;
    const y = (v) => h - 2 - ((v - lo) / (hi - lo)) * (h - 4);
    const zero = y(0);
    const n = this.vector.length;
    const bw = w / n;
    ctx.fillStyle = BAR;
    for (let k = 0; k < n; k++) {
      const top = y(this.vector[k]);
      // At least one device pixel wide so thin bars of many channels stay visible.
      ctx.fillRect(k * bw, Math.min(top, zero), Math.max(bw - (bw > 3 ? 1 : 0), 0.5), Math.abs(zero - top) || 0.5);
    }
    if (this.highlight !== null && this.highlight < n) {
      const k = this.highlight;
      const top = y(this.vector[k]);
      ctx.fillStyle = BAR_HOT;
      ctx.fillRect(k * bw - (bw < 2 ? 1 : 0), Math.min(top, zero), Math.max(bw, 2), Math.abs(zero - top) || 1);
    }
    ctx.fillStyle = AXIS;
    ctx.fillRect(0, Math.round(zero), w, 1);
  }
}

/** Paint a 256-entry RGBA lookup table into a 256x1 canvas (CSS stretches it into a bar). */
export function drawLut(canvas, lut) {
  canvas.width = 256;
  canvas.height = 1;
  const data = new Uint8ClampedArray(256 * 4);
  lut.forEach((rgba, i) => data.set(rgba, i * 4));
  canvas.getContext("2d").putImageData(new ImageData(data, 256, 1), 0, 0);
}

/** Short display of a float for legends and tooltips. */
export function fmt(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  const a = Math.abs(value);
  if (a !== 0 && (a >= 1e4 || a < 1e-3)) return value.toExponential(2);
  return value.toFixed(a >= 100 ? 1 : 3);
}

/** The hovered and pinned vector charts, on one value scale, with a caption line each. */
export class VectorCharts {
  constructor({ hovered, pinned, hoveredInfo, pinnedInfo }) {
    this.hovered = new BarChart(hovered, "hover the image");
    this.pinned = new BarChart(pinned, "click the image to pin a pixel");
    this.info = { hovered: hoveredInfo, pinned: pinnedInfo };
    this.channel = null; // highlighted bar
  }

  /** New data for a chart; drawn at the next animation frame (at most one draw per frame). */
  set(which, vector, label) {
    this[which].set(vector);
    this[which].label = label;
    if (this.drawQueued) return;
    this.drawQueued = true;
    requestAnimationFrame(() => {
      this.drawQueued = false;
      this.draw();
    });
  }

  clear(...which) {
    for (const name of which.length ? which : ["hovered", "pinned"]) this[name].set(null);
    this.draw();
  }

  draw() {
    const range = jointRange(this.hovered.vector, this.pinned.vector);
    const k = this.channel;
    for (const name of ["hovered", "pinned"]) {
      const chart = this[name];
      chart.range = range;
      chart.highlight = k;
      chart.draw();
      const value = chart.vector && k !== null && k < chart.vector.length ? ` · ch ${k} = ${fmt(chart.vector[k])}` : "";
      const text = chart.vector ? `${chart.label}${value}` : "";
      if (this.info[name].textContent !== text) this.info[name].textContent = text;
    }
  }
}
