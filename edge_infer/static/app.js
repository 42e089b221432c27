// The edge-infer serve page: the photo is POSTed to predict and the server's top-k shown (the
// page itself is page.js, shared with the `edge-infer web` page). URLs are relative, so the page
// also works where the app is mounted under a prefix. No dependencies, nothing fetched from
// outside this server.
import { $, showModel, wire } from "./page.js";

const TOP_K = 5;

async function describeModel() {
  try {
    const response = await fetch("info");
    const info = await response.json();
    showModel(info, info.provenance && info.provenance.arch);
  } catch (err) {
    $("model").textContent = "Model details are unavailable.";
  }
}

async function classify(file) {
  const form = new FormData();
  form.append("file", file, file.name || "pasted-image");
  const start = performance.now();
  let response;
  try {
    response = await fetch(`predict?top_k=${TOP_K}`, { method: "POST", body: form });
  } catch (err) {
    throw new Error(`Could not reach the server (${err.message}).`);
  }
  const answer = await response.json().catch(() => ({}));
  // The server's errors name the file and say what is wrong: show them as they are.
  if (!response.ok) throw new Error(answer.error || `The server answered HTTP ${response.status}.`);
  const roundTrip = performance.now() - start;
  return { ...answer, timing: `${answer.ms.toFixed(1)} ms on the server, ${roundTrip.toFixed(0)} ms round trip` };
}

wire(classify);
describeModel();
