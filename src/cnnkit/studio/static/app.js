// cnnkit studio page: talks only to its own server (see app.py), paints everything on canvases.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { detections: [], segmentation: null, photo: null, model: null, info: null, input: null, layer: null, seen: null, pick: null, historyTimer: null, historyMtime: null };

function status(text, error) {
  const el = $("status");
  el.textContent = text || "";
  el.className = error ? "error" : "";
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body;
  try { body = await response.json(); } catch (e) { body = { error: response.statusText }; }
  if (!response.ok) {
    status(body.error || `HTTP ${response.status}`, true);
    throw new Error(body.error || response.statusText);
  }
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("data-")) node.setAttribute(k, v); else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function bytes(b64) {
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

// A run-length encoded grid (see overlays.py) back to one byte a cell, row-major.
function unrle(r) {
  const values = bytes(r.values), raw = bytes(r.runs);
  const runs = new Uint32Array(raw.buffer, 0, raw.length / 4);
  const out = new Uint8Array(r.shape[0] * r.shape[1]);
  let p = 0;
  for (let k = 0; k < runs.length; k++) { out.fill(values[k], p, p + runs[k]); p += runs[k]; }
  return out;
}

// Colour maps as a few anchors, linearly interpolated (viridis for maps, jet for Grad-CAM).
const MAPS = {
  viridis: [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
  jet: [[0, 0, 143], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]],
  diverging: [[33, 102, 172], [247, 247, 247], [178, 24, 43]],
};
function color(name, v) {
  const anchors = MAPS[name];
  const x = (v / 255) * (anchors.length - 1);
  const i = Math.min(Math.floor(x), anchors.length - 2);
  const t = x - i;
  return anchors[i].map((a, k) => Math.round(a + (anchors[i + 1][k] - a) * t));
}

// Paint h×w (×c) bytes on a canvas: gray or RGB as they are, or through a colour map.
function paint(canvas, data, h, w, channels, map, alpha) {
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let p = 0; p < h * w; p++) {
    let rgb;
    if (map) rgb = color(map, data[p]);
    else if (channels === 3) rgb = [data[3 * p], data[3 * p + 1], data[3 * p + 2]];
    else rgb = [data[p], data[p], data[p]];
    img.data.set([rgb[0], rgb[1], rgb[2], alpha === undefined ? 255 : alpha], 4 * p);
  }
  ctx.putImageData(img, 0, 0);
}

// ------------------------------------------------------------------ models
async function loadModels() {
  const { models } = await api("/api/models");
  const select = $("model");
  select.replaceChildren(...models.map((m) => el("option", { value: m.id, textContent: `${m.name} (${m.kind})` })));
  select.onchange = () => openModel(select.value);
  if (models.length) await openModel(models[0].id);
}

async function openModel(id) {
  const info = await api(`/api/models/${encodeURIComponent(id)}`);
  Object.assign(state, { model: id, info, input: null, layer: null, pick: null });
  const { channels, height, width } = info.input;
  $("model-info").textContent = `${info.task} · input ${height}×${width}×${channels} · ${info.params.toLocaleString()} parameters` +
    (info.trained ? "" : " · untrained (freshly initialised)");
  $("draw-box").hidden = !info.drawable;
  const boxes = ["localize", "detect"].includes(info.task) || info.instance;
  const labels = info.task === "segment" && !info.instance;
  $("cam-box").hidden = boxes || labels;
  $("det-box").hidden = !boxes;
  $("det-title").textContent = info.task === "localize" ? "Localization" : info.instance ? "Instances" : "Detections";
  $("seg-box").hidden = !labels;
  $("photo-box").hidden = !(boxes || labels);
  $("top-title").hidden = boxes || labels;
  $("det-list").replaceChildren();
  $("seg-list").replaceChildren();
  state.detections = [];
  state.segmentation = null;
  state.photo = null;
  $("photo-info").textContent = "";
  clearCanvas($("photo")); clearCanvas($("photo-overlay"));
  $("top").replaceChildren();
  $("seen-info").textContent = "";
  clearCanvas($("seen")); clearCanvas($("overlay"));
  $("cam-class").replaceChildren(el("option", { value: "", textContent: "predicted class" }),
    ...info.classes.map((c, i) => el("option", { value: i, textContent: `${i}: ${c}` })));
  const convIndex = Object.fromEntries(info.layers.map((l) => [l.name, l.index]));
  $("cam-layer").replaceChildren(el("option", { value: "", textContent: "default (last stage)" }),
    ...info.cam_layers.map((n) => el("option", { value: convIndex[n], textContent: n })));
  renderLayers(info.layers);
  $("layer-title").textContent = "No layer open";
  $("maps").replaceChildren(); $("pixel-info").replaceChildren(); $("filters").replaceChildren();
  $("maps-info").textContent = "upload an image and open a layer";
  startHistory(info.has_history);
  status("");
}

function clearCanvas(c) { c.getContext("2d").clearRect(0, 0, c.width, c.height); }

function renderLayers(layers) {
  const rows = layers.map((l) => {
    const tr = el("tr", { "data-index": l.index },
      el("td", { class: "num" }, l.index), el("td", {}, l.name), el("td", {}, l.type),
      el("td", {}, l.shape.join("×")), el("td", { class: "num" }, l.params.toLocaleString()),
      el("td", { class: "num" }, l.receptive_field ? l.receptive_field[0] : ""));
    tr.onclick = () => openLayer(l.index);
    return tr;
  });
  $("layers").tBodies[0].replaceChildren(...rows);
}

// ------------------------------------------------------------------ input and prediction
async function upload(blob) {
  status("predicting…");
  const result = await api(`/api/models/${encodeURIComponent(state.model)}/inputs`, {
    method: "POST", body: blob, headers: { "Content-Type": blob.type || "application/octet-stream" },
  });
  state.input = result.input_id;
  if (result.image) await showPhoto(blob, result.image);
  showInput(result);
  status("");
  if (state.layer !== null) await openLayer(state.layer);
}

function showInput(result) {
  const [h, w, c] = result.pixels.shape;
  state.seen = { h, w };
  paint($("seen"), bytes(result.pixels.u8), h, w, c);
  $("overlay").width = w; $("overlay").height = h;
  $("seen-info").textContent = `${w}×${h}, ${c === 1 ? "grayscale" : "RGB"}, after the model's preprocessing`;
  $("cam-info").textContent = "";
  const top = $("top");
  top.replaceChildren(...result.top.map((t) => {
    const bar = el("div", { class: "bar" });
    bar.style.width = `${(100 * t.probability).toFixed(1)}%`;
    return el("li", {}, el("span", { class: "name" }, t.class), el("span", { class: "p" }, `${(100 * t.probability).toFixed(1)} %`), bar);
  }));
  if (result.detections) { state.detections = result.detections; drawDetections(); }
  if (result.segmentation) { state.segmentation = result.segmentation; drawSegmentation(); }
}

// ------------------------------------------------------------------ the photo, as uploaded
// Boxes and masks come in the photo's own pixels: the photo is painted at its own size (the page
// scales the canvas down for display) and the overlay canvas has the same size.
async function showPhoto(blob, image) {
  const { width: w, height: h } = image;
  for (const id of ["photo", "photo-overlay"]) { $(id).width = w; $(id).height = h; }
  state.photo = { w, h };
  try {
    const bitmap = await createImageBitmap(blob);
    $("photo").getContext("2d").drawImage(bitmap, 0, 0, w, h);
    bitmap.close();
    $("photo-info").textContent = `${w}×${h}, as uploaded`;
  } catch (e) {  // e.g. TIFF: the server reads it, this browser cannot show it
    $("photo-info").textContent = `${w}×${h}: this browser cannot show the file; its boxes and masks only`;
  }
}

// ------------------------------------------------------------------ segmentation runs
function classColor(index) {  // background (0) stays clear; the others get distinct hues
  return index === 0 ? null : BOX_COLORS[(index - 1) % BOX_COLORS.length];
}
const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
function drawSegmentation() {
  const seg = state.segmentation;
  if (!seg) return;
  const [h, w] = seg.labels.shape;
  const labels = unrle(seg.labels);
  const canvas = $("photo-overlay");
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  const alpha = Math.round(255 * Number($("seg-alpha").value));
  for (let p = 0; p < h * w; p++) {
    const hex = classColor(labels[p]);
    if (hex) img.data.set([...rgb(hex), alpha], 4 * p);
  }
  ctx.putImageData(img, 0, 0);
  $("seg-list").replaceChildren(...seg.classes.map((c) => {
    const item = el("li", { class: "seg" }, `${c.class}: ${(100 * c.share).toFixed(1)} % of the pixels`);
    if (classColor(c.index)) item.style.color = classColor(c.index);
    return item;
  }));
}

// ------------------------------------------------------------------ localization, detection and Mask R-CNN runs
const BOX_COLORS = ["#e53935", "#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#00acc1", "#fdd835", "#6d4c41"];
function paintMask(ctx, mask, hex) {  // a 0/1 grid in its box of the photo, half transparent
  const [x0, y0, x1, y1] = mask.box;
  const cells = unrle(mask);
  const img = ctx.getImageData(x0, y0, x1 - x0, y1 - y0);
  const [r, g, b] = rgb(hex);
  for (let p = 0; p < cells.length; p++) if (cells[p]) img.data.set([r, g, b, 140], 4 * p);
  ctx.putImageData(img, x0, y0);
}
function drawDetections() {
  const threshold = Number($("score").value);
  $("score-value").textContent = threshold.toFixed(2);
  const shown = state.detections.filter((d) => d.score >= threshold);
  const canvas = $("photo-overlay");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const color = (i) => BOX_COLORS[i % BOX_COLORS.length];
  for (let i = shown.length - 1; i >= 0; i--) if (shown[i].mask) paintMask(ctx, shown[i].mask, color(i));
  const line = Math.max(1, Math.max(canvas.width, canvas.height) / 160);
  ctx.lineWidth = line;
  ctx.font = `${Math.round(6 * line)}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  shown.forEach((d, i) => {
    const [x1, y1, x2, y2] = d.box;
    ctx.strokeStyle = ctx.fillStyle = color(i);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillText(`${d.class} ${(100 * d.score).toFixed(0)}%`, x1 + line, y1 + line);
  });
  $("det-list").replaceChildren(...shown.map((d, i) => {
    const item = el("li", { class: "det" }, `${d.class} ${(100 * d.score).toFixed(1)} %`);
    item.style.color = color(i);
    return item;
  }));
  if (!shown.length) $("det-list").replaceChildren(el("li", { class: "none" }, `no box scores ${threshold.toFixed(2)} or more (${state.detections.length} found)`));
}

function setupDrawing() {
  const canvas = $("draw");
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let down = false;
  const at = (e) => { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
  canvas.onpointerdown = (e) => { down = true; ctx.beginPath(); ctx.moveTo(...at(e)); canvas.setPointerCapture(e.pointerId); };
  canvas.onpointermove = (e) => {
    if (!down) return;
    ctx.lineTo(...at(e)); ctx.strokeStyle = "#fff"; ctx.lineWidth = 18; ctx.lineCap = ctx.lineJoin = "round"; ctx.stroke();
  };
  canvas.onpointerup = () => { down = false; };
  $("draw-clear").onclick = clear;
  $("draw-use").onclick = () => canvas.toBlob((blob) => upload(blob).catch(() => {}), "image/png");
}

// ------------------------------------------------------------------ layers
async function openLayer(index) {
  state.layer = index;
  const layer = state.info.layers[index];
  for (const tr of $("layers").tBodies[0].rows) tr.classList.toggle("open", Number(tr.dataset.index) === index);
  $("layer-title").textContent = `${layer.name} (${layer.type}) → ${layer.shape.join("×")}` +
    (layer.receptive_field ? `, receptive field ${layer.receptive_field.join("×")}` : "");
  $("tab-weights").disabled = !layer.weights;
  $("pixel-info").replaceChildren();
  clearCanvas($("overlay"));
  if (!$("weights-view").hidden && layer.weights) await showWeights();
  if (!state.input) { $("maps-info").textContent = "upload an image to see this layer's feature maps"; $("maps").replaceChildren(); return; }
  const maps = await api(`/api/models/${encodeURIComponent(state.model)}/inputs/${state.input}/layers/${index}/maps`);
  renderMaps(maps);
}

function renderMaps(maps) {
  const grid = $("maps");
  if (maps.vector) {
    const values = bytes(maps.vector.u8);
    const canvas = el("canvas", { class: "vector" });
    paint(canvas, values, 1, values.length, 1, "viridis");
    canvas.style.width = "100%"; canvas.style.height = "24px";
    grid.replaceChildren(canvas);
    $("maps-info").textContent = `a vector of ${maps.shape[0]} values (range ${maps.vector.min.toFixed(3)} … ${maps.vector.max.toFixed(3)})`;
    return;
  }
  const data = bytes(maps.u8);
  const size = maps.height * maps.width;
  const tiles = [];
  const repaint = (c) => paint(tiles[c], data.subarray(c * size, (c + 1) * size), maps.height, maps.width, 1, "viridis");
  let picked = null;
  for (let c = 0; c < maps.shown; c++) {
    const canvas = el("canvas", { class: "tile", title: `channel ${c}: ${maps.min[c].toFixed(3)} … ${maps.max[c].toFixed(3)}`, "data-channel": c });
    tiles.push(canvas);
    repaint(c);
    canvas.onclick = (e) => {
      const r = canvas.getBoundingClientRect();
      const row = Math.min(maps.height - 1, Math.floor((e.clientY - r.top) / r.height * maps.height));
      const col = Math.min(maps.width - 1, Math.floor((e.clientX - r.left) / r.width * maps.width));
      for (const t of grid.children) t.classList.toggle("picked", t === canvas);
      if (picked !== null) repaint(picked);
      picked = c;
      const ctx = canvas.getContext("2d");
      ctx.fillStyle = "#e53935";
      ctx.fillRect(col, row, 1, 1);  // the pixel explained below
      showPixel(c, row, col).catch(() => {});
    };
  }
  grid.replaceChildren(...tiles);
  $("maps-info").textContent = `${maps.channels} maps of ${maps.height}×${maps.width}` +
    (maps.shown < maps.channels ? ` (first ${maps.shown} shown)` : "") + ", each on its own scale; click a map to see how one pixel is computed";
}

function numberTable(caption, rows) {
  const fmt = (v) => (v === null ? "pad" : Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2));
  return el("table", {}, el("caption", {}, caption), ...rows.map((r) => el("tr", {}, ...r.map((v) => el("td", {}, fmt(v))))));
}

async function showPixel(channel, row, col) {
  const layer = state.info.layers[state.layer];
  const p = await api(`/api/models/${encodeURIComponent(state.model)}/inputs/${state.input}/layers/${state.layer}/pixel?channel=${channel}&row=${row}&col=${col}`);
  const box = $("pixel-info");
  const parts = [el("p", {}, `${layer.name}, channel ${channel}, pixel (${row}, ${col}) = ${p.value.toFixed(4)}; ` +
    `receptive field ${p.receptive_field.join("×")} input pixels (red box on the input)`)];
  if (p.conv) {
    const more = p.conv.in_channels > p.conv.shown ? ` (${p.conv.shown} of ${p.conv.in_channels} input channels shown below)` : "";
    parts.push(el("p", { class: "sum" }, `Σ window × kernel over ${p.conv.in_channels} input channels + bias ${p.conv.bias.toFixed(4)} = ${p.conv.sum.toFixed(4)}` +
      ` → ${p.conv.activation} → ${p.conv.result.toFixed(4)}${more}; stride ${p.stride.join("×")}`));
  }
  if (p.conv && p.conv.window[0].length <= 7) {
    for (let s = 0; s < p.conv.shown; s++) {
      const ch = p.conv.first_in_channel + s;
      parts.push(el("div", { class: "slice" }, numberTable(`input ch ${ch}: window`, p.conv.window[s]), numberTable(`kernel [${channel}, ${ch}]`, p.conv.kernel[s])));
    }
  }
  if (p.pool) {
    parts.push(numberTable(`input channel ${channel}: window`, p.pool.window));
    parts.push(el("p", { class: "sum" }, `${p.pool.op} of the window = ${p.pool.result.toFixed(4)}; stride ${p.stride.join("×")}`));
  }
  box.replaceChildren(...parts);
  drawBox(p.box);
}

function drawBox([top, left, bottom, right]) {
  const canvas = $("overlay");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "rgba(229, 57, 53, 0.25)";
  ctx.fillRect(left, top, right - left + 1, bottom - top + 1);
  ctx.strokeStyle = "#e53935"; ctx.lineWidth = Math.max(0.5, canvas.width / 112);
  ctx.strokeRect(left, top, right - left + 1, bottom - top + 1);
}

// ------------------------------------------------------------------ weights
async function showWeights() {
  const layer = state.info.layers[state.layer];
  const w = await api(`/api/models/${encodeURIComponent(state.model)}/layers/${state.layer}/weights?in_channel=${Number($("in-channel").value) || 0}`);
  const grid = $("filters");
  if (w.filters) {
    const [n, kh, kw] = w.filters.shape;
    const data = bytes(w.filters.u8);
    grid.replaceChildren(...Array.from({ length: n }, (_, i) => {
      const c = el("canvas", { title: `filter ${i}` });
      paint(c, data.subarray(i * kh * kw, (i + 1) * kh * kw), kh, kw, 1, "diverging");
      return c;
    }));
    $("filters-info").textContent = `${layer.name}: ${w.shape.join("×")} kernel, input channel ${w.filters.in_channel}, scale ±${w.filters.scale.toFixed(3)} (blue negative, red positive)`;
  } else {
    grid.replaceChildren();
    $("filters-info").textContent = `${layer.name}: weight ${w.shape.join("×")} (no spatial filters)`;
  }
  drawHistogram(w.histogram);
}

function drawHistogram(h) {
  const canvas = $("histogram");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const colors = ["#3b6fd8", "#f08c2e"];
  const pad = 30, W = canvas.width - 2 * pad, H = canvas.height - 2 * pad;
  const peak = Math.max(1, ...h.panels.flatMap((p) => p.counts));
  const bins = h.edges.length - 1;
  h.panels.forEach((panel, k) => {
    ctx.fillStyle = colors[k % 2]; ctx.globalAlpha = 0.6;
    panel.counts.forEach((n, i) => {
      const bh = (n / peak) * H;
      ctx.fillRect(pad + (i / bins) * W, pad + H - bh, W / bins - 1, bh);
    });
  });
  ctx.globalAlpha = 1; ctx.fillStyle = "#1d2330"; ctx.font = "12px system-ui, sans-serif";
  ctx.fillText(h.edges[0].toFixed(3), pad, canvas.height - 8);
  ctx.fillText(h.edges[bins].toFixed(3), pad + W - 40, canvas.height - 8);
  h.panels.forEach((p, k) => {
    ctx.fillStyle = colors[k % 2];
    ctx.fillText(`${p.label}: mean ${p.mean.toFixed(4)}, std ${p.std.toFixed(4)}`, pad, 16 + 14 * k);
  });
  $("hist-info").textContent = h.panels.map((p) => `${p.label}: ${p.count.toLocaleString()} weights`).join("; ");
}

// ------------------------------------------------------------------ Grad-CAM
async function showCam() {
  if (!state.input) { status("upload an image first", true); return; }
  const target = $("cam-class").value, layer = $("cam-layer").value;
  const query = new URLSearchParams();
  if (target !== "") query.set("target", target);
  if (layer !== "") query.set("layer", layer);
  status("Grad-CAM…");
  const cam = await api(`/api/models/${encodeURIComponent(state.model)}/inputs/${state.input}/gradcam?${query}`);
  const [h, w] = cam.cam.shape;
  paint($("overlay"), bytes(cam.cam.u8), h, w, 1, "jet", 130);
  $("cam-info").textContent = `Grad-CAM for “${cam.class}” at ${cam.layer} (red: where the class score looks)`;
  status("");
}

// ------------------------------------------------------------------ training curves
function startHistory(enabled) {
  clearInterval(state.historyTimer);
  state.historyMtime = null;
  $("curves-box").hidden = !enabled;
  if (!enabled) return;
  const poll = async () => {
    const model = state.model;
    const h = await api(`/api/models/${encodeURIComponent(model)}/history`).catch(() => null);
    if (!h || model !== state.model || h.mtime === state.historyMtime) return;
    state.historyMtime = h.mtime;
    drawCurves($("curves-loss"), h.epochs, ["loss", "val_loss"]);
    drawCurves($("curves-acc"), h.epochs, ["accuracy", "val_accuracy"]);
    const age = h.mtime ? (Date.now() / 1000 - h.mtime) : null;
    $("curves-live").textContent = h.epochs.length ? `${h.epochs.length} epochs` + (age !== null && age < 120 ? " · updating live" : "") : "no epoch finished yet";
  };
  poll();
  state.historyTimer = setInterval(poll, 2000);
}

function drawCurves(canvas, epochs, keys) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  // [epoch index, value] pairs: validation may skip epochs (fit's validation_freq).
  const series = keys.map((k) => epochs.flatMap((e, i) => (e[k] === undefined || e[k] === null ? [] : [[i, e[k]]])));
  const all = series.flat().map((p) => p[1]);
  if (!all.length) return;
  const lo = Math.min(...all), hi = Math.max(...all), n = Math.max(2, epochs.length);
  const pad = 34, W = canvas.width - 2 * pad, H = canvas.height - 2 * pad;
  const x = (i) => pad + (i / (n - 1)) * W, y = (v) => pad + H - ((v - lo) / (hi - lo || 1)) * H;
  const colors = ["#3b6fd8", "#f08c2e"];
  series.forEach((s, k) => {
    ctx.strokeStyle = colors[k]; ctx.lineWidth = 2; ctx.beginPath();
    s.forEach(([i, v], j) => (j ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    ctx.stroke();
    ctx.fillStyle = colors[k]; ctx.font = "12px system-ui, sans-serif";
    ctx.fillText(`${keys[k]} ${s.length ? s[s.length - 1][1].toFixed(4) : ""}`, pad + 170 * k, 14);
  });
  ctx.fillStyle = "#5b6475";
  ctx.fillText(hi.toFixed(3), 0, pad + 4); ctx.fillText(lo.toFixed(3), 0, pad + H);
  ctx.fillText(`epoch 1 … ${epochs.length}`, pad + W - 80, canvas.height - 6);
}

// ------------------------------------------------------------------ start
function setTab(weights) {
  $("tab-maps").classList.toggle("active", !weights);
  $("tab-weights").classList.toggle("active", weights);
  $("maps-view").hidden = weights;
  $("weights-view").hidden = !weights;
}

window.addEventListener("DOMContentLoaded", () => {
  $("file").onchange = (e) => { if (e.target.files[0]) upload(e.target.files[0]).catch(() => {}); e.target.value = ""; };
  $("cam-run").onclick = () => showCam().catch(() => {});
  $("score").oninput = drawDetections;
  $("seg-alpha").oninput = drawSegmentation;
  $("cam-clear").onclick = () => { clearCanvas($("overlay")); $("cam-info").textContent = ""; };
  $("tab-maps").onclick = () => setTab(false);
  $("tab-weights").onclick = () => { setTab(true); if (state.layer !== null) showWeights().catch(() => {}); };
  $("in-channel").onchange = () => { if (state.layer !== null) showWeights().catch(() => {}); };
  setupDrawing();
  loadModels().catch(() => {});
});
