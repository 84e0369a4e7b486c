// The viewer's requests over one WebSocket, with "latest wins" kept on the client too:
// per server slot (a panel's hovers, vectors, layers) at most one request is in flight and
// only the newest wish waits, so a slow answer never builds a queue of stale positions.

import { Connection, Slot } from "./net.js";

const PANELS = [0, 1];

export class ViewerClient {
  /**
   * handlers: open(), close(), frame({header, rgba, indices, vector, request}),
   * vector({header, vector, request}), layerReady(msg, panels), error(msg).
   * `request` is the in-flight entry a reply answers ({key, meta, sentAt, ...}) or null.
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.conn = new Connection({
      open: () => this.onOpen(),
      close: (event) => this.onClose(event),
      frame: (decoded) => this.onFrame(decoded),
      vector: (decoded) => this.onVector(decoded),
      layer_ready: (msg) => this.onLayerReady(msg),
      error: (msg) => this.onError(msg),
    });
    this.layerWanted = PANELS.map(() => null); // {image, layer} a panel waits for, else null
    this.frames = PANELS.map((i) => new Slot(this.conn, { blocked: () => this.layerWanted[i] !== null }));
    this.layers = new Slot(this.conn, { priority: PANELS }); // the server has one layer slot
    this.vectors = new Slot(this.conn, { priority: ["pin", "hover"] }); // and one vector slot
  }

  get isOpen() {
    return this.conn.isOpen;
  }

  get slots() {
    return [this.layers, this.vectors, ...this.frames];
  }

  connect() {
    this.conn.connect();
  }

  /** Ask for a panel's frame; build() makes the message when it goes out (null: skip). */
  wantFrame(panel, build, meta) {
    this.frames[panel].want("hover", build, meta);
  }

  dropFrame(panel) {
    this.frames[panel].drop("hover");
  }

  wantVector(purpose, build, meta = {}) {
    this.vectors.want(purpose, build, meta);
  }

  dropVectors() {
    this.vectors.drop("pin");
    this.vectors.drop("hover");
  }

  /** Compute (image, layer) for a panel; its frames wait until layer_ready. */
  computeLayer(panel, image, layer) {
    this.layerWanted[panel] = { image, layer };
    this.layers.want(panel, () => {
      const wanted = this.layerWanted[panel];
      return wanted && { type: "layer", image: wanted.image, layer: wanted.layer };
    });
  }

  cancelLayer(panel) {
    this.layerWanted[panel] = null;
    this.layers.drop(panel);
    this.frames[panel].pump();
  }

  isComputing(panel) {
    return this.layerWanted[panel] !== null;
  }

  onOpen() {
    for (const slot of this.slots) slot.pump();
    this.handlers.open();
  }

  onClose(event) {
    for (const slot of this.slots) slot.reset();
    this.handlers.close(event);
  }

  onFrame({ header, rgba, indices, vector }) {
    const slot = this.frames[header.panel];
    if (!slot) return;
    const request = slot.settle(header.seq); // the next hover goes out before we paint
    this.handlers.frame({ header, rgba, indices, vector, request });
  }

  onVector({ header, vector }) {
    this.handlers.vector({ header, vector, request: this.vectors.settle(header.seq) });
  }

  onLayerReady(msg) {
    this.layers.settle(msg.seq);
    const ready = PANELS.filter((i) => {
      const wanted = this.layerWanted[i];
      return wanted && wanted.image === msg.image && wanted.layer === msg.layer;
    });
    for (const i of ready) this.cancelLayer(i);
    this.handlers.layerReady(msg, ready);
  }

  onError(msg) {
    if (msg.seq === null || msg.seq === undefined) {
      // A message the server could not parse, so no seq to match: free every slot, resend nothing.
      for (const slot of this.slots) {
        slot.inflight = null;
        slot.pump();
      }
    } else {
      for (const slot of this.frames) slot.settle(msg.seq);
      this.vectors.settle(msg.seq);
      const layer = this.layers.settle(msg.seq);
      if (layer) this.cancelLayer(layer.key); // the layer failed: let the user pick another
    }
    this.handlers.error(msg);
  }
}
