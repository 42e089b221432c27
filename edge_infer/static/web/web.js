// The edge-infer static page: pick, drop, paste or take a photo (page.js, shared with the serve
// page); the browser decodes it (EXIF orientation applied), preprocess.js turns it into the
// model's uint8 tensor exactly as edge_infer.preprocess does, and onnxruntime-web (WebAssembly)
// runs the model here. Nothing is uploaded. manifest.json (written by `edge-infer web`) says what
// the model needs; on load the file's canaries are run and judged as `edge-infer verify` does.
import { $, showError, showModel, wire } from "./page.js";
import { fitToSize, rgbaToRgb, topK } from "./preprocess.js";

const MAX_PIXELS = 50_000_000; // edge_infer.preprocess.DEFAULT_MAX_PIXELS
let manifest = null;
let ort = null;
let session = null;
let verdict = null; // the canary check (checkCanaries), null for a file without canaries

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
  showModel(manifest, manifest.arch, `${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? "s" : ""}`);
  $("title").textContent = manifest.title;
  document.title = manifest.title;
  verdict = manifest.canaries ? await checkCanaries(await (await fetch(manifest.canaries)).json()) : null;
  showVerdict(verdict);
  document.body.dataset.ready = "true";
}

// zlib (RFC 1950) is what the Compression Streams standard calls "deflate".
async function inflate(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const argmax = (row) => row.reduce((best, p, i) => (p > row[best] ? i : best), 0);
const margin = (row) => {
  const [a, b] = [...row].sort((x, y) => y - x);
  return a - (b ?? 0);
};

// edge_infer.verify.check on this browser's answers: every probability within the tolerance of
// the stored ones (the int8 file's own for an int8 file), and, against the stored fp32 answers,
// no changed top-1 where their top-2 margin is at least the confident margin.
async function checkCanaries(canaries) {
  const rule = manifest.verify;
  const [count] = canaries.shape;
  const probs = await run(await inflate(canaries.pixels), count);
  const int8 = manifest.precision === "int8" && canaries.int8;
  const stored = int8 ? canaries.int8 : canaries.fp32;
  const tolerance = int8 ? rule.int8_max_diff : rule.fp32_max_diff;
  const classes = stored[0].length;
  let maxDiff = 0, top1Same = 0, confidentFlips = 0;
  for (let i = 0; i < count; i++) {
    const row = probs.subarray(i * classes, (i + 1) * classes);
    row.forEach((p, j) => { maxDiff = Math.max(maxDiff, Math.abs(p - stored[i][j])); });
    if (argmax(row) === argmax(stored[i])) top1Same++;
    const fp32 = canaries.fp32[i];
    if (margin(fp32) >= rule.confident_margin && argmax(row) !== argmax(fp32)) confidentFlips++;
  }
  return { count, maxDiff, top1Same, confidentFlips, tolerance, int8: Boolean(int8),
    passed: maxDiff <= tolerance && confidentFlips === 0 };
}

function showVerdict(v) {
  const line = $("canaries");
  line.hidden = false;
  if (!v) {
    line.textContent = "This model file carries no canaries, so this browser cannot check that it " +
      "computes what export checked (re-export it with python -m export).";
    return;
  }
  const flips = v.int8 ? `, confident flips vs fp32 ${v.confidentFlips}` : "";
  const rule = `max |dp| <= ${v.tolerance}` +
    (v.int8 ? `, no confident flip vs fp32 (margin >= ${manifest.verify.confident_margin})` : "");
  line.textContent = `Canaries in this browser: ${manifest.precision} file, ${v.count} canaries, max |dp| ` +
    `${v.maxDiff.toPrecision(2)}${flips}, top-1 equal ${v.top1Same}/${v.count}: ` +
    `${v.passed ? "PASS" : "FAIL"} (${rule})` +
    (v.passed ? "" : ". This browser does not compute what export checked: its answers may be wrong.");
  line.className = v.passed ? "muted" : "error";
}

// The photo as the model's uint8 tensor: decoded upright, transparent pixels on the model's
// background (as Python does), then edge_infer.preprocess.fit_to_size.
async function preprocess(blob, name = "image") {
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
  return fitToSize(rgbaToRgb(ctx.getImageData(0, 0, width, height).data), width, height, pre);
}

async function run(tensor, n = 1) {
  const [h, w] = manifest.preprocess.size;
  const input = new ort.Tensor("uint8", tensor, [n, h, w, 3]);
  const outputs = await session.run({ [manifest.input]: input });
  return Float32Array.from(outputs[manifest.output].data);
}

async function classify(blob, name = "image") {
  if (!session) throw new Error("The model is not loaded (see the message above).");
  const start = performance.now();
  const tensor = await preprocess(blob, name);
  const t1 = performance.now();
  const probabilities = await run(tensor);
  const t2 = performance.now();
  const top = topK(probabilities, manifest.labels, manifest.top_k);
  return { label: top[0][0], score: top[0][1], top_k: top, probabilities,
    ms: { preprocess: t1 - start, model: t2 - t1 },
    timing: `${(t2 - t1).toFixed(1)} ms model, ${(t1 - start).toFixed(1)} ms decode + resize, in this browser` };
}

// For tests and benchmarks (tests/test_web_browser.py): the same steps the page takes.
window.edgeInfer = {
  ready: null,
  preprocess, run, classify,
  threads: () => (ort ? ort.env.wasm.numThreads : null),
  canaries: () => verdict,
  async timeModel(runs, warmup = 3) { // model-only latency on a fixed tensor, ms per call
    const [h, w] = manifest.preprocess.size;
    const tensor = new Uint8Array(h * w * 3).fill(128);
    const times = [];
    for (let i = -warmup; i < runs; i++) {
      const t = performance.now();
      await run(tensor);
      if (i >= 0) times.push(performance.now() - t);
    }
    return times;
  },
};

wire(classify);
window.edgeInfer.ready = load().catch((err) => {
  $("model").textContent = "The model could not be loaded.";
  showError(`Could not load the model or onnxruntime-web (${err.message}). ` +
    "Serve this folder over http (python -m http.server), not from file://.");
  throw err;
});
