// Zoom/pan transform shared by the panels, and drawing one panel (photo, heat map, markers).

import { fitCanvas } from "./charts.js";

const MIN_SCALE = 0.02;
const MAX_SCALE = 64;

/** screen = image * scale + (tx, ty), in CSS pixels of a panel canvas. Shared by both panels. */
export class View {
  constructor() {
    this.scale = 1;
    this.tx = 0;
    this.ty = 0;
    this.fitted = true; // refit on resize until the user zooms or pans
  }

  fit(imageW, imageH, canvasW, canvasH) {
    this.scale = Math.min(canvasW / imageW, canvasH / imageH) || 1;
    this.tx = (canvasW - imageW * this.scale) / 2;
    this.ty = (canvasH - imageH * this.scale) / 2;
    this.fitted = true;
  }

  /** Zoom by `factor` keeping the image point under (px, py) where it is. */
  zoomAt(px, py, factor) {
    const scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * factor));
    const ix = (px - this.tx) / this.scale;
    const iy = (py - this.ty) / this.scale;
    this.scale = scale;
    this.tx = px - ix * scale;
    this.ty = py - iy * scale;
    this.fitted = false;
  }

  panBy(dx, dy) {
    this.tx += dx;
    this.ty += dy;
    this.fitted = false;
  }

  toImage(px, py) {
    return { x: (px - this.tx) / this.scale, y: (py - this.ty) / this.scale };
  }

  toScreen(x, y) {
    return { x: x * this.scale + this.tx, y: y * this.scale + this.ty };
  }
}

/** One panel's visible canvas plus its heat map kept at feature resolution. */
export class PanelView {
  constructor(canvas) {
    this.canvas = canvas;
    this.heat = document.createElement("canvas");
    this.hasHeat = false;
  }

  /** Client coordinates -> image pixel coordinates under the view. */
  toImage(view, clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    return view.toImage(clientX - rect.left, clientY - rect.top);
  }

  putHeat(rgba, width, height) {
    if (this.heat.width !== width || this.heat.height !== height) {
      this.heat.width = width;
      this.heat.height = height;
    }
    this.heat.getContext("2d").putImageData(new ImageData(rgba, width, height), 0, 0);
    this.hasHeat = true;
  }

  clearHeat() {
    this.hasHeat = false;
  }

  /** marks: {ref, pin, cursor}, each {x, y} in image pixels or null. */
  draw(photo, view, opacity, marks) {
    const ctx = fitCanvas(this.canvas);
    ctx.clearRect(0, 0, this.canvas.clientWidth, this.canvas.clientHeight);
    if (!photo) return;
    const w = photo.naturalWidth;
    const h = photo.naturalHeight;
    ctx.save();
    ctx.translate(view.tx, view.ty);
    ctx.scale(view.scale, view.scale);
    ctx.imageSmoothingEnabled = view.scale < 4;
    ctx.drawImage(photo, 0, 0, w, h);
    if (this.hasHeat && opacity > 0) {
      ctx.imageSmoothingEnabled = false; // nearest: one crisp block per feature cell
      ctx.globalAlpha = opacity;
      ctx.drawImage(this.heat, 0, 0, this.heat.width, this.heat.height, 0, 0, w, h);
      ctx.globalAlpha = 1;
    }
    ctx.restore();
    if (marks.pin) drawPin(ctx, view.toScreen(marks.pin.x, marks.pin.y));
    else if (marks.ref) drawRing(ctx, view.toScreen(marks.ref.x, marks.ref.y));
    if (marks.cursor) drawCross(ctx, view.toScreen(marks.cursor.x, marks.cursor.y));
  }
}

function drawRing(ctx, p) {
  ctx.lineWidth = 3;
  ctx.strokeStyle = "rgba(0,0,0,0.7)";
  ctx.beginPath();
  ctx.arc(p.x, p.y, 5, 0, 2 * Math.PI);
  ctx.stroke();
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = "#fff";
  ctx.stroke();
}

function drawPin(ctx, p) {
  ctx.beginPath();
  ctx.arc(p.x, p.y, 6, 0, 2 * Math.PI);
  ctx.fillStyle = "rgba(0,229,255,0.35)";
  ctx.fill();
  ctx.lineWidth = 3;
  ctx.strokeStyle = "rgba(0,0,0,0.7)";
  ctx.stroke();
  ctx.lineWidth = 2;
  ctx.strokeStyle = "#00e5ff";
  ctx.stroke();
  ctx.fillStyle = "#00e5ff";
  ctx.fillRect(p.x - 1, p.y - 1, 2, 2);
}

function drawCross(ctx, p) {
  for (const [width, color] of [[3, "rgba(0,0,0,0.7)"], [1, "#fff"]]) {
    ctx.lineWidth = width;
    ctx.strokeStyle = color;
    ctx.beginPath();
    ctx.moveTo(p.x - 6, p.y);
    ctx.lineTo(p.x + 6, p.y);
    ctx.moveTo(p.x, p.y - 6);
    ctx.lineTo(p.x, p.y + 6);
    ctx.stroke();
  }
}
