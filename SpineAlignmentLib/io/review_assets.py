"""The review page's inline style sheet and script (:mod:`SpineAlignmentLib.io.review`).

Kept as Python strings so that they ship wherever the library does (pip, the
Slicer extension) and the page stays one self-contained file.

The script keeps the decisions per film image (``{"shift": -1|0|1}`` or
``{"level": "T1", "x":, "y":}`` in original film pixels) in the browser's
``localStorage`` (per page path, so a reload keeps the work), shows them on the
cards (a shift renames the drawn labels) and writes them as the anchors CSV
(``image,shift`` / ``image,level,x,y`` / both: ``image,shift,level,x,y``) into
the text box and the download.
"""

CSS = """
:root { color-scheme: dark; }
body { margin: 0; font: 14px/1.35 system-ui, -apple-system, "Segoe UI", sans-serif; background: #1b1d21;
  color: #e6e6e6; display: flex; align-items: flex-start; }
#panel { position: sticky; top: 0; height: 100vh; overflow: auto; width: 300px; flex: none; padding: 10px 14px;
  box-sizing: border-box; background: #24272d; border-right: 1px solid #3a3d44; }
#panel h1 { font-size: 18px; margin: 4px 0 8px; }
#panel .help { color: #b8bcc4; font-size: 13px; }
#panel textarea { width: 100%; box-sizing: border-box; font: 12px/1.3 ui-monospace, monospace; background: #15171a;
  color: #d8f5d0; border: 1px solid #3a3d44; }
#panel .notes { color: #ffc857; font-size: 13px; padding-left: 18px; }
#cards { flex: 1; min-width: 0; padding: 10px 14px; }
.card { content-visibility: auto; contain-intrinsic-size: auto 440px; background: #25282e; border: 2px solid #3a3d44;
  border-radius: 6px; margin: 0 0 10px; padding: 6px 10px 8px; outline: none; }
.card.current { border-color: #4da3ff; }
.card.decided { border-left: 8px solid #3ecf8e; }
.card header { margin-bottom: 6px; }
.card header a { color: #8ab4ff; margin-left: 6px; }
.card.uncertain .conf { color: #ffc857; }
.card.incomplete .conf { color: #ff8080; }
.card .decision { float: right; color: #3ecf8e; font-weight: 600; }
.card .note { color: #ff8080; margin: 4px 0; }
.crops { display: flex; gap: 10px; flex-wrap: wrap; }
figure.crop { margin: 0; }
figure.crop figcaption { color: #9aa0aa; font-size: 12px; }
.frame { position: relative; line-height: 0; background: #000; }
.frame img { height: var(--crop-h); width: auto; display: block; }
figure.top .frame img { cursor: crosshair; }
.frame svg { position: absolute; left: 0; top: 0; width: 100%; height: 100%; pointer-events: none; }
.frame polygon { fill: none; stroke: #4dd0e1; stroke-opacity: 0.7; }
.frame text { fill: #ffe066; stroke: #000; stroke-width: 0.25em; paint-order: stroke; font-weight: 700;
  font-family: system-ui, sans-serif; }
.frame circle.mark { fill: #ff4d6d; stroke: #fff; }
.buttons { margin-top: 6px; }
.buttons button { margin-right: 6px; }
button { background: #33373f; color: #e6e6e6; border: 1px solid #50555f; border-radius: 4px; padding: 3px 8px;
  cursor: pointer; font: inherit; }
button.on { background: #1f6f4a; border-color: #3ecf8e; }
kbd { font: 11px ui-monospace, monospace; border: 1px solid #666; border-radius: 3px; padding: 0 3px; }
details { margin-top: 4px; color: #b8bcc4; font-size: 13px; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("review-config").textContent);
  const cards = Array.from(document.querySelectorAll("section.card"));
  const csvBox = document.getElementById("csv");
  const counts = document.getElementById("counts");
  const storageKey = "spine-align-review:" + location.pathname;
  let decisions = {};
  try { decisions = JSON.parse(localStorage.getItem(storageKey) || "{}") || {}; } catch (e) { decisions = {}; }
  const known = new Set(cards.map(c => c.dataset.image));
  const restored = Object.keys(decisions).filter(k => known.has(k)).length;
  let current = null;

  function save() { try { localStorage.setItem(storageKey, JSON.stringify(decisions)); } catch (e) { /* private mode */ } }
  function round1(v) { return Math.round(v * 10) / 10; }
  function field(v) { const s = String(v); return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }

  function csvText() {
    const rows = cards.filter(c => decisions[c.dataset.image]).map(c => [c.dataset.image, decisions[c.dataset.image]]);
    const shifts = rows.some(r => "shift" in r[1]), points = rows.some(r => "level" in r[1]);
    const cols = ["image"].concat(shifts || !points ? ["shift"] : [], points ? ["level", "x", "y"] : []);
    const lines = [cols.join(",")];
    for (const [image, d] of rows) {
      const v = {image: image, shift: "shift" in d ? d.shift : "", level: d.level || "",
                 x: "x" in d ? round1(d.x) : "", y: "y" in d ? round1(d.y) : ""};
      lines.push(cols.map(k => field(v[k])).join(","));
    }
    return lines.join("\n") + "\n";
  }

  function render(card) {
    const d = decisions[card.dataset.image];
    const shift = d && "shift" in d ? d.shift : 0;
    const names = config.names[card.dataset.proto][String(shift)];
    card.querySelectorAll("text[data-k]").forEach(t => { t.textContent = names[Number(t.dataset.k)]; });
    card.classList.toggle("decided", !!d);
    card.querySelectorAll("button[data-act]").forEach(b => {
      b.classList.toggle("on", !!d && "shift" in d && b.dataset.act === String(d.shift));
    });
    card.querySelector(".decision").textContent = !d ? "" : "level" in d
      ? d.level + " at (" + round1(d.x) + ", " + round1(d.y) + ")"
      : d.shift === 0 ? "confirmed" : "shift " + (d.shift > 0 ? "+" : "") + d.shift;
    const fig = card.querySelector("figure.top");
    if (fig) {
      const mark = fig.querySelector("circle.mark"), s = Number(fig.dataset.s);
      const on = d && "level" in d;
      mark.setAttribute("cx", on ? (d.x - Number(fig.dataset.x0) + 0.5) * s : -99);
      mark.setAttribute("cy", on ? (d.y - Number(fig.dataset.y0) + 0.5) * s : -99);
    }
  }

  function update() {
    csvBox.value = csvText();
    const n = cards.filter(c => decisions[c.dataset.image]).length;
    counts.textContent = n + " of " + cards.length + " films decided" +
      (restored ? " (" + restored + " restored from this browser's earlier session)" : "") + ".";
  }

  function select(card, scroll) {
    if (current) current.classList.remove("current");
    current = card;
    if (!card) return;
    card.classList.add("current");
    if (scroll) card.focus({preventScroll: false});
  }

  function decide(card, act) {
    const image = card.dataset.image;
    if (act === "clear") delete decisions[image]; else decisions[image] = {shift: Number(act)};
    save(); render(card); update();
  }

  function step(delta) {
    const i = current ? cards.indexOf(current) : -1;
    const next = cards[Math.min(Math.max(i + delta, 0), cards.length - 1)];
    if (next) select(next, true);
  }

  document.getElementById("cards").addEventListener("click", ev => {
    const card = ev.target.closest("section.card");
    if (!card) return;
    select(card, false);
    const button = ev.target.closest("button[data-act]");
    if (button) { decide(card, button.dataset.act); return; }
    const fig = ev.target.closest("figure.top");
    if (!fig || ev.target.tagName !== "IMG") return;
    const r = ev.target.getBoundingClientRect(), s = Number(fig.dataset.s);
    const px = (ev.clientX - r.left) * Number(fig.dataset.w) / r.width;
    const py = (ev.clientY - r.top) * Number(fig.dataset.h) / r.height;
    decisions[card.dataset.image] = {level: config.first[card.dataset.proto],
                                     x: Number(fig.dataset.x0) - 0.5 + px / s, y: Number(fig.dataset.y0) - 0.5 + py / s};
    save(); render(card); update();
  });
  document.getElementById("cards").addEventListener("focusin", ev => {
    const card = ev.target.closest("section.card");
    if (card && card !== current) select(card, false);
  });
  document.addEventListener("keydown", ev => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || /^(TEXTAREA|INPUT|SELECT)$/.test(ev.target.tagName)) return;
    const acts = {c: "0", u: "-1", d: "1", x: "clear"};
    if (ev.key === "j" || ev.key === "k") { step(ev.key === "j" ? 1 : -1); ev.preventDefault(); return; }
    if (!(ev.key in acts)) return;
    if (!current) select(cards[0], true);
    if (!current) return;
    decide(current, acts[ev.key]);
    if (ev.key !== "x") step(1);
    ev.preventDefault();
  });
  document.getElementById("download").addEventListener("click", () => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([csvText()], {type: "text/csv"}));
    a.download = config.csvName;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  });
  document.getElementById("clear-all").addEventListener("click", () => {
    if (!window.confirm("Forget every decision on this page?")) return;
    decisions = {}; save(); cards.forEach(render); update();
  });
  cards.forEach(card => { if (decisions[card.dataset.image]) render(card); });
  update();
})();
"""
