/* aiflat review report: plain JavaScript, no framework, no network. */
(function () {
  "use strict";
  var R = JSON.parse(document.getElementById("report-data").textContent);
  var W = R.overview.width, H = R.overview.height;
  var STORE = "aiflat-review-" + R.key;
  var SVGNS = "http://www.w3.org/2000/svg";
  var byId = {};
  R.shadows.forEach(function (s) { byId[s.id] = s; });

  function $(sel) { return document.querySelector(sel); }
  function esc(t) {
    return String(t === null || t === undefined ? "" : t).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function fmt(v, d) { return (v === null || v === undefined) ? "\u2013" : Number(v).toFixed(d); }

  // ---------------------------------------------------------------- decisions (kept in localStorage)
  var state = {decision: {}, added: [], next: 1};
  try {
    var saved = JSON.parse(localStorage.getItem(STORE) || "null");
    if (saved && saved.decision) { state = saved; }
  } catch (e) { /* file:// without storage: decisions live as long as the page */ }
  function save() {
    try { localStorage.setItem(STORE, JSON.stringify(state)); } catch (e) { /* ignore */ }
    updateCounts();
  }

  // ---------------------------------------------------------------- header
  var hl = R.headline;
  $("#title").textContent = "aiflat review: " + R.title;
  $("#subtitle").textContent = R.outdir + " \u00b7 " + hl.size[0] + "\u00d7" + hl.size[1] + " px \u00b7 " +
    R.provenance.detector + " detector, " + (R.provenance.inpaint || "no") + " flat \u00b7 report " + R.date;
  var nums = [[hl.shadows, "shadows"], [hl.review, "to review"],
              [(100 * hl.masked_fraction).toFixed(3) + " %", "of the pixels masked"],
              [hl.low_trans_px, "px below the floor"]];
  if (hl.residual && hl.residual.residual_ratio !== null) {
    nums.push([hl.residual.residual_ratio.toFixed(3), "residual / dust (vs " + hl.residual.truth + ")"]);
  }
  Object.keys(hl.seconds || {}).forEach(function (k) {
    var reused = (hl.reused || []).indexOf(k) >= 0;
    nums.push([hl.seconds[k].toFixed(1) + " s", k + (reused ? " (reused)" : "")]);
  });
  $("#headline").innerHTML = nums.map(function (n) {
    return '<div class="num"><b>' + esc(n[0]) + "</b><span>" + esc(n[1]) + "</span></div>";
  }).join("");

  // ---------------------------------------------------------------- overview: image, layers, marks
  var viewer = $("#viewer"), stage = $("#stage");
  stage.style.width = W + "px"; stage.style.height = H + "px";
  function addImg(src, cls) {
    var im = document.createElement("img");
    im.src = src; im.width = W; im.height = H; im.draggable = false; im.alt = "";
    im.style.width = W + "px"; im.style.height = H + "px";
    if (cls) { im.className = cls; }
    stage.appendChild(im);
    return im;
  }
  addImg(R.overview.src, "median-img");
  var layerImgs = {};
  var toggles = $("#layer-toggles");
  R.overview.layers.forEach(function (L) {
    var im = addImg(L.src, "layer-img");
    im.style.display = L.on ? "" : "none";
    layerImgs[L.name] = im;
    var lab = document.createElement("label");
    lab.className = "layer";
    lab.title = L.count + " pixels";
    lab.innerHTML = '<input type="checkbox" data-layer="' + esc(L.name) + '"' + (L.on ? " checked" : "") +
      '><i style="background:' + esc(L.color) + '"></i>' + esc(L.name);
    toggles.appendChild(lab);
  });
  toggles.addEventListener("change", function (e) {
    var n = e.target.getAttribute("data-layer");
    if (n) { layerImgs[n].style.display = e.target.checked ? "" : "none"; }
  });
  $("#mask-toggle").addEventListener("change", function (e) {
    stage.classList.toggle("nomask", !e.target.checked);
  });
  var svg = document.createElementNS(SVGNS, "svg");
  svg.id = "marks";
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.setAttribute("width", W); svg.setAttribute("height", H);
  stage.appendChild(svg);
  var marks = {};
  function markRadius(s) { return Math.max(s.diameter / 2, 2) + 2; }
  R.shadows.forEach(function (s) {
    var c = document.createElementNS(SVGNS, "circle");
    c.setAttribute("cx", s.x + 0.5); c.setAttribute("cy", s.y + 0.5); c.setAttribute("r", markRadius(s));
    svg.appendChild(c);
    marks[s.id] = c;
  });
  var addedG = document.createElementNS(SVGNS, "g");
  svg.appendChild(addedG);

  var view = {s: 1, tx: 0, ty: 0};
  var markScale = null;
  function applyView() {
    stage.style.transform = "translate(" + view.tx + "px," + view.ty + "px) scale(" + view.s + ")";
    if (markScale !== view.s) {  // circles never smaller than 10 screen pixels: small shadows stay visible
      markScale = view.s;
      var minR = 10 / view.s;
      R.shadows.forEach(function (s) { marks[s.id].setAttribute("r", Math.max(markRadius(s), minR)); });
    }
  }
  function fit() {
    var vw = viewer.clientWidth, vh = viewer.clientHeight;
    view.s = Math.min(vw / W, vh / H);
    view.tx = (vw - W * view.s) / 2; view.ty = (vh - H * view.s) / 2;
    applyView();
  }
  function zoomAt(f, px, py) {
    var s = Math.min(64, Math.max(0.02, view.s * f));
    f = s / view.s;
    view.tx = px - (px - view.tx) * f; view.ty = py - (py - view.ty) * f; view.s = s;
    applyView();
  }
  function centreOn(x, y, s) {
    view.s = s || Math.max(view.s, 4);
    view.tx = viewer.clientWidth / 2 - (x + 0.5) * view.s;
    view.ty = viewer.clientHeight / 2 - (y + 0.5) * view.s;
    applyView();
  }
  viewer.addEventListener("wheel", function (e) {
    e.preventDefault();
    var r = viewer.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }, {passive: false});
  $("#zoom-in").onclick = function () { zoomAt(1.5, viewer.clientWidth / 2, viewer.clientHeight / 2); };
  $("#zoom-out").onclick = function () { zoomAt(1 / 1.5, viewer.clientWidth / 2, viewer.clientHeight / 2); };
  $("#zoom-fit").onclick = fit;
  $("#zoom-1").onclick = function () { zoomAt(1 / view.s, viewer.clientWidth / 2, viewer.clientHeight / 2); };

  var drag = null, adding = false;
  var radiusInput = $("#add-radius");
  radiusInput.value = R.default_radius;
  function setAdding(on) {
    adding = on;
    $("#add-mode").classList.toggle("on", on);
    viewer.classList.toggle("adding", on);
  }
  $("#add-mode").onclick = function () { setAdding(!adding); };
  viewer.addEventListener("pointerdown", function (e) {
    if (e.button !== 0) { return; }
    drag = {x: e.clientX, y: e.clientY, tx: view.tx, ty: view.ty, moved: false};
    viewer.setPointerCapture(e.pointerId);
  });
  viewer.addEventListener("pointermove", function (e) {
    if (!drag) { return; }
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) > 4) { drag.moved = true; viewer.classList.add("dragging"); }
    if (drag.moved) { view.tx = drag.tx + dx; view.ty = drag.ty + dy; applyView(); }
  });
  viewer.addEventListener("pointerup", function (e) {
    if (!drag) { return; }
    var moved = drag.moved;
    drag = null;
    viewer.classList.remove("dragging");
    if (moved) { return; }
    var r = viewer.getBoundingClientRect();
    // image coordinates, 0-based pixel centres (pixel i spans i-0.5 .. i+0.5)
    var x = (e.clientX - r.left - view.tx) / view.s - 0.5;
    var y = (e.clientY - r.top - view.ty) / view.s - 0.5;
    if (x < -0.5 || y < -0.5 || x > W - 0.5 || y > H - 0.5) { return; }
    if (adding) { addShadow(x, y, parseFloat(radiusInput.value) || R.default_radius); return; }
    var best = null, bd = Infinity;
    R.shadows.forEach(function (s) {
      var d = Math.hypot(s.x - x, s.y - y);
      if (d < markRadius(s) + 6 / view.s && d < bd) { bd = d; best = s; }
    });
    if (best) { select(best.id, true); }
  });

  // ---------------------------------------------------------------- added shadows
  function addShadow(x, y, r) {
    state.added.push({n: state.next++, x: Math.round(x * 100) / 100, y: Math.round(y * 100) / 100,
                      r: Math.round(r * 100) / 100});
    save(); renderAdded();
  }
  function renderAdded() {
    while (addedG.firstChild) { addedG.removeChild(addedG.firstChild); }
    var box = $("#added");
    box.innerHTML = state.added.map(function (a) {
      return '<div class="card added-card" data-add="' + a.n + '"><div class="card-head"><b>+' + a.n +
        '</b><span class="tag">added by you</span></div><dl><dt>centre</dt><dd>x ' + fmt(a.x, 1) + ", y " +
        fmt(a.y, 1) + "</dd><dt>radius</dt><dd>" + fmt(a.r, 1) + ' px</dd></dl><div class="btns">' +
        '<button data-act="unadd">remove</button><button data-act="showadd">show on image</button></div></div>';
    }).join("");
    state.added.forEach(function (a) {
      var c = document.createElementNS(SVGNS, "circle");
      c.setAttribute("cx", a.x + 0.5); c.setAttribute("cy", a.y + 0.5); c.setAttribute("r", a.r);
      c.setAttribute("class", "added");
      addedG.appendChild(c);
    });
  }
  $("#added").addEventListener("click", function (e) {
    var b = e.target.closest("button"), card = e.target.closest(".card");
    if (!b || !card) { return; }
    var n = parseInt(card.getAttribute("data-add"), 10);
    var a = state.added.filter(function (q) { return q.n === n; })[0];
    if (b.getAttribute("data-act") === "unadd") {
      state.added = state.added.filter(function (q) { return q.n !== n; });
      save(); renderAdded();
    } else if (a) { centreOn(a.x, a.y); viewer.scrollIntoView({block: "nearest"}); }
  });

  // ---------------------------------------------------------------- gallery
  var gallery = $("#gallery");
  function cardHTML(s) {
    var rows = [["confidence", fmt(s.confidence, 2)], ["diameter", fmt(s.diameter, 1) + " px"],
                ["area", fmt(s.area, 0) + " px"], ["depth", fmt(s.depth, 3)],
                ["centre", "x " + fmt(s.x, 1) + ", y " + fmt(s.y, 1)], ["flat", s.flat_method],
                ["found by", s.found_by + (s.source ? " (" + s.source + ")" : "")]];
    if (s.low_trans) { rows.push(["below floor", s.low_trans + " px"]); }
    if (s.distance_mm !== null) { rows.push(["dust at", fmt(s.distance_mm, 2) + " mm"]); }
    if (s.note) { rows.push(["note", s.note]); }
    return '<div class="card' + (s.review ? " review" : "") + '" id="card-' + s.id + '" data-id="' + s.id +
      '" tabindex="-1"><div class="card-head"><b>#' + s.id + "</b>" +
      (s.review ? '<span class="tag review">REVIEW</span>' : "") + '<span class="tag st"></span></div>' +
      '<div class="thumbs"><img alt="shadow ' + s.id + '"></div><div class="captions"><span>median</span>' +
      "<span>mask outline</span><span>calibrated</span></div>" +
      '<div class="row2"><svg class="profile" viewBox="0 0 150 92"></svg><dl>' +
      rows.map(function (r) { return "<dt>" + esc(r[0]) + "</dt><dd>" + esc(r[1]) + "</dd>"; }).join("") +
      '</dl></div><div class="btns"><button data-act="accept">\u2713 accept</button>' +
      '<button data-act="reject">\u2717 reject</button><button data-act="show">show on image</button></div></div>';
  }
  gallery.innerHTML = R.shadows.map(cardHTML).join("");
  var cards = {};
  Array.prototype.forEach.call(gallery.children, function (el) { cards[el.getAttribute("data-id")] = el; });
  if (!R.shadows.length) {
    gallery.insertAdjacentHTML("beforebegin", '<p class="empty">The detector found no shadow. If you see one ' +
      "on the image, press <b>+ add a shadow</b> and click on it, then Export.</p>");
  }

  function drawProfile(el, s) {
    var p = s.profile, n = 0;
    Object.keys(p).forEach(function (k) { n = Math.max(n, p[k].length); });
    var x0 = 18, x1 = 146, y0 = 6, y1 = 80, lo = 0.9, hi = 1.1;
    Object.keys(p).forEach(function (k) {
      p[k].forEach(function (v) { if (v !== null) { lo = Math.max(0, Math.min(lo, v - 0.03)); hi = Math.max(hi, Math.min(v, 2) + 0.02); } });
    });
    function X(i) { return x0 + (x1 - x0) * i / Math.max(n - 1, 1); }
    function Y(v) { return y1 - (y1 - y0) * (Math.min(v, hi) - lo) / (hi - lo); }
    var out = ['<line x1="' + x0 + '" x2="' + x1 + '" y1="' + Y(1) + '" y2="' + Y(1) +
               '" stroke="#bbb" stroke-dasharray="3 2"/>',
               '<text x="2" y="' + (Y(1) + 3) + '">1</text><text x="2" y="' + (Y(lo) + 3) + '">' + lo.toFixed(2) +
               '</text><text x="' + x0 + '" y="90">0</text><text x="' + (x1 - 40) + '" y="90">r = ' + (n - 1) + ' px</text>'];
    var colours = {observed: "#888", flat: "#f80", calibrated: "#2a2"};
    Object.keys(p).forEach(function (k) {
      var d = "", pen = false;
      p[k].forEach(function (v, i) {
        if (v === null) { pen = false; return; }
        d += (pen ? "L" : "M") + X(i).toFixed(1) + " " + Y(v).toFixed(1) + " ";
        pen = true;
      });
      out.push('<path d="' + d + '" fill="none" stroke="' + colours[k] + '" stroke-width="' +
               (k === "observed" ? 1 : 1.6) + '"/>');
    });
    el.innerHTML = out.join("");
  }
  function reveal(el) {
    var s = byId[el.getAttribute("data-id")];
    if (!s || el.getAttribute("data-shown")) { return; }
    el.setAttribute("data-shown", "1");
    var im = el.querySelector(".thumbs img");
    im.decoding = "async";
    im.src = "data:image/png;base64," + s.thumb;
    drawProfile(el.querySelector(".profile"), s);
  }
  if ("IntersectionObserver" in window) {
    var io = new IntersectionObserver(function (entries) {
      entries.forEach(function (en) { if (en.isIntersecting) { reveal(en.target); io.unobserve(en.target); } });
    }, {rootMargin: "600px 0px"});
    Object.keys(cards).forEach(function (k) { io.observe(cards[k]); });
  } else {
    Object.keys(cards).forEach(function (k) { reveal(cards[k]); });
  }

  function decide(id, what) {
    if (what) { state.decision[id] = what; } else { delete state.decision[id]; }
    save(); paint(id);
  }
  function paint(id) {
    var s = byId[id], el = cards[id], d = state.decision[id];
    el.classList.toggle("accept", d === "accept");
    el.classList.toggle("reject", d === "reject");
    el.querySelector("[data-act=accept]").classList.toggle("on", d === "accept");
    el.querySelector("[data-act=reject]").classList.toggle("on", d === "reject");
    var st = el.querySelector(".st");
    st.className = "tag st" + (d ? " state-" + d : "");
    st.textContent = d === "accept" ? "accepted" : d === "reject" ? "rejected" : "";
    var cls = d || (s.review ? "review" : "dust");
    marks[id].setAttribute("class", cls + (selected === id ? " sel" : ""));
  }
  var selected = null;
  function select(id, scroll) {
    var old = selected;
    selected = id;
    if (old !== null && cards[old]) { cards[old].classList.remove("sel"); paint(old); }
    if (id === null || !cards[id]) { return; }
    cards[id].classList.add("sel");
    paint(id);
    if (scroll) {
      if (cards[id].classList.contains("hidden")) { $("#filter").value = "all"; applyFilter(); }
      cards[id].scrollIntoView({block: "center"});
      cards[id].focus({preventScroll: true});
    }
  }
  gallery.addEventListener("click", function (e) {
    var card = e.target.closest(".card");
    if (!card) { return; }
    var id = parseInt(card.getAttribute("data-id"), 10), b = e.target.closest("button");
    select(id, false);
    if (!b) { return; }
    var act = b.getAttribute("data-act");
    if (act === "show") { showOnImage(id); return; }
    decide(id, state.decision[id] === act ? null : act);
  });
  function showOnImage(id) {
    var s = byId[id];
    centreOn(s.x, s.y, Math.max(view.s, Math.min(16, 120 / Math.max(s.diameter, 4))));
    viewer.scrollIntoView({block: "nearest"});
  }
  $("#accept-rest").onclick = function () {
    R.shadows.forEach(function (s) { if (!state.decision[s.id]) { state.decision[s.id] = "accept"; paint(s.id); } });
    save();
  };

  function visibleOrder() {
    return Array.prototype.filter.call(gallery.children, function (el) { return !el.classList.contains("hidden"); })
      .map(function (el) { return parseInt(el.getAttribute("data-id"), 10); });
  }
  function applyFilter() {
    var f = $("#filter").value;
    R.shadows.forEach(function (s) {
      var d = state.decision[s.id], show = f === "all" || (f === "review" && s.review) ||
        (f === "undecided" && !d) || f === d;
      cards[s.id].classList.toggle("hidden", !show);
    });
  }
  $("#filter").onchange = applyFilter;
  $("#sort").onchange = function () {
    var how = $("#sort").value, list = R.shadows.slice();
    var key = {id: function (s) { return s.id; }, confidence: function (s) { return s.confidence; },
               depth: function (s) { return -s.depth; }, size: function (s) { return -s.diameter; }}[how];
    if (key) { list.sort(function (a, b) { return (key(a) || 0) - (key(b) || 0) || a.id - b.id; }); }
    list.forEach(function (s) { gallery.appendChild(cards[s.id]); });
  };

  document.addEventListener("keydown", function (e) {
    var t = e.target.tagName;
    if (t === "INPUT" || t === "TEXTAREA" || t === "SELECT" || e.ctrlKey || e.metaKey || e.altKey) { return; }
    var order = visibleOrder(), i = order.indexOf(selected);
    if (e.key === "j" || e.key === "k") {
      var next = order[e.key === "j" ? Math.min(i + 1, order.length - 1) : Math.max(i - 1, 0)];
      if (next !== undefined) { select(next, true); }
    } else if ((e.key === "a" || e.key === "r") && selected !== null) {
      decide(selected, e.key === "a" ? "accept" : "reject");
      var after = order[i + 1];
      if (after !== undefined) { select(after, true); }
    } else if (e.key === "u" && selected !== null) { decide(selected, null);
    } else if (e.key === "s" && selected !== null) { showOnImage(selected);
    } else if (e.key === "n") { setAdding(!adding);
    } else if (e.key === "m") { var m = $("#mask-toggle"); m.checked = !m.checked; m.dispatchEvent(new Event("change"));
    } else if (e.key === "+" || e.key === "=") { $("#zoom-in").onclick();
    } else if (e.key === "-") { $("#zoom-out").onclick();
    } else if (e.key === "0") { fit();
    } else { return; }
    e.preventDefault();
  });

  function updateCounts() {
    var a = 0, r = 0;
    Object.keys(state.decision).forEach(function (k) { if (state.decision[k] === "accept") { a++; } else { r++; } });
    var left = R.shadows.length - a - r;
    $("#counts").innerHTML = "<b>" + a + "</b> accepted \u00b7 <b>" + r + "</b> rejected \u00b7 <b>" +
      state.added.length + "</b> added \u00b7 <b>" + left + "</b> not decided";
  }

  // ---------------------------------------------------------------- export
  function regionText() {
    var rej = R.shadows.filter(function (s) { return state.decision[s.id] === "reject"; });
    var lines = ["# Region file format: DS9 version 4.1",
                 "# aiflat review of " + R.outdir + " (report " + R.date + ", mask " + R.key + "): " +
                 rej.length + " rejected, " + state.added.length + " added",
                 "# rerun: aiflat run VIDEO -o OUTDIR --exclude-regions review.reg --include-regions review.reg",
                 'global color=green width=1 font="helvetica 9 normal roman"', "image"];
    rej.forEach(function (s) {
      lines.push("circle(" + (s.x + 1).toFixed(2) + "," + (s.y + 1).toFixed(2) + "," + s.reject_r.toFixed(2) +
                 ") # color=red text={reject " + s.id + "} tag={reject}");
    });
    state.added.forEach(function (a) {
      lines.push("circle(" + (a.x + 1).toFixed(2) + "," + (a.y + 1).toFixed(2) + "," + a.r.toFixed(2) +
                 ") # color=cyan text={add " + a.n + "} tag={include}");
    });
    return lines.join("\n") + "\n";
  }
  function decisionsJSON() {
    var pick = function (what) {
      return R.shadows.filter(function (s) { return state.decision[s.id] === what; })
        .map(function (s) { return {id: s.id, x: s.x, y: s.y}; });
    };
    return JSON.stringify({
      report: R.outdir, mask_key: R.key, video: R.video, exported: new Date().toISOString(),
      coordinates: "0-based pixel centres, rows top-down (as in the FITS arrays)",
      accepted: pick("accept"), rejected: pick("reject"),
      undecided: R.shadows.filter(function (s) { return !state.decision[s.id]; }).map(function (s) { return s.id; }),
      added: state.added.map(function (a) { return {x: a.x, y: a.y, radius: a.r}; })
    }, null, 1) + "\n";
  }
  function download(name, text, mime) {
    var a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([text], {type: mime}));
    a.download = name;
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 2000);
  }
  $("#export").onclick = function () {
    var reg = regionText(), js = decisionsJSON();
    $("#export-reg").value = reg;
    $("#export-json").value = js;
    $("#export-cmd").textContent = "aiflat run " + (R.video || "VIDEO") + " -o " + R.outdir +
      " --exclude-regions review.reg --include-regions review.reg\n# or, on the median alone:\n" +
      "aiflat detect " + R.outdir + "/median.fits -o mask.fits --exclude-regions review.reg --include-regions review.reg";
    $("#export-section").hidden = false;
    download("review.reg", reg, "text/plain");
    setTimeout(function () { download("review.json", js, "application/json"); }, 400);
    document.body.setAttribute("data-exported", String(Date.now()));
  };

  // ---------------------------------------------------------------- figures and provenance
  var figs = [];
  if (R.figures.summary) { figs.push('<img alt="summary" src="' + R.figures.summary + '">'); }
  if (R.figures.drift) { figs.push('<figure><img alt="drift" src="' + R.figures.drift +
                                   '"><figcaption>image drift (measured flat)</figcaption></figure>'); }
  $("#figures").innerHTML = figs.join("");
  var P = R.provenance, h = [];
  h.push('<table class="prov"><tr><th>software</th><td>' + esc(P.software) + "</td></tr><tr><th>detector</th><td>" +
         esc(P.detector) + "</td></tr><tr><th>flat method</th><td>" + esc(P.inpaint) + "</td></tr>" +
         (P.ncombine ? "<tr><th>frames in the median</th><td>" + esc(P.ncombine) + "</td></tr>" : "") +
         (P.ai.ai_model ? "<tr><th>AI model</th><td>" + esc(P.ai.ai_model) + "</td></tr>" : "") +
         (P.ai.prompt_sha256 ? "<tr><th>prompt SHA-256</th><td><code>" + esc(P.ai.prompt_sha256) + "</code></td></tr>" : "") +
         (P.ai.response_sha256 ? "<tr><th>response SHA-256</th><td><code>" + esc(P.ai.response_sha256) +
          "</code></td></tr>" : "") + "</table>");
  if (P.ai.ai_prompt) { h.push("<details><summary>AI prompt</summary><pre>" + esc(P.ai.ai_prompt) + "</pre></details>"); }
  h.push('<h3>Files</h3><table class="prov"><tr><th></th><th>file</th><th>SHA-256</th></tr>' +
         P.files.map(function (f) {
           return "<tr><td>" + esc(f.what) + "</td><td>" + esc(f.name) + "</td><td><code>" + esc(f.sha256) + "</code></td></tr>";
         }).join("") + "</table>");
  if (P.history.length) {
    h.push("<h3>Steps</h3><ul>" + P.history.map(function (x) { return "<li>" + esc(x) + "</li>"; }).join("") + "</ul>");
  }
  h.push("<details><summary>parameters</summary><pre>" + esc(JSON.stringify(P.params, null, 1)) + "</pre></details>");
  $("#provenance").innerHTML = h.join("");

  R.shadows.forEach(function (s) { paint(s.id); });
  renderAdded();
  updateCounts();
  fit();
  window.addEventListener("resize", fit);
  document.body.setAttribute("data-ready", "1");
}());
