// What the two edge-infer pages share: the serve page (app.js: the photo is classified on the
// server) and the `edge-infer web` page (web.js: classified in this browser). Both are one shell,
// static/index.html (edge_infer/web.py swaps the few lines that differ), and this module: pick,
// drop or paste a photo, its preview, the top-k bars, the error line. Each page passes the one
// thing that differs: how a photo becomes an answer.

export const $ = (id) => document.getElementById(id);
const percent = (p) => `${(100 * p).toFixed(1)}%`;
const span = (className, text = "") => Object.assign(document.createElement("span"), { className, textContent: text });

// The model line: its arch (when known), labels, input size, precision and any `more` parts.
export function showModel({ labels, preprocess, precision }, arch, ...more) {
  const [h, w] = preprocess.size;
  $("model").textContent = [arch, `${labels.length} labels`, `${w}×${h} input`, precision, ...more]
    .filter(Boolean).join(" · ");
}

export function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

// An answer, or (score null) the placeholder shown while a photo is classified.
function render(answer) {
  $("label").textContent = answer.label;
  $("score").textContent = answer.score === null ? "" : percent(answer.score);
  $("topk").replaceChildren(...answer.top_k.map(([label, p]) => {
    const fill = span("fill");
    fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    const bar = span("bar");
    bar.setAttribute("aria-hidden", "true");
    bar.append(fill);
    const item = document.createElement("li");
    item.append(Object.assign(span("name", label), { title: label }), bar, span("pct", percent(p)));
    return item;
  }));
  $("timing").textContent = answer.timing;
}

function firstImage(files) {
  return Array.from(files || []).find((f) => f.type.startsWith("image/")) || (files && files[0]);
}

// classify(file, name) -> {label, score, top_k: [[label, p], ...], timing: text}; it throws an
// Error whose message is what the page shows.
export function wire(classify) {
  let previewUrl = null;
  let ticket = 0; // answers for a photo that a newer one replaced are dropped

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
    render({ label: "Classifying…", score: null, top_k: [], timing: "" });
    try {
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

  const input = $("file");
  const drop = $("drop");
  input.addEventListener("change", () => {
    show(input.files[0]);
    input.value = ""; // choosing the same file again classifies it again
  });
  // Dropping anywhere on the page must not navigate away to the file.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => event.preventDefault());
  }
  for (const type of ["dragenter", "dragover"]) drop.addEventListener(type, () => drop.classList.add("dragging"));
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
