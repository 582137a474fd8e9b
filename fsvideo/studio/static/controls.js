// fsvideo studio page, its controls: the frame moved by the scrubber, the keys and the timeline, and
// the before/after compare.  Loaded after studio.js, whose studio state, setFrame and call it uses.
"use strict";

// ------------------------------------------------------------------ moving through the frames
$("scrub").oninput = () => setFrame(parseInt($("scrub").value, 10));
$("prev").onclick = () => setFrame(studio.frame - 1);
$("next").onclick = () => setFrame(studio.frame + 1);
// Arrows: one frame (Shift: ten); Home/End: the first and last frame.  Controls that use these keys
// themselves (text and number boxes, sliders, lists, radio groups, the clip player) keep them.
const FRAME_KEYS = ["ArrowLeft", "ArrowRight", "Home", "End"];
document.addEventListener("keydown", (e) => {
  const t = e.target;
  if (!FRAME_KEYS.includes(e.key) || e.ctrlKey || e.altKey || e.metaKey) return;
  if (["SELECT", "TEXTAREA", "VIDEO"].includes(t.tagName) || t.isContentEditable) return;
  if (t.tagName === "INPUT" && !["checkbox", "button", "submit"].includes(t.type)) return;
  e.preventDefault();                                                     // Home/End would scroll the page
  const step = e.shiftKey ? 10 : 1;
  setFrame({ ArrowLeft: studio.frame - step, ArrowRight: studio.frame + step, Home: 0, End: 1e9 }[e.key]);
});
// The timeline is clicked or dragged like a scrubber (the pointer is captured while the button is down).
function timelineFrame(e) {
  const c = $("timeline"), p = studio.state && studio.state.project;
  if (p) setFrame(Math.floor((e.offsetX / c.clientWidth) * p.timeline.n_frames));
}
$("timeline").onpointerdown = (e) => { $("timeline").setPointerCapture(e.pointerId); timelineFrame(e); };
$("timeline").onpointermove = (e) => { if ($("timeline").hasPointerCapture(e.pointerId)) timelineFrame(e); };

// ------------------------------------------------------------------ before / after
// Before/after: while the compare button or the C key is held, the source frame lies over the edit
// (asked for once per frame: a decode, no generator pass); releasing it shows the edit again at once.
const original = { key: null, url: null };
async function compare(on) {
  const over = $("compare-view");
  studio.comparing = on;
  if (!on) { over.hidden = $("compare-badge").hidden = true; return; }
  const p = studio.state && studio.state.project;
  if (!p) return;
  const here = () => `${studio.state && studio.state.project && studio.state.project.video}#${studio.frame}`;
  const key = here();
  if (original.key !== key) {
    let r, blob;
    try {
      r = await call("render", { frame: studio.frame, edits: [], face: "all", seq: studio.seq, quality: "full",
                                 view: "original", mask: false });
      blob = await r.blob();
    } catch (e) { return key === here() && showError(`compare: ${e.message}`); }
    // Moving while C is held asks for each frame: an answer for a frame left since (answers may come
    // in any order) is dropped, or it would lie over the current frame as its source.
    if (r.status !== 200 || key !== here()) return;
    if (original.url) URL.revokeObjectURL(original.url);
    original.key = key; original.url = URL.createObjectURL(blob);
  }
  if (!studio.comparing) return;                                  // released while the frame came
  over.src = original.url; over.hidden = $("compare-badge").hidden = false;
}
$("compare").onpointerdown = (e) => { $("compare").setPointerCapture(e.pointerId); compare(true); };
$("compare").onpointerup = $("compare").onpointercancel = () => compare(false);
$("compare").onkeydown = (e) => { if ((e.key === " " || e.key === "Enter") && !e.repeat) { e.preventDefault(); compare(true); } };
$("compare").onkeyup = (e) => { if (e.key === " " || e.key === "Enter") compare(false); };
document.addEventListener("keydown", (e) => {
  const t = e.target;
  if (e.key.toLowerCase() !== "c" || e.repeat || e.ctrlKey || e.altKey || e.metaKey) return;
  if (["SELECT", "TEXTAREA"].includes(t.tagName) || (t.tagName === "INPUT" && ["text", "number"].includes(t.type))) return;
  compare(true);
});
document.addEventListener("keyup", (e) => { if (e.key.toLowerCase() === "c" && studio.comparing) compare(false); });
window.addEventListener("blur", () => compare(false));
