// fsvideo studio page, a reload and a restarted server: what the tab keeps, and the page's start.
// Loaded last (after studio.js and controls.js, whose state and functions it uses).
"use strict";

// ------------------------------------------------------------------ a reload, a restarted server
// The tab's work outlives a reload: its session id, edits and place go to the next page of this tab
// through sessionStorage, written when the page goes and taken (removed) when the next one starts, so a
// duplicated tab, which copies sessionStorage, never shares the session.  The server gives the session
// back with its video and jobs (a running export goes on showing).  A server restarted under the page
// knows no session: the page starts a new one, opens its video again when it was opened by path, and
// keeps the edits (an uploaded video or direction has to be uploaded again: the server forgot it).
const KEEP = "fsvideo-studio";
function snapshot() {
  return { sid: studio.sid, seq: studio.seq, edits: studio.edits, uploads: studio.uploads || [], face: $("face").value,
           frame: studio.frame, view: document.querySelector("input[name=view]:checked").value, path: studio.path,
           uploaded: studio.uploaded };
}
window.addEventListener("pagehide", () => { if (studio.sid) sessionStorage.setItem(KEEP, JSON.stringify(snapshot())); });
window.addEventListener("pageshow", () => sessionStorage.removeItem(KEEP));   // kept whole (back/forward cache)
function takeKept() {
  const k = sessionStorage.getItem(KEEP); sessionStorage.removeItem(KEEP);
  try { return k ? JSON.parse(k) : null; } catch (e) { return null; }
}

async function start(kept) {
  try {
    studio.cfg = await (await call("/api/session", kept ? { resume: kept.sid } : {})).json();
  } catch (e) { return showError(`cannot start a session: ${e.message}`); }
  studio.sid = studio.cfg.sid;
  if (kept) {
    const resumed = studio.cfg.resumed, lost = kept.edits.filter((e) => !resumed && e.attr.startsWith("upload:"));
    studio.uploads = resumed ? kept.uploads : [];
    if (!resumed) forgetJobs(true, "stopped: the studio was restarted");       // the server forgot them
    studio.edits = kept.edits.filter((e) => !lost.includes(e)); drawEdits();
    studio.want = { face: kept.face, frame: kept.frame, adopt: resumed };
    studio.seq = Math.max(studio.seq, kept.seq | 0);          // the server skips renders older than its last
    const view = document.querySelector(`input[name=view][value="${kept.view}"]`); if (view) view.checked = true;
    studio.path = kept.path; studio.uploaded = resumed ? kept.uploaded : null;
    if (!resumed && kept.path) await openPath(kept.path);
    const again = [...(!resumed && kept.uploaded ? [kept.uploaded] : []), ...lost.map((e) => e.attr.split(":").pop())];
    if (again.length) showError(`the studio was restarted: upload ${again.join(", ")} again`);
  }
}
// A session lost again soon after a new one (the server drops the oldest of too many tabs) is said
// instead: tabs that took new sessions in turn would drop each other for ever.
async function restart(r) {                                 // the server forgot this tab: it was restarted
  if (Date.now() - (studio.restarted || 0) < 30000) { showError((await r.json()).error); return; }
  studio.restarted = Date.now();
  const kept = snapshot(); studio.sid = null; studio.state = null;
  await start(kept);
  if (studio.sid) { clearError("render"); pollSoon(); }
}

// After a reload or a restart: the place and face the tab was at, and (same session) its last export.
function restore(p, jobs) {
  const w = studio.want; studio.want = null;
  studio.frame = Math.max(0, Math.min(p.timeline.n_frames - 1, w.frame | 0)); $("scrub").value = studio.frame;
  if (Array.from($("face").options).some((o) => o.value === w.face)) $("face").value = w.face;
  const job = w.adopt && jobs.filter((j) => j.kind === "export").pop();
  if (job) { studio.exportJob = job.id; showJob(job, "export"); }
}

(async function init() {
  await start(takeKept());
  if (!studio.sid) return;
  $("open-form").hidden = !studio.cfg.allow_paths;
  const miss = studio.cfg.attributes.missing;
  $("missing").textContent = miss.length ? `not downloaded: ${miss.join(", ")} (fsvideo weights download direction-NAME)` : "";
  if (studio.cfg.video) $("video-name").textContent = studio.cfg.video;
  $("placeholder").textContent = studio.cfg.video ? "reading the first frame…"
    : studio.cfg.allow_paths ? "Open a video by its path above, or upload one." : "Upload a video.";
  pollSoon();
})();
window.addEventListener("resize", drawTimeline);
