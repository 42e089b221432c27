// The edge-infer upload page: pick, drop or paste an image; POST it to predict; show top-k.
// URLs are relative, so the page also works where the app is mounted under a prefix.
// Plain JavaScript, no dependencies, nothing fetched from outside this server.
"use strict";

const TOP_K = 5;
const $ = (id) => document.getElementById(id);
let previewUrl = null;
let ticket = 0; // answers to an upload that a newer one replaced are dropped

function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

async function describeModel() {
  try {
    const response = await fetch("info");
    const info = await response.json();
    const [h, w] = info.preprocess.size;
    const arch = info.provenance && info.provenance.arch;
    const parts = [`${info.labels.length} labels`, `${w}×${h} input`, info.precision];
    if (arch) parts.unshift(arch);
    $("model").textContent = parts.join(" · ");
  } catch (err) {
    $("model").textContent = "Model details are unavailable.";
  }
}

function render(answer, roundTripMs) {
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
  $("timing").textContent =
    `${answer.ms.toFixed(1)} ms on the server, ${roundTripMs.toFixed(0)} ms round trip`;
}

async function classify(file) {
  if (!file) return;
  const mine = ++ticket;
  showError(null);
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  $("preview").src = previewUrl;
  $("preview").alt = `The image being classified: ${file.name || "pasted image"}`;
  $("filename").textContent = file.name || "pasted image";
  $("result").hidden = false;
  $("answer").setAttribute("aria-busy", "true");
  $("label").textContent = "Classifying…";
  $("score").textContent = "";
  $("topk").replaceChildren();
  $("timing").textContent = "";

  const form = new FormData();
  form.append("file", file, file.name || "pasted-image");
  const start = performance.now();
  try {
    let response;
    try {
      response = await fetch(`predict?top_k=${TOP_K}`, { method: "POST", body: form });
    } catch (err) {
      throw new Error(`Could not reach the server (${err.message}).`);
    }
    const answer = await response.json().catch(() => ({}));
    if (mine !== ticket) return;
    // The server's errors name the file and say what is wrong: show them as they are.
    if (!response.ok) throw new Error(answer.error || `The server answered HTTP ${response.status}.`);
    render(answer, performance.now() - start);
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
    classify(input.files[0]);
    input.value = ""; // choosing the same file again classifies it again
  });
  // Dropping anywhere on the page must not navigate away to the file.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => event.preventDefault());
  }
  drop.addEventListener("dragenter", () => drop.classList.add("dragging"));
  drop.addEventListener("dragover", () => drop.classList.add("dragging"));
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    drop.classList.remove("dragging");
    classify(firstImage(event.dataTransfer.files));
  });
  window.addEventListener("paste", (event) => {
    const file = firstImage(event.clipboardData && event.clipboardData.files);
    if (file) classify(file);
  });
  describeModel();
}

wire();
