// fsvideo studio page: one session per tab (the id lives in this page only), a render loop that
// shows a labelled draft and then the full frame, and polling of inversion / job progress.
"use strict";
const $ = (id) => document.getElementById(id);
const studio = { sid: null, cfg: null, frame: 0, seq: 0, shown: 0, dirty: false, busy: false,
                 edits: [], state: null, drafts: 0, exportJob: null, clipJob: null, imageUrl: null,
                 jobState: {}, opens: 0 };
window.studio = studio;

// An error names what failed; one from a render goes away once a render works again.  A server that
// does not answer (stopped, or a network hiccup) is its own banner, gone when it answers again; the
// change the user made meanwhile is then rendered.
function showError(msg, from = null) { $("error-text").textContent = msg; $("error").hidden = false; studio.errorFrom = from; }
function clearError(from) { if (studio.errorFrom === from) $("error").hidden = true; }
$("error-close").onclick = () => { $("error").hidden = true; };
function connection(ok) {
  $("offline").hidden = ok;
  if (ok && studio.lost) { studio.lost = false; changed(); }
}

async function call(path, body, raw) {
  const url = path.startsWith("/") ? path : `/api/s/${studio.sid}/${path}`;
  const opts = body === undefined ? {} : raw
    ? { method: "POST", body: raw.body, headers: { "X-Filename": encodeURIComponent(raw.name), "Content-Type": "application/octet-stream" } }
    : { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
  let r;
  try { r = await fetch(url, opts); } catch (e) {                    // no answer at all (not an HTTP error)
    const err = new Error("the studio server does not answer (is fsvideo studio still running?)");
    err.network = true; throw err;
  }
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    const err = new Error(msg); err.status = r.status; throw err;
  }
  return r;
}

// ------------------------------------------------------------------ edits panel
function attrOptions() {
  const a = studio.cfg.attributes, opts = [];
  a.released.forEach((n) => opts.push([n, n]));
  a.fitted.forEach((n) => opts.push([n, `${n} (fitted)`]));
  for (let i = 0; i < a.sefa; i++) opts.push([`sefa:${i}`, `sefa:${i}`]);
  (studio.uploads || []).forEach((u) => opts.push([u.attr, `${u.name} (uploaded)`]));
  return opts;
}

function drawEdits() {
  const box = $("edits"); box.textContent = "";
  studio.edits.forEach((e, k) => {
    const row = document.createElement("div"); row.className = "edit-row";
    const sel = document.createElement("select"); sel.className = "attr"; sel.setAttribute("aria-label", "direction");
    attrOptions().forEach(([v, label]) => { const o = new Option(label, v, false, v === e.attr); sel.add(o); });
    const del = document.createElement("button"); del.type = "button"; del.textContent = "×";
    const slider = document.createElement("input");
    Object.assign(slider, { type: "range", min: -5, max: 5, step: 0.1, value: e.strength, className: "strength-slider",
                            title: "double-click: back to 0" });
    const num = document.createElement("input");
    Object.assign(num, { type: "number", min: -50, max: 50, step: 0.1, value: e.strength, className: "strength" });
    const names = () => {                                 // what a screen reader says follows the direction
      del.title = `remove the edit ${e.attr}`; del.setAttribute("aria-label", del.title);
      slider.setAttribute("aria-label", `strength of ${e.attr}`);
      num.setAttribute("aria-label", `strength of ${e.attr} (number)`);
    };
    const set = (v) => { e.strength = v; slider.value = num.value = String(v); changed(); };
    names();
    sel.onchange = () => { e.attr = sel.value; names(); changed(); };
    slider.oninput = () => { e.strength = parseFloat(slider.value); num.value = slider.value; changed(); };
    slider.ondblclick = () => set(0);
    num.onchange = () => set(parseFloat(num.value) || 0);
    del.onclick = () => {                                 // the focus goes on (the rows are new): the next
      studio.edits.splice(k, 1); drawEdits(); changed();   // edit's remove button, else "+ add edit"
      const next = document.querySelectorAll(".edit-row button")[Math.min(k, studio.edits.length - 1)];
      (next || $("add-edit")).focus();
    };
    row.append(sel, del, slider, num); box.append(row);
  });
  $("reset-edits").hidden = !studio.edits.length;
}

$("add-edit").onclick = () => {
  const opts = attrOptions(), used = new Set(studio.edits.map((e) => e.attr));
  const pick = opts.find(([v]) => !used.has(v)) || opts[0];        // a direction not in use yet, when there is one
  if (!pick) return showError("no attribute is available: upload a .npy direction");
  studio.edits.push({ attr: pick[0], strength: 0 }); drawEdits(); changed();
};
$("reset-edits").onclick = () => {
  studio.edits.forEach((e) => { e.strength = 0; }); drawEdits(); changed();
};

$("npy").onchange = async (ev) => {
  const f = ev.target.files[0]; ev.target.value = "";
  if (!f) return;
  try {
    const u = await (await call("direction", null, { body: f, name: f.name })).json();
    (studio.uploads = studio.uploads || []).push(u);
    studio.edits.push({ attr: u.attr, strength: 1 }); drawEdits(); changed();
  } catch (e) { showError(`direction ${f.name}: ${e.message}`); }
};

// ------------------------------------------------------------------ rendering
function request(quality, seq) {
  const view = inverted(studio.frame) ? document.querySelector("input[name=view]:checked").value : "original";
  return { frame: studio.frame, edits: studio.edits, face: $("face").value, seq, quality, view, mask: $("mask").checked };
}

function inverted(i, state = studio.state) {
  const p = state && state.project;
  return !!p && (p.status.state === "ready" || i < p.timeline.inverted);
}

// A frame without latents now (409: not inverted yet, or inverted and dropped from memory until the
// inversion ends) shows its source frame with the reason: the image of the frame left must not stay.
async function renderOnce(quality, seq) {
  const t0 = performance.now();
  let r, waiting = null;
  try {
    try { r = await call("render", request(quality, seq)); } catch (e) {
      if (e.status !== 409 || seq !== studio.seq) throw e;
      waiting = e.message;
      r = await call("render", { ...request("full", seq), view: "original", mask: false });
    }
  } catch (e) {
    if (e.network) { studio.lost = true; connection(false); return false; }
    if (seq !== studio.seq) return false;                             // of a frame or video left since
    if (e.status === 404) { pollSoon(); return false; }            // an unknown session: the poll starts anew
    showError(e.message, "render"); return false;
  }
  connection(true); clearError("render");
  if (r.status === 204 || seq !== studio.seq) return false;          // superseded by a newer change
  const blob = await r.blob();
  if (seq !== studio.seq) return false;
  if (studio.imageUrl) URL.revokeObjectURL(studio.imageUrl);
  studio.imageUrl = URL.createObjectURL(blob);
  const img = $("view");
  await new Promise((ok) => { img.onload = ok; img.onerror = ok; img.src = studio.imageUrl; });
  img.hidden = false; $("placeholder").hidden = true;
  const q = r.headers.get("X-Quality"), size = r.headers.get("X-Size"), note = waiting || r.headers.get("X-Note");
  img.dataset.quality = q; img.dataset.seq = String(seq); studio.shown = seq;
  studio.time = { frame: Number(r.headers.get("X-Frame") ?? -1), t: Number(r.headers.get("X-Time")) };
  drawTimeline();
  if (q === "draft") studio.drafts += 1;
  $("badge").hidden = q !== "draft"; $("badge").textContent = `DRAFT ${size} px`;
  const pending = inverted(studio.frame) ? "" : "original frame: not inverted yet";
  $("note").hidden = !(note || pending); $("note").textContent = note || pending;
  $("timing").textContent = `${q} in ${Math.round(performance.now() - t0)} ms (server ${r.headers.get("X-Render-Ms")} ms)`;
  return true;
}

async function loop() {
  if (studio.busy) return;
  studio.busy = true;
  try {
    while (studio.dirty) {
      studio.dirty = false;
      const seq = studio.seq;
      if (!studio.state || !studio.state.project) break;
      const view = document.querySelector("input[name=view]:checked").value;
      if (view !== "original" && inverted(studio.frame)) {
        await renderOnce("draft", seq);
        if (studio.dirty || seq !== studio.seq) continue;
        if (studio.shown === seq && $("view").dataset.quality === "full") continue;   // no face, no latents: done
      }
      await renderOnce("full", seq);
    }
  } finally { studio.busy = false; }
}

let commandTimer = null;
function changed() {
  studio.seq += 1; studio.dirty = true; loop();
  clearTimeout(commandTimer); commandTimer = setTimeout(updateCommand, 300);
}

let commandSeq = 0;
async function updateCommand() {
  if (!studio.state || !studio.state.project) return;
  const seq = ++commandSeq;                                // an older answer never overwrites a newer one
  let text;
  try {
    text = (await (await call("command", { edits: studio.edits, face: $("face").value })).json()).command;
  } catch (e) {                                          // never a message where a command is copied from
    if (e.network) return;                                 // the last command stands; the banner says why
    text = `# no command: ${e.message}`;
  }
  if (seq === commandSeq) $("command").textContent = text;
}
$("copy-command").onclick = () => navigator.clipboard && navigator.clipboard.writeText($("command").textContent);

document.querySelectorAll("input[name=view]").forEach((el) => { el.onchange = changed; });
$("mask").onchange = changed;
// Picking a face that is not in this frame goes to its next run (or its first): its edit is what the
// user wants to see.
$("face").onchange = () => {
  const p = studio.state && studio.state.project, id = $("face").value;
  const tr = p && p.timeline.tracks.find((t) => String(t.id) === id);
  if (!tr || tr.runs.some(([a, b]) => a <= studio.frame && studio.frame <= b)) return changed();
  const next = tr.runs.find(([a]) => a > studio.frame) || tr.runs[0];
  setFrame(next[0]);
};

// ------------------------------------------------------------------ timeline
function setFrame(i) {
  const n = studio.state && studio.state.project ? studio.state.project.timeline.n_frames : 1;
  studio.frame = Math.max(0, Math.min(n - 1, i | 0));
  $("scrub").value = studio.frame; drawTimeline(); changed();
  if (studio.comparing) compare(true);                          // still held: the new frame's source
}

function drawTimeline() {
  const c = $("timeline"), p = studio.state && studio.state.project;
  c.width = c.clientWidth;
  const g = c.getContext("2d"), W = c.width, H = c.height;
  g.clearRect(0, 0, W, H);
  if (!p) return;
  const t = p.timeline, n = t.n_frames, x = (i) => (i / n) * W;
  const css = getComputedStyle(document.documentElement), color = (name) => css.getPropertyValue(name).trim();
  g.fillStyle = color("--pending"); g.fillRect(x(t.inverted), 0, W - x(t.inverted), H);
  const rows = Math.max(1, Math.min(4, t.tracks.length)), rh = (H - 10) / rows, picked = $("face").value;
  g.font = `${Math.min(12, rh - 3)}px system-ui, sans-serif`; g.textBaseline = "middle";
  t.tracks.forEach((tr, k) => {                  // the picked face's bar stands out; each bar says its face
    g.globalAlpha = picked === "all" || picked === String(tr.id) ? 1 : 0.3;
    g.fillStyle = `hsl(${(210 + 67 * k) % 360} 80% 62%)`;
    tr.runs.forEach(([a, b]) => g.fillRect(x(a), (k % rows) * rh + 1, Math.max(1, x(b + 1) - x(a)), rh - 2));
    const [a, b] = tr.runs.reduce((l, r) => (r[1] - r[0] > l[1] - l[0] ? r : l));
    if (rh >= 9 && x(b + 1) - x(a) > 44) {
      g.fillStyle = "#000"; g.fillText(`face ${tr.id}`, x(a) + 4, (k % rows) * rh + rh / 2);
    }
  });
  g.globalAlpha = 1;
  g.fillStyle = color("--noface");
  t.no_face.forEach(([a, b]) => g.fillRect(x(a), H - 8, Math.max(1, x(b + 1) - x(a)), 7));
  g.fillStyle = "#fff"; g.fillRect(x(studio.frame + 0.5) - 1, 0, 2, H);
  const known = studio.time && studio.time.frame === studio.frame;   // the frame's own timestamp once shown
  const secs = known ? studio.time.t : p.start + studio.frame / p.fps;
  $("frame-label").textContent = `${studio.frame} / ${n - 1}  ${known ? "" : "≈"}${secs.toFixed(2)} s`;
  $("scrub").setAttribute("aria-valuetext", `frame ${studio.frame} of ${n - 1}, ${secs.toFixed(2)} s`);
}

// The same faces: only their frame counts change (in place: an open list stays open while a video inverts).
function updateFaces(tracks) {
  const sel = $("face"), want = ["all", ...tracks.map((t) => String(t.id))];
  const have = Array.from(sel.options).map((o) => o.value);
  const label = (t) => `face ${t.id} (${t.frames} frame${t.frames === 1 ? "" : "s"})`;
  if (want.join() === have.join()) {
    tracks.forEach((t, k) => { if (sel.options[k + 1].text !== label(t)) sel.options[k + 1].text = label(t); });
    return;
  }
  const cur = sel.value; sel.textContent = "";
  sel.add(new Option("all faces", "all"));
  tracks.forEach((t) => sel.add(new Option(label(t), String(t.id))));
  sel.value = want.includes(cur) ? cur : "all";
}

// ------------------------------------------------------------------ jobs and polling
function showJob(job, prefix) {
  const done = job.state === "done";
  studio.jobState[prefix] = job.state;
  $(`${prefix}-btn`).disabled = job.state === "running";               // one at a time: a second would run unseen
  $(`${prefix}-status`).textContent = job.state === "running" ? `${job.done} / ${job.total} frames`
    : job.error ? `${job.state}: ${job.error}` : `${job.state} in ${job.seconds} s`;
  if (prefix === "export") {
    $("export-progress").hidden = !(job.state === "running"); $("export-progress").value = job.done / Math.max(1, job.total);
    $("export-cancel").hidden = job.state !== "running";
    if (job.command) $("command").textContent = job.command;
    $("export-link").hidden = !done;
    if (done) { $("export-link").href = `/api/s/${studio.sid}/file/${job.id}`; $("export-link").textContent = `download ${job.name}`; }
  } else if (done && $("clip").dataset.job !== job.id) {
    const v = $("clip"); v.dataset.job = job.id; v.hidden = false;
    v.src = `/api/s/${studio.sid}/file/${job.id}`; v.play().catch(() => {});
  }
}

// The state is asked for twice a second while something moves (inversion, a job of this tab), every
// few seconds when nothing does (it still notices a stopped server), and at once after a change here.
const POLL_BUSY_MS = 500, POLL_IDLE_MS = 3000, POLL_OFFLINE_MS = 1000;
let pollTimer = null, polling = false, pollAgain = false;
function pollSoon(ms = 0) {
  if (polling) { pollAgain = true; return; }                    // the poll under way asks again when done
  clearTimeout(pollTimer); pollTimer = setTimeout(poll, ms);
}
async function poll() {
  polling = true;
  let wait = POLL_BUSY_MS;
  try { wait = await pollOnce(); } finally { polling = false; }
  const again = pollAgain; pollAgain = false;
  if (wait !== null) pollSoon(again ? 0 : wait);
}

async function pollOnce() {
  const opens = studio.opens;
  let r;
  try { r = await fetch(`/api/s/${studio.sid}/state`); } catch (e) {   // stopped, or restarting: try again
    connection(false); return POLL_OFFLINE_MS;
  }
  connection(true);
  try {
    if (r.status === 404) { restart(r); return null; }             // session gone: a new one polls
    const s = await r.json();
    if (opens !== studio.opens) return 0;           // asked before another video opened: of the last one
    const before = studio.state;
    studio.state = s;
    const p = s.project;
    if (p) {
      $("video-name").textContent = p.video;
      const st = p.status;
      $("inv-progress").value = st.done / Math.max(1, st.total);
      $("inv-text").textContent = st.state === "failed" ? `failed: ${st.error}` : `${st.state} ${st.done} / ${st.total}`;
      const failedBefore = before && before.project && before.project.video === p.video && before.project.status.state === "failed";
      if (st.state === "failed" && !failedBefore) showError(`the inversion of ${p.video} failed: ${st.error}`);
      $("clip-box").hidden = p.is_image;                                  // an image has no clip to play
      $("scrub").max = Math.max(0, p.timeline.n_frames - 1);
      updateFaces(p.timeline.tracks); drawTimeline();
      const first = !before || !before.project || before.project.video !== p.video;
      if (first && studio.want) restore(p, s.jobs);
      if (first || (!inverted(studio.frame, before) && inverted(studio.frame))) changed();
    }
    if (!p && !studio.opening) { $("inv-text").textContent = "no video open"; $("inv-progress").value = 0; }
    for (const j of s.jobs) {
      if (j.id === studio.exportJob) showJob(j, "export");
      if (j.id === studio.clipJob) showJob(j, "clip");
    }
    const moving = (p && ["new", "inverting"].includes(p.status.state)) || s.jobs.some((j) => j.state === "running");
    return moving ? POLL_BUSY_MS : POLL_IDLE_MS;
  } catch (e) { return POLL_BUSY_MS; }                          // an answer that is not the state: ask again
}

$("export-btn").onclick = async () => {
  $("export-btn").disabled = true;                                      // until the job says otherwise
  try {
    const j = await (await call("export", { edits: studio.edits, face: $("face").value })).json();
    studio.exportJob = j.id; showJob(j, "export"); pollSoon();
  } catch (e) { $("export-btn").disabled = false; showError(`export: ${e.message}`); }
};
$("export-cancel").onclick = () => studio.exportJob && call(`cancel/${studio.exportJob}`, {}).then(() => pollSoon())
  .catch((e) => showError(`cancel: ${e.message}`));
$("clip-btn").onclick = async () => {
  $("clip-btn").disabled = true;
  try {
    const j = await (await call("clip", { edits: studio.edits, face: $("face").value, frame: studio.frame,
                                          seconds: parseFloat($("clip-seconds").value) || 2 })).json();
    studio.clipJob = j.id; showJob(j, "clip"); pollSoon();
  } catch (e) { $("clip-btn").disabled = false; showError(`clip: ${e.message}`); }
};

// ------------------------------------------------------------------ opening a video
// Opening hashes and probes the file (seconds for a large one): the page says so and Open waits.  The
// last video's finished export and clip are not offered for the new one (a running job goes on).
function opened(info) {
  studio.seq += 1; studio.opens += 1;     // a render or state of the last video still under way is not shown
  studio.frame = 0; studio.shown = 0; studio.state = null; $("scrub").value = 0;
  $("video-name").textContent = info.video; $("error").hidden = true;
  forgetJobs(false);
  pollSoon();
}
// The export and clip shown no longer apply (another video; running ones go on unless ``all``).
function forgetJobs(all, why = "") {
  for (const prefix of ["export", "clip"]) {
    if (studio.jobState[prefix] === "running" && !all) continue;
    const stopped = studio.jobState[prefix] === "running" && why;
    studio[`${prefix}Job`] = null; studio.jobState[prefix] = null;
    $(`${prefix}-status`).textContent = stopped ? why : ""; $(`${prefix}-btn`).disabled = false;
    if (prefix === "export") $("export-link").hidden = $("export-progress").hidden = $("export-cancel").hidden = true;
    else $("clip").hidden = true;
  }
}
async function openVideo(name, request, path = null) {
  $("open-btn").disabled = $("upload").disabled = studio.opening = true;
  $("inv-text").textContent = `opening ${name}…`; $("inv-progress").removeAttribute("value");   // indeterminate
  try {
    opened(await (await request()).json());
    studio.path = path; studio.uploaded = path ? null : name;           // what a restarted server needs again
  } catch (e) { showError(e.message); pollSoon(); } finally {
    $("open-btn").disabled = $("upload").disabled = studio.opening = false;
  }
}
function openPath(path) {                          // a video by its path on the server's machine
  return openVideo(path.split(/[\\/]/).pop() || path, () => call("open", { path }), path);
}
$("open-form").onsubmit = (ev) => { ev.preventDefault(); openPath($("open-path").value); };
$("upload").onchange = (ev) => {
  const f = ev.target.files[0]; ev.target.value = "";
  if (f) openVideo(f.name, () => call("upload", null, { body: f, name: f.name }));
};
