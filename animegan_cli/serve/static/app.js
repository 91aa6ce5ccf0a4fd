// The try-it page: one request per photo (the server batches them), results shown as they come.
"use strict";

const MAX_IN_FLIGHT = 4;
const drop = document.getElementById("drop");
const picker = document.getElementById("files");
const results = document.getElementById("results");
const queue = [];
let inFlight = 0;

function addPair(file) {
  const pair = document.createElement("div");
  pair.className = "pair pending";
  const original = document.createElement("img");
  original.src = URL.createObjectURL(file);
  original.alt = "original: " + file.name;
  const result = document.createElement("div");
  result.className = "result";
  const status = document.createElement("div");
  status.className = "status";
  status.textContent = file.name + ": waiting";
  pair.append(original, result, status);
  results.append(pair);
  return { file, pair, result, status };
}

// The form's fields, each sent only when set: an empty choice leaves the server's default.
const FIELDS = ["format", "size", "keep_size", "colour"];

// Sizes over the server's --max-size would only be refused: they are not offered. The
// photo's own size (0) goes too, as most photos are larger than such a cap.
function offerAllowedSizes() {
  const choice = document.getElementById("size");
  const maxSize = Number(choice.dataset.maxSize || 0);
  if (!maxSize) return;
  for (const option of choice.options) {
    const value = Number(option.value);
    if (option.value !== "" && (value === 0 || value > maxSize)) option.disabled = true;
  }
}
offerAllowedSizes();

// What to tell a person for an answer that is not a result.
function problem(response, error, token) {
  if (response.status === 401) {
    return token ? "wrong token" : "this server needs a token: type it in the Token box";
  }
  return error.detail || response.statusText || "HTTP " + response.status;
}

async function convert(job) {
  const body = new FormData();
  body.append("files", job.file, job.file.name);
  for (const name of FIELDS) {
    const value = document.getElementById(name).value;
    if (value !== "") body.append(name, value);
  }
  const headers = {};
  const token = document.getElementById("token").value;
  if (token) headers["Authorization"] = "Bearer " + token;
  job.status.textContent = job.file.name + ": converting";
  try {
    let response = await fetch("animeify", { method: "POST", body, headers });
    while (response.status === 503) {  // busy: wait as the server says, then try again
      const wait = Number(response.headers.get("Retry-After") || 1);
      job.status.textContent = job.file.name + ": server busy, retrying in " + wait + " s";
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      response = await fetch("animeify", { method: "POST", body, headers });
    }
    if (!response.ok) {
      const error = await response.json().catch(() => ({}));
      throw new Error(problem(response, error, token));
    }
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const img = document.createElement("img");
    img.src = url;
    img.alt = "result: " + job.file.name;
    const link = document.createElement("a");
    const ext = blob.type.split("/")[1].replace("jpeg", "jpg");
    link.href = url;
    link.download = job.file.name.replace(/\.[^.]*$/, "") + "_anime." + ext;
    link.textContent = "download";
    job.result.append(img, link);
    const cached = response.headers.get("X-Animegan-Cached") === "true" ? " (cached)" : "";
    job.status.textContent = job.file.name + ": done" + cached;
    job.pair.className = "pair done";
  } catch (err) {
    job.status.textContent = job.file.name + ": failed: " + err.message;
    job.pair.className = "pair failed";
  }
}

function pump() {
  while (inFlight < MAX_IN_FLIGHT && queue.length) {
    const job = queue.shift();
    inFlight += 1;
    convert(job).finally(() => { inFlight -= 1; pump(); });
  }
}

function add(files) {
  for (const file of files) queue.push(addPair(file));
  pump();
}

picker.addEventListener("change", () => { add(picker.files); picker.value = ""; });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  add(e.dataTransfer.files);
});
