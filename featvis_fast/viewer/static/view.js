// Zoom/pan transform shared by the panels, and one panel's layers (photo, heat map, markers).

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

/**
 * One panel as stacked layers placed by CSS transforms: the photo (<img>), the heat map canvas at
 * feature resolution (scaled with image-rendering: pixelated), marker elements, and on top the
 * transparent element that takes the pointer events. A new frame is one small putImageData plus
 * a compositor pass: nothing full-size is rasterized on the page's main thread, which matters on
 * a small CPU where the browser and the server share the cores.
 */
export class PanelView {
  constructor(canvas) {
    this.canvas = canvas; // the event layer (never drawn into)
    const host = canvas.parentElement;
    this.photo = layer(host, canvas, "img", "layer photo");
    this.photo.alt = "";
    this.photo.draggable = false;
    this.heat = layer(host, canvas, "canvas", "layer heat");
    this.heat.width = this.heat.height = 1;
    this.marks = {
      ref: layer(host, canvas, "div", "mark ring"),
      pin: layer(host, canvas, "div", "mark pin"),
      cursor: layer(host, canvas, "div", "mark cross"),
    };
    this.hasHeat = false;
    this.styles = new Map(); // element -> last style values set (only changes touch the DOM)
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

  /** photo: the loaded Image; marks: {ref, pin, cursor}, each {x, y} in image pixels or null. */
  draw(photo, view, opacity, marks) {
    if (!photo) {
      for (const el of [this.photo, this.heat, ...Object.values(this.marks)]) this.set(el, { display: "none" });
      return;
    }
    if (this.photo.src !== photo.src) this.photo.src = photo.src; // same URL: served from the cache
    const w = photo.naturalWidth;
    const h = photo.naturalHeight;
    const place = (sx, sy) => `translate(${view.tx}px, ${view.ty}px) scale(${sx}, ${sy})`;
    this.set(this.photo, {
      display: "", transform: place(view.scale, view.scale),
      imageRendering: view.scale < 4 ? "auto" : "pixelated",
    });
    const showHeat = this.hasHeat && opacity > 0;
    this.set(this.heat, showHeat ? {
      display: "", opacity: String(opacity),
      transform: place((view.scale * w) / this.heat.width, (view.scale * h) / this.heat.height),
    } : { display: "none" });
    const shown = { ref: marks.pin ? null : marks.ref, pin: marks.pin, cursor: marks.cursor };
    for (const [name, el] of Object.entries(this.marks)) {
      const at = shown[name];
      if (!at) {
        this.set(el, { display: "none" });
        continue;
      }
      const p = view.toScreen(at.x, at.y);
      this.set(el, { display: "", transform: `translate(${p.x}px, ${p.y}px)` });
    }
  }

  set(el, values) {
    const last = this.styles.get(el) || {};
    for (const [key, value] of Object.entries(values)) {
      if (last[key] !== value) {
        el.style[key] = value;
        last[key] = value;
      }
    }
    this.styles.set(el, last);
  }
}

function layer(host, before, tag, className) {
  const el = document.createElement(tag);
  el.className = className;
  host.insertBefore(el, before);
  return el;
}
