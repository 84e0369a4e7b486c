// Pointer, wheel and keyboard gestures, translated into plain callbacks.

const CLICK_SLOP_PX = 5;

/**
 * Gestures on a panel canvas. handlers:
 *   hover(clientX, clientY, t)  pointer moved (t: performance.now() at the event)
 *   click(clientX, clientY)     left press and release without moving
 *   pan(dx, dy)                 drag with the middle button, or the left one when panning() says so
 *   zoom(px, py, factor)        wheel, around (px, py) in canvas CSS pixels
 *   panning(event)              whether a left press starts a pan (Shift, Space, pan mode)
 */
export function wireCanvas(canvas, handlers) {
  let drag = null;
  let press = null;

  canvas.addEventListener("pointermove", (e) => {
    // the event's own creation time: a busy page that delays the handler still counts as latency
    const now = performance.now();
    const t = e.timeStamp > 0 && e.timeStamp <= now ? e.timeStamp : now;
    if (drag) {
      handlers.pan(e.clientX - drag.x, e.clientY - drag.y);
      drag = { x: e.clientX, y: e.clientY };
      return;
    }
    handlers.hover(e.clientX, e.clientY, t);
  });

  canvas.addEventListener("pointerdown", (e) => {
    if (e.button === 1 || (e.button === 0 && handlers.panning(e))) {
      e.preventDefault();
      drag = { x: e.clientX, y: e.clientY };
      canvas.setPointerCapture(e.pointerId);
      canvas.classList.add("dragging");
    } else if (e.button === 0) {
      press = { x: e.clientX, y: e.clientY };
    }
  });

  const release = (e) => {
    if (drag) {
      drag = null;
      canvas.classList.remove("dragging");
      if (canvas.hasPointerCapture(e.pointerId)) canvas.releasePointerCapture(e.pointerId);
      return;
    }
    const start = press;
    press = null;
    if (e.type === "pointerup" && start && e.button === 0 &&
        Math.hypot(e.clientX - start.x, e.clientY - start.y) < CLICK_SLOP_PX) {
      handlers.click(e.clientX, e.clientY);
    }
  };
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);

  canvas.addEventListener("mousedown", (e) => {
    if (e.button === 1) e.preventDefault(); // no autoscroll on middle-button drags
  });

  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const rect = canvas.getBoundingClientRect();
    const perUnit = e.deltaMode === 1 ? 0.05 : e.deltaMode === 2 ? 1 : 0.0015; // lines, pages, pixels
    handlers.zoom(e.clientX - rect.left, e.clientY - rect.top, Math.exp(-e.deltaY * perUnit));
  }, { passive: false });
}

/** Hovering a bar chart: channel(k, t) with the bar under the pointer, channel(null) on leaving. */
export function wireChart(chart, channel) {
  chart.canvas.addEventListener("pointermove", (e) => {
    const k = chart.channelAt(e.clientX);
    if (k !== null) channel(k, performance.now());
  });
  chart.canvas.addEventListener("pointerleave", () => channel(null, null));
}

/** Escape, and Space held down (pan while held) unless a control has the focus. */
export function wireKeys({ escape, space }) {
  const inControl = (e) => ["INPUT", "SELECT", "TEXTAREA", "BUTTON"].includes(e.target.tagName);
  let spaceDown = false;
  window.addEventListener("keydown", (e) => {
    if (e.key === "Escape") escape();
    if (e.code === "Space" && !inControl(e)) {
      e.preventDefault();
      if (!spaceDown) space((spaceDown = true));
    }
  });
  window.addEventListener("keyup", (e) => {
    if (e.code === "Space" && spaceDown) space((spaceDown = false));
  });
}
