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

// A folder as a job (POST /jobs): the server keeps the photos and styles them in the
// background; the page polls the job's state and offers its results as one ZIP.
const JOB_POLL_MS = 500;
const folder = document.getElementById("folder");
const jobs = document.getElementById("jobs");

function formFields(body) {
  for (const name of FIELDS) {
    const value = document.getElementById(name).value;
    if (value !== "") body.append(name, value);
  }
}

function authHeaders() {
  const token = document.getElementById("token").value;
  return token ? { Authorization: "Bearer " + token } : {};
}

async function submitJob(files) {
  const images = Array.from(files).filter((file) => file.type.startsWith("image/"));
  const box = document.createElement("div");
  box.className = "job running";
  const bar = document.createElement("progress");
  bar.max = images.length;
  bar.value = 0;
  const status = document.createElement("span");
  status.className = "status";
  status.textContent = " sending " + images.length + " photo(s)";
  box.append(bar, status);
  jobs.append(box);
  const body = new FormData();
  for (const file of images) body.append("files", file, file.name);
  formFields(body);
  try {
    const response = await fetch("jobs", { method: "POST", body, headers: authHeaders() });
    const job = await response.json().catch(() => ({}));
    if (response.status !== 202) throw new Error(problem(response, job, authHeaders().Authorization));
    await followJob(job, box, bar, status);
  } catch (err) {
    status.textContent = " job failed: " + err.message;
    box.className = "job failed";
  }
}

async function followJob(job, box, bar, status) {
  for (;;) {
    const response = await fetch(job.url.slice(1), { headers: authHeaders() });
    const state = await response.json();
    if (!response.ok) throw new Error(state.detail || "HTTP " + response.status);
    const counts = state.counts;
    bar.value = counts.done + counts.failed;
    status.textContent = " job " + state.state + ": " + counts.done + " of " + counts.total +
      " done" + (counts.failed ? ", " + counts.failed + " failed" : "");
    if (state.state !== "queued" && state.state !== "running") {
      if (counts.done) await offerResults(state, box);
      box.className = "job " + state.state;
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, JOB_POLL_MS));
  }
}

async function offerResults(state, box) {
  const response = await fetch(state.results_url.slice(1), { headers: authHeaders() });
  if (!response.ok) throw new Error("HTTP " + response.status);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = "animegan-" + state.id + ".zip";
  link.textContent = " download the results (ZIP)";
  box.append(link);
}

folder.addEventListener("change", () => { submitJob(folder.files); folder.value = ""; });
