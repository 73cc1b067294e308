// cevit web page: upload one file to POST /v1/analyze and show the report. Plain JS, no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { report: null, file: null, maxUpload: null, threshold: 0.5 };

function show(el, visible) { el.hidden = !visible; }

function setError(message) {
  $("error").textContent = message || "";
  show($("error"), Boolean(message));
}

function fmtBytes(n) {
  return n >= 1048576 ? (n / 1048576).toFixed(1) + " MB" : Math.max(1, Math.round(n / 1024)) + " kB";
}

function apiHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function loadInfo() {
  try {
    const health = await (await fetch("/v1/health")).json();
    state.maxUpload = health.limits ? health.limits.max_upload_bytes : null;
    if (health.api_key_required) {
      show($("key-row"), true);
      $("key-row").closest("details").open = true;
    }
    const res = await fetch("/v1/models", { headers: apiHeaders() });
    if (!res.ok) return;
    const model = (await res.json()).models[0];
    const sha = model.checkpoint_sha256 ? " · sha256 " + model.checkpoint_sha256.slice(0, 12) : "";
    $("model").textContent = "Model: " + (model.name || "?") + sha;
    if (model.defaults) {
      $("frames").placeholder = model.defaults.num_frames;
      $("threshold").placeholder = model.defaults.label_threshold;
    }
  } catch (err) {
    $("model").textContent = "Server not reachable.";
  }
}

// -- upload -------------------------------------------------------------------------------------------
function upload(file) {
  setError("");
  show($("result"), false);
  if (state.maxUpload && file.size > state.maxUpload) {
    setError(`${file.name} is ${fmtBytes(file.size)}; the server accepts at most ${fmtBytes(state.maxUpload)}.`);
    return;
  }
  state.file = file;
  const form = new FormData();
  form.append("file", file, file.name);
  if ($("frames").value) form.append("frames", $("frames").value);
  if ($("threshold").value) form.append("threshold", $("threshold").value);
  if ($("explain").checked) form.append("explain", "true");

  const xhr = new XMLHttpRequest();
  const bar = $("bar");
  show($("progress"), true);
  bar.value = 0;
  $("status").textContent = "Uploading " + file.name + "…";
  xhr.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) {
      bar.value = (100 * e.loaded) / e.total;
      $("status").textContent = `Uploading… ${Math.round(bar.value)} %`;
    }
  });
  xhr.upload.addEventListener("load", () => {
    bar.removeAttribute("value"); // indeterminate while the server analyses
    $("status").textContent = "Analysing…";
  });
  xhr.addEventListener("load", () => onResponse(xhr));
  xhr.addEventListener("error", () => finish("Network error: the upload did not reach the server."));
  xhr.open("POST", "/v1/analyze");
  for (const [k, v] of Object.entries(apiHeaders())) xhr.setRequestHeader(k, v);
  xhr.send(form);
}

function finish(error) {
  show($("progress"), false);
  setError(error);
}

function onResponse(xhr) {
  let body = null;
  try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
  if (xhr.status === 200 && body) {
    finish("");
    render(body);
    return;
  }
  const message = body && (body.error || body.detail) ? body.error || JSON.stringify(body.detail) : xhr.statusText;
  if (xhr.status === 401) {
    show($("key-row"), true);
    $("key-row").closest("details").open = true;
    finish("This server needs an API key: enter it under Options and choose the file again.");
  } else if (xhr.status === 503) {
    finish(`The server is busy; try again in ${xhr.getResponseHeader("Retry-After") || "a few"} s.`);
  } else {
    finish(`Error ${xhr.status}: ${message}`);
  }
}

// -- result -------------------------------------------------------------------------------------------
function pct(x) { return (100 * x).toFixed(1) + " %"; }

// No face anywhere (report status "no_face", schema 1.2; 1.1 reports: no final score) is not a verdict: the
// report's REAL 0.99 only says that nothing was scored, so it is shown as "No face found", never as a green REAL.
function noFace(report) {
  return report.status ? report.status === "no_face" : report.score === null;
}

function render(report) {
  state.report = report;
  state.threshold = report.aggregation ? report.aggregation.label_threshold : 0.5;
  const verdict = $("verdict");
  if (noFace(report)) {
    verdict.textContent = "No face found";
    verdict.className = "verdict NO_FACE";
    $("confidence").textContent = "No verdict";
  } else {
    verdict.textContent = report.prediction;
    verdict.className = "verdict " + report.prediction;
    $("confidence").textContent = pct(report.confidence) + " confidence";
  }
  $("note").textContent = report.note || "";

  const facts = [
    ["File", report.source],
    ["Type", report.media_type + (report.dimensions ? `, ${report.dimensions.width}×${report.dimensions.height}` : "")],
    ["Fake score", report.score === null ? "— (no face)" : report.score.toFixed(3) + ` (FAKE above ${state.threshold})`],
    ["Faces", String(report.faces.length)],
  ];
  if (report.media_type === "video") {
    facts.push(["Frames", `${report.frames_analyzed} sampled, ${report.frames_with_faces} with faces`]);
  }
  facts.push(["Processing time", report.processing_time.toFixed(2) + " s"]);
  facts.push(["Model", report.model ? report.model.name : "?"]);
  const dl = $("facts");
  dl.replaceChildren();
  for (const [k, v] of facts) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = v;
    dl.append(dt, dd);
  }

  show($("result"), true);
  const isVideo = report.media_type === "video";
  show($("chart-box"), isVideo);
  if (isVideo) drawChart();
  const expl = report.explanations || null;
  const timeline = expl && expl.files ? expl.files.timeline : null;
  if (timeline) $("timeline").src = timeline; else $("timeline").removeAttribute("src");
  show($("timeline"), Boolean(timeline));
  renderFaces(report);
}

// Per-frame scores on a <canvas>: x = sampled frame (in order), y = score 0..1.
function drawChart() {
  const report = state.report;
  if (!report || report.media_type !== "video") return;
  const canvas = $("chart");
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.clearRect(0, 0, w, h);
  const left = 34, right = 10, top = 10, bottom = 24;
  const frames = report.frame_predictions;
  const n = frames.length;
  const x = (i) => left + (n === 1 ? (w - left - right) / 2 : (i * (w - left - right)) / (n - 1));
  const y = (s) => top + (1 - s) * (h - top - bottom);

  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = color("--muted");
  ctx.strokeStyle = color("--line");
  ctx.lineWidth = 1;
  for (const s of [0, 0.5, 1]) {
    ctx.beginPath(); ctx.moveTo(left, y(s)); ctx.lineTo(w - right, y(s)); ctx.stroke();
    ctx.fillText(s.toFixed(1), 4, y(s) + 4);
  }
  ctx.fillText("frame " + frames[0].index, left, h - 6);
  const lastLabel = "frame " + frames[n - 1].index;
  if (n > 1) ctx.fillText(lastLabel, w - right - ctx.measureText(lastLabel).width, h - 6);

  ctx.setLineDash([5, 4]);
  ctx.strokeStyle = color("--fake");
  ctx.beginPath(); ctx.moveTo(left, y(state.threshold)); ctx.lineTo(w - right, y(state.threshold)); ctx.stroke();
  ctx.setLineDash([]);

  ctx.strokeStyle = color("--accent");
  ctx.lineWidth = 2;
  ctx.beginPath();
  let pen = false;
  frames.forEach((f, i) => {
    if (f.score === null) { pen = false; return; }
    if (pen) ctx.lineTo(x(i), y(f.score)); else ctx.moveTo(x(i), y(f.score));
    pen = true;
  });
  ctx.stroke();
  frames.forEach((f, i) => {
    ctx.beginPath();
    if (f.score === null) {
      ctx.strokeStyle = color("--none"); ctx.lineWidth = 1.5;
      ctx.arc(x(i), y(0), 3.5, 0, 2 * Math.PI); ctx.stroke();
    } else {
      ctx.fillStyle = color("--accent");
      ctx.arc(x(i), y(f.score), 3.5, 0, 2 * Math.PI); ctx.fill();
    }
  });
}

const MAX_FACES = 48;

function renderFaces(report) {
  const box = $("faces");
  box.replaceChildren();
  const faces = [...report.faces]
    .sort((a, b) => b.score - a.score || a.frame_index - b.frame_index || a.face_index - b.face_index)
    .slice(0, MAX_FACES);
  const total = report.faces.length;
  $("faces-title").textContent = total === 0 ? "No face detected"
    : total > faces.length ? `Faces (${faces.length} most suspicious of ${total})` : `Faces (${total})`;
  // heat-map overlays (report.explanations, when asked for): one image per face, shown over its thumbnail
  const expl = report.explanations || null;
  const overlays = new Map(((expl && expl.faces) || []).filter((f) => f.overlay)
    .map((f) => [`${f.frame_index}:${f.face_index}`, f.overlay]));
  show($("heat-row"), overlays.size > 0);
  $("heat-method").textContent = expl ? `(${expl.method})` : "";
  box.classList.toggle("show-heat", overlays.size > 0 && $("heat-toggle").checked);
  const items = faces.map((face) => {
    const label = face.score > state.threshold ? "FAKE" : "REAL";
    const fig = document.createElement("figure");
    fig.className = "face " + label;
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 128;
    const cap = document.createElement("figcaption");
    const b = document.createElement("b");
    b.className = label;
    b.textContent = face.score.toFixed(3);
    const where = document.createElement("span");
    where.className = "muted";
    where.textContent = report.media_type === "video" ? `frame ${face.frame_index}` : `face ${face.face_index + 1}`;
    cap.append(b, where);
    fig.append(canvas);
    const heat = overlays.get(`${face.frame_index}:${face.face_index}`);
    if (heat) {
      const img = document.createElement("img");
      img.className = "heat";
      img.alt = "heat map: where the evidence for 'fake' lies";
      img.src = heat;
      fig.append(img);
    }
    fig.append(cap);
    box.append(fig);
    return { face, canvas };
  });
  if (items.length) drawThumbnails(report, items).catch(() => { /* thumbnails are optional */ });
}

// Square crop around a face box, slightly enlarged, drawn into a 128x128 canvas.
function drawCrop(source, sw, sh, box, canvas) {
  const [x1, y1, x2, y2] = box;
  const side = Math.max(x2 - x1, y2 - y1) * 1.2;
  const cx = (x1 + x2) / 2, cy = (y1 + y2) / 2;
  const sx = Math.max(0, Math.min(sw - side, cx - side / 2));
  const sy = Math.max(0, Math.min(sh - side, cy - side / 2));
  canvas.getContext("2d").drawImage(source, sx, sy, Math.min(side, sw), Math.min(side, sh), 0, 0, canvas.width, canvas.height);
}

async function drawThumbnails(report, items) {
  const url = URL.createObjectURL(state.file);
  try {
    if (report.media_type === "image") {
      const img = new Image();
      img.src = url;
      await img.decode();
      for (const { face, canvas } of items) drawCrop(img, img.naturalWidth, img.naturalHeight, face.box, canvas);
    } else {
      await videoThumbnails(report, items, url);
    }
  } finally {
    URL.revokeObjectURL(url);
  }
}

// Seek a hidden <video> to each face's frame (time from the report) and crop it; skipped if the browser
// cannot decode the video.
async function videoThumbnails(report, items, url) {
  const video = document.createElement("video");
  video.muted = true;
  video.preload = "auto";
  video.src = url;
  await new Promise((resolve, reject) => {
    video.addEventListener("loadeddata", resolve, { once: true });
    video.addEventListener("error", reject, { once: true });
  });
  const times = new Map(report.frame_predictions.map((f) => [f.index, f.timestamp]));
  const fps = report.video && report.video.fps ? report.video.fps : 25;
  for (const { face, canvas } of items) {
    const t = times.get(face.frame_index);
    const target = (t === null || t === undefined ? face.frame_index / fps : t) + 0.5 / fps;
    await new Promise((resolve) => {
      video.addEventListener("seeked", resolve, { once: true });
      video.currentTime = Math.min(target, Math.max(0, video.duration - 0.001));
    });
    // Boxes are in the decoded (rotation-corrected) frame; the <video> element shows the same frame.
    const sx = video.videoWidth / report.dimensions.width, sy = video.videoHeight / report.dimensions.height;
    const [x1, y1, x2, y2] = face.box;
    drawCrop(video, video.videoWidth, video.videoHeight, [x1 * sx, y1 * sy, x2 * sx, y2 * sy], canvas);
  }
}

function downloadJson() {
  const report = state.report;
  if (!report) return;
  const blob = new Blob([JSON.stringify(report, null, 2) + "\n"], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = (report.source || "report").replace(/[\\/]/g, "_") + ".cevit.json";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// -- wiring -------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => {
    if (e.target.files.length) upload(e.target.files[0]);
    e.target.value = ""; // choosing the same file again analyses it again
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => {
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
  $("download").addEventListener("click", downloadJson);
  $("heat-toggle").addEventListener("change", (e) => $("faces").classList.toggle("show-heat", e.target.checked));
  $("api-key").addEventListener("change", loadInfo);
  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawChart, 100); });
  loadInfo();
});
