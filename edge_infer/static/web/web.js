// The edge-infer static page: pick, drop, paste or take a photo; the browser decodes it (EXIF
// orientation applied), preprocess.js turns it into the model's uint8 tensor exactly as
// edge_infer.preprocess does, and onnxruntime-web (WebAssembly) runs the model here. Nothing is
// uploaded. manifest.json (written by `edge-infer web`) says what the model needs.
import { fitToSize, rgbaToRgb, topK } from "./preprocess.js";

const $ = (id) => document.getElementById(id);
const MAX_PIXELS = 50_000_000; // edge_infer.preprocess.DEFAULT_MAX_PIXELS
let manifest = null;
let ort = null;
let session = null;
let previewUrl = null;
let ticket = 0; // answers for a photo that a newer one replaced are dropped

const percent = (p) => `${(100 * p).toFixed(1)}%`;

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

// Threads need a cross-origin isolated page (COOP/COEP headers); ?threads=N overrides.
function threadCount() {
  const asked = Number(new URLSearchParams(location.search).get("threads"));
  if (asked >= 1) return asked;
  return self.crossOriginIsolated ? Math.min(navigator.hardwareConcurrency || 1, 4) : 1;
}

async function load() {
  manifest = await (await fetch("manifest.json")).json();
  const base = new URL(manifest.ort.base, document.baseURI).href;
  ort = await import(`${base}ort.wasm.min.mjs`);
  ort.env.wasm.wasmPaths = base;
  ort.env.wasm.numThreads = threadCount();
  session = await ort.InferenceSession.create(manifest.model.file, { executionProviders: ["wasm"] });
  const [h, w] = manifest.preprocess.size;
  const parts = [`${manifest.labels.length} labels`, `${w}×${h} input`, manifest.precision,
    `${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? "s" : ""}`];
  if (manifest.arch) parts.unshift(manifest.arch);
  $("title").textContent = manifest.title;
  document.title = manifest.title;
  $("model").textContent = parts.join(" · ");
  document.body.dataset.ready = "true";
}

// The photo as RGB bytes, upright, transparent pixels on the model's background (as Python does).
async function decode(blob, name) {
  const pre = manifest.preprocess;
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {
      imageOrientation: pre.exif_transpose ? "from-image" : "none",
      premultiplyAlpha: "none", colorSpaceConversion: "none",
    });
  } catch (err) {
    const kind = blob.type ? ` (${blob.type})` : "";
    throw new Error(`${name}: this browser cannot decode this file${kind}; ` +
      "try a JPEG, PNG or WebP, or classify it with edge-infer predict");
  }
  const { width, height } = bitmap;
  if (width * height > MAX_PIXELS) {
    bitmap.close();
    throw new Error(`${name}: ${width}x${height} is over the limit of ${MAX_PIXELS.toLocaleString("en")} pixels`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const [r, g, b] = pre.background;
  ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { width, height, rgb: rgbaToRgb(ctx.getImageData(0, 0, width, height).data) };
}

async function preprocess(blob, name = "image") {
  const { width, height, rgb } = await decode(blob, name);
  return fitToSize(rgb, width, height, manifest.preprocess);
}

async function run(tensor) {
  const [h, w] = manifest.preprocess.size;
  const input = new ort.Tensor("uint8", tensor, [1, h, w, 3]);
  const outputs = await session.run({ [manifest.input]: input });
  return Float32Array.from(outputs[manifest.output].data);
}

async function classify(blob, name) {
  const start = performance.now();
  const tensor = await preprocess(blob, name);
  const t1 = performance.now();
  const probabilities = await run(tensor);
  const t2 = performance.now();
  const top = topK(probabilities, manifest.labels, manifest.top_k);
  return { label: top[0][0], score: top[0][1], top_k: top, probabilities,
    ms: { preprocess: t1 - start, model: t2 - t1 } };
}

function render(answer) {
  $("label").textContent = answer.label;
  $("score").textContent = percent(answer.score);
  const list = $("topk");
  list.replaceChildren();
  for (const [label, p] of answer.top_k) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = label;
    name.title = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    bar.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = percent(p);
    item.append(name, bar, pct);
    list.append(item);
  }
  $("timing").textContent = `${answer.ms.model.toFixed(1)} ms model, ` +
    `${answer.ms.preprocess.toFixed(1)} ms decode + resize, in this browser`;
}

async function show(file) {
  if (!file) return;
  const mine = ++ticket;
  const name = file.name || "pasted image";
  showError(null);
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  $("preview").src = previewUrl;
  $("preview").alt = `The image being classified: ${name}`;
  $("filename").textContent = name;
  $("result").hidden = false;
  $("answer").setAttribute("aria-busy", "true");
  $("label").textContent = "Classifying…";
  $("score").textContent = "";
  $("topk").replaceChildren();
  $("timing").textContent = "";
  try {
    if (!session) throw new Error("The model is not loaded (see the message above).");
    const answer = await classify(file, name);
    if (mine === ticket) render(answer);
  } catch (err) {
    if (mine !== ticket) return;
    $("result").hidden = true;
    showError(err.message);
  } finally {
    if (mine === ticket) $("answer").setAttribute("aria-busy", "false");
  }
}

function firstImage(files) {
  return Array.from(files || []).find((f) => f.type.startsWith("image/")) || (files && files[0]);
}

function wire() {
  const input = $("file");
  const drop = $("drop");
  input.addEventListener("change", () => {
    show(input.files[0]);
    input.value = ""; // choosing the same file again classifies it again
  });
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => event.preventDefault());
  }
  drop.addEventListener("dragenter", () => drop.classList.add("dragging"));
  drop.addEventListener("dragover", () => drop.classList.add("dragging"));
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    drop.classList.remove("dragging");
    show(firstImage(event.dataTransfer.files));
  });
  window.addEventListener("paste", (event) => {
    const file = firstImage(event.clipboardData && event.clipboardData.files);
    if (file) show(file);
  });
}

// For tests and benchmarks (tests/test_web_browser.py): the same steps the page takes.
window.edgeInfer = {
  ready: null,
  preprocess: (blob) => preprocess(blob),
  run: (tensor) => run(tensor),
  classify: (blob, name = "image") => classify(blob, name),
  threads: () => (ort ? ort.env.wasm.numThreads : null),
  async timeModel(runs, warmup = 3) { // model-only latency on a fixed tensor, ms per call
    const [h, w] = manifest.preprocess.size;
    const tensor = new Uint8Array(h * w * 3).fill(128);
    for (let i = 0; i < warmup; i++) await run(tensor);
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      await run(tensor);
      times.push(performance.now() - t);
    }
    return times;
  },
};

wire();
window.edgeInfer.ready = load().catch((err) => {
  $("model").textContent = "The model could not be loaded.";
  showError(`Could not load the model or onnxruntime-web (${err.message}). ` +
    "Serve this folder over http (python -m http.server), not from file://.");
  throw err;
});
