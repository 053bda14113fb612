/* crystalforge page: form from the plugin registries, runs, live progress, table, viewers, plots.
 * Every text from the server goes into the page through textContent (never innerHTML). */
(function () {
  "use strict";
  var params = new URLSearchParams(location.search);
  if (params.get("token")) sessionStorage.setItem("cf-token", params.get("token"));
  var TOKEN = sessionStorage.getItem("cf-token") || "";
  var state = { plugins: null, runId: null, run: null, source: null, sort: { key: "rank", dir: 1 },
                selA: null, selB: null };
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function withToken(url) {
    return TOKEN ? url + (url.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(TOKEN) : url;
  }
  function api(path, options) {
    options = options || {};
    options.headers = Object.assign({ "Content-Type": "application/json" }, options.headers || {});
    if (TOKEN) options.headers["X-Crystalforge-Token"] = TOKEN;
    return fetch(path, options).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!response.ok) {
          var message = data && typeof data.detail === "string" ? data.detail : "HTTP " + response.status;
          throw new Error(message);
        }
        return data;
      });
    });
  }
  function fmt(value, digits) {
    if (value === null || value === undefined || value === "") return "";
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits === undefined ? 3 : digits);
    return String(value);
  }

  /* ---- the form, from the registries ---- */
  function optionInputs(fieldset, component, prefix) {
    fieldset.textContent = "";
    if (!component || !component.options || !component.options.length) return;
    fieldset.appendChild(el("legend", null, component.name + " options"));
    component.options.forEach(function (option) {
      var label = el("label", null, option.name + " (" + option.type + ")");
      label.title = option.help || "";
      var input;
      if (option.choices) {
        input = el("select");
        option.choices.forEach(function (choice) {
          var o = el("option", null, choice);
          o.value = String(choice);
          if (choice === option.default) o.selected = true;
          input.appendChild(o);
        });
      } else if (option.type === "bool") {
        input = el("select");
        ["", "true", "false"].forEach(function (v) {
          var o = el("option", null, v === "" ? "default (" + option.default + ")" : v);
          o.value = v;
          input.appendChild(o);
        });
      } else {
        input = el("input");
        input.placeholder = option.default === null || option.default === undefined ? "" : String(option.default);
      }
      input.dataset.option = option.name;
      input.dataset.prefix = prefix;
      input.name = prefix + "." + option.name;
      label.appendChild(input);
      fieldset.appendChild(label);
    });
  }

  function fillForm(plugins) {
    state.plugins = plugins;
    var search = $("f-search"), scorer = $("f-scorer");
    plugins.search.forEach(function (c) {
      var o = el("option", null, c.name + " \u2014 " + (c.description || ""));
      o.value = c.name;
      if (c.name === "top-k") o.selected = true;
      search.appendChild(o);
    });
    var none = el("option", null, "none");
    none.value = "";
    scorer.appendChild(none);
    plugins.scorer.forEach(function (c) {
      var o = el("option", null, c.name + " \u2014 " + (c.description || ""));
      o.value = c.name;
      scorer.appendChild(o);
    });
    var byName = function (kind, name) { return plugins[kind].filter(function (c) { return c.name === name; })[0]; };
    search.addEventListener("change", function () { optionInputs($("search-options"), byName("search", search.value), "search"); });
    scorer.addEventListener("change", function () { optionInputs($("scorer-options"), byName("scorer", scorer.value), "scorer"); });
    optionInputs($("search-options"), byName("search", search.value), "search");
    var validators = $("validators");
    plugins.validator.forEach(function (c) {
      var line = el("div", "check");
      var box = el("input");
      box.type = "checkbox";
      box.value = c.name;
      box.checked = !!c.required;
      box.disabled = !!c.required;
      box.id = "v-" + c.name;
      box.dataset.validator = c.name;
      var label = el("label", null, c.name + (c.required ? " *" : ""));
      label.htmlFor = box.id;
      label.title = c.description || "";
      line.appendChild(box);
      line.appendChild(label);
      validators.appendChild(line);
    });
    var list = $("spacegroups");
    plugins.spacegroups.forEach(function (symbol) { var o = el("option"); o.value = symbol; list.appendChild(o); });
    $("f-n").max = plugins.limits.max_n;
    $("server-info").textContent = "device " + plugins.device + " \u00b7 up to " + plugins.limits.max_n +
      " candidates per composition \u00b7 " + plugins.limits.max_queued + " runs may wait";
  }

  function readForm() {
    var options = { search: {}, scorer: {} };
    document.querySelectorAll("[data-option]").forEach(function (input) {
      if (input.value !== "") options[input.dataset.prefix][input.dataset.option] = input.value;
    });
    var body = {
      compositions: $("f-compositions").value.split(/[\s,;]+/).filter(Boolean),
      spacegroup: $("f-spacegroup").value.trim() || null,
      z: $("f-z").value ? Number($("f-z").value) : null,
      n: Number($("f-n").value || 4),
      seed: Number($("f-seed").value || 0),
      search: $("f-search").value,
      search_options: options.search,
      scorer: $("f-scorer").value || null,
      scorer_options: options.scorer,
      require: []
    };
    document.querySelectorAll("[data-validator]").forEach(function (box) {
      if (box.checked && !box.disabled) body.require.push(box.value);
    });
    return body;
  }

  $("run-form").addEventListener("submit", function (event) {
    event.preventDefault();
    $("form-error").textContent = "";
    $("f-submit").disabled = true;
    api("/api/runs", { method: "POST", body: JSON.stringify(readForm()) })
      .then(function (created) { loadRuns(); selectRun(created.id); })
      .catch(function (error) { $("form-error").textContent = error.message; })
      .then(function () { $("f-submit").disabled = false; });
  });

  /* ---- run history ---- */
  function loadRuns() {
    return api("/api/runs").then(function (runs) {
      var list = $("run-list");
      list.textContent = "";
      runs.forEach(function (run) {
        var item = el("li");
        item.dataset.run = run.id;
        if (run.id === state.runId) item.className = "current";
        var top = el("div");
        top.appendChild(el("strong", null, (run.compositions || []).join(", ") + (run.spacegroup ? " \u00b7 " + run.spacegroup : "")));
        top.appendChild(document.createTextNode(" "));
        top.appendChild(el("span", "status " + run.status, run.status));
        item.appendChild(top);
        var s = run.settings || {};
        item.appendChild(el("div", "run-meta", run.valid_count + "/" + run.candidates_count + " valid \u00b7 n=" + run.n +
          " \u00b7 " + (s.search || "") + " \u00b7 seed " + s.seed + (s.scorer ? " \u00b7 " + s.scorer : "") + " \u00b7 " + run.id));
        item.addEventListener("click", function () { selectRun(run.id); });
        list.appendChild(item);
      });
    }).catch(function (error) { $("form-error").textContent = error.message; });
  }

  function selectRun(id) {
    if (state.source) { state.source.close(); state.source = null; }
    state.runId = id;
    state.selA = state.selB = null;
    document.querySelectorAll("#run-list li").forEach(function (li) { li.className = li.dataset.run === id ? "current" : ""; });
    return loadRun(true);
  }

  function loadRun(openStream) {
    var id = state.runId;
    return api("/api/runs/" + encodeURIComponent(id)).then(function (run) {
      if (id !== state.runId) return;
      state.run = run;
      renderHead(run);
      renderTable();
      renderPlots();
      if (!state.selA && run.candidates.length) showCandidate("a", run.candidates[0].name);
      if (!state.selB && run.candidates.length > 1) showCandidate("b", run.candidates[1].name);
      if (openStream && (run.status === "queued" || run.status === "running")) watch(id);
    });
  }

  function watch(id) {
    var source = new EventSource(withToken("/api/runs/" + encodeURIComponent(id) + "/events"));
    state.source = source;
    var lastDone = -1;
    source.addEventListener("progress", function (event) {
      var summary = JSON.parse(event.data);
      if (state.runId !== id) return;
      renderProgress(summary);
      if (summary.progress.done !== lastDone) { lastDone = summary.progress.done; loadRun(false); }
    });
    source.addEventListener("end", function () { source.close(); if (state.source === source) state.source = null; loadRun(false); loadRuns(); });
    source.onerror = function () { source.close(); };
  }

  function renderHead(run) {
    $("run-title").textContent = (run.compositions || []).join(", ") + (run.spacegroup ? " in " + run.spacegroup : "") + " \u2014 " + run.id;
    var s = run.settings || {};
    var parts = ["n=" + run.n, "search " + s.search + (s.search_options && Object.keys(s.search_options).length ? " " + JSON.stringify(s.search_options) : ""),
                 "seed " + s.seed, "scorer " + (s.scorer || "none") + (s.scorer_options && Object.keys(s.scorer_options).length ? " " + JSON.stringify(s.scorer_options) : ""),
                 "model " + (s.model || "default"), "from " + run.source];
    $("run-settings").textContent = parts.join(" \u00b7 ");
    renderProgress(run);
    var zip = $("zip");
    zip.hidden = !run.candidates_count;
    zip.href = withToken("/api/runs/" + encodeURIComponent(run.id) + "/files/run.zip");
  }

  function renderProgress(run) {
    var p = run.progress || {};
    var bar = $("progress");
    bar.max = Math.max(1, p.total || 1);
    bar.value = p.done || 0;
    var text = run.status + ": " + (p.done || 0) + "/" + (p.total || "?") + " structures, " + (p.valid || 0) + " valid";
    if (p.rate) text += ", " + p.rate.toFixed(2) + " structures/s";
    if (run.status === "queued" && run.queue_position !== null && run.queue_position !== undefined) text += " (" + run.queue_position + " runs ahead)";
    if (run.error) text += " \u2014 " + run.error;
    $("progress-text").textContent = text;
    var cancel = $("cancel");
    cancel.hidden = !(run.status === "queued" || run.status === "running");
  }

  $("cancel").addEventListener("click", function () {
    if (!state.runId) return;
    api("/api/runs/" + encodeURIComponent(state.runId), { method: "DELETE" })
      .then(function () { loadRuns(); })
      .catch(function (error) { $("progress-text").textContent = error.message; });
  });

  /* ---- the results table ---- */
  function columns(run) {
    var checks = [];
    run.candidates.forEach(function (c) { (c.checks || []).forEach(function (k) { if (checks.indexOf(k.name) < 0) checks.push(k.name); }); });
    var unit = run.score_unit ? " (" + run.score_unit + ")" : "";
    var cols = [
      { key: "rank", label: "rank", num: true },
      { key: "name", label: "candidate" },
      { key: "formula_found", label: "formula" },
      { key: "spacegroup_asked", label: "sg asked" },
      { key: "spacegroup_found", label: "sg found" },
      { key: "is_valid", label: "valid" }
    ];
    checks.forEach(function (name) { cols.push({ key: "check:" + name, label: name, check: name }); });
    if (run.scorer) cols.push({ key: "score", label: "score" + unit, num: true, digits: 4 });
    cols.push({ key: "volume", label: "volume (\u00c5\u00b3)", num: true, digits: 2 });
    cols.push({ key: "density", label: "density (g/cm\u00b3)", num: true, digits: 3 });
    return cols;
  }
  function checkOf(c, name) { return (c.checks || []).filter(function (k) { return k.name === name; })[0]; }
  function valueOf(c, col) {
    if (col.check) { var k = checkOf(c, col.check); return k ? (k.passed ? 1 : 0) : null; }
    if (col.key === "is_valid") return c.is_valid ? 1 : 0;
    return c[col.key];
  }

  function renderTable() {
    var run = state.run;
    if (!run) return;
    var cols = columns(run);
    var head = $("cands").tHead;
    head.textContent = "";
    var tr = el("tr");
    cols.forEach(function (col) {
      /* check names break after their underscores so the table stays narrow */
      var th = el("th", col.check ? "check-col" : null, col.check ? col.label.split("_").join("_\u200b") : col.label);
      th.dataset.key = col.key;
      if (state.sort.key === col.key) th.className = state.sort.dir > 0 ? "sorted-asc" : "sorted-desc";
      th.addEventListener("click", function () {
        state.sort = { key: col.key, dir: state.sort.key === col.key ? -state.sort.dir : 1 };
        renderTable();
      });
      tr.appendChild(th);
    });
    head.appendChild(tr);
    var query = $("filter").value.trim().toLowerCase();
    var onlyValid = $("only-valid").checked;
    var sortCol = cols.filter(function (c) { return c.key === state.sort.key; })[0] || cols[0];
    var rows = run.candidates.filter(function (c) {
      if (onlyValid && !c.is_valid) return false;
      if (!query) return true;
      var hay = [c.name, c.formula, c.formula_found, c.spacegroup_asked, c.spacegroup_found, c.failed].join(" ").toLowerCase();
      return hay.indexOf(query) >= 0;
    });
    rows.sort(function (a, b) {
      var x = valueOf(a, sortCol), y = valueOf(b, sortCol);
      var xm = x === null || x === undefined || x === "", ym = y === null || y === undefined || y === "";
      if (xm || ym) return xm === ym ? 0 : xm ? 1 : -1;  // missing values last either way
      if (typeof x === "number" && typeof y === "number") return (x - y) * state.sort.dir;
      return String(x).localeCompare(String(y), undefined, { numeric: true }) * state.sort.dir;
    });
    var body = $("cands").tBodies[0];
    body.textContent = "";
    rows.forEach(function (c) {
      var row = el("tr");
      row.dataset.name = c.name;
      if (c.name === state.selA) row.classList.add("sel-a");
      if (c.name === state.selB) row.classList.add("sel-b");
      cols.forEach(function (col) {
        var td;
        if (col.check) {
          var k = checkOf(c, col.check);
          td = el("td", k ? (k.passed ? "pass" : "fail") : "", k ? (k.passed ? "\u2713" : "\u2717") + (k.score !== null && k.score !== undefined && col.check === "bond_length" ? " " + k.score.toFixed(2) : "") : "");
          if (k) td.title = k.message || "";
        } else if (col.key === "is_valid") {
          td = el("td", c.is_valid ? "pass" : "fail", c.is_valid ? "valid" : "invalid");
          td.title = c.failed ? "failed: " + c.failed.split(";").join(", ") : "";
        } else if (col.key === "formula_found") {
          td = el("td", "", c.formula_found || c.formula || "");
          td.title = "asked: " + (c.formula || "");
        } else {
          td = el("td", col.num ? "num" : "", fmt(c[col.key], col.digits));
        }
        row.appendChild(td);
      });
      row.addEventListener("click", function (event) { showCandidate(event.shiftKey ? "b" : "a", c.name); });
      body.appendChild(row);
    });
  }
  $("filter").addEventListener("input", renderTable);
  $("only-valid").addEventListener("change", renderTable);

  /* ---- viewers ---- */
  var viewers = { a: new CrystalViewer($("viewer-a"), { placeholder: "click a row" }),
                  b: new CrystalViewer($("viewer-b"), { placeholder: "shift-click a row to compare" }) };

  function showCandidate(which, name) {
    var run = state.run;
    var c = run && run.candidates.filter(function (x) { return x.name === name; })[0];
    if (!c) return;
    if (which === "a") state.selA = name; else state.selB = name;
    viewers[which].show(c);
    var box = $("downloads-" + which);
    box.textContent = "";
    var stem = c.file ? c.file.replace(/\.cif$/, "") : c.name;
    [["CIF", ".cif"], ["POSCAR", ".vasp"], ["extended XYZ", ".extxyz"]].forEach(function (pair) {
      var a = el("a", "cf-btn", pair[0]);
      a.href = withToken("/api/runs/" + encodeURIComponent(run.id) + "/files/" + encodeURIComponent(stem + pair[1]));
      a.setAttribute("download", stem + pair[1]);
      a.dataset.format = pair[1];
      box.appendChild(a);
    });
    var facts = el("span", "muted", (c.formula_found || c.formula || "") + " \u00b7 " + (c.spacegroup_found || "?") +
      (c.density ? " \u00b7 " + c.density.toFixed(3) + " g/cm\u00b3" : "") + (c.volume ? " \u00b7 " + c.volume.toFixed(2) + " \u00c5\u00b3" : ""));
    box.appendChild(facts);
    var checks = $("checks-" + which);
    checks.textContent = "";
    checks.appendChild(CrystalViewer.checksTable(c));
    renderTable();
  }

  /* ---- plots (plain SVG) ---- */
  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  function ticks(lo, hi) {
    var out = [];
    for (var i = 0; i <= 4; i++) out.push(lo + (hi - lo) * i / 4);
    return out;
  }

  function renderPlots() {
    var run = state.run;
    var scored = !!run.scorer;
    var yKey = scored ? "score" : "bond_length_score";
    $("scatter-caption").textContent = (scored ? "score" + (run.score_unit ? " (" + run.score_unit + ")" : "") : "bond-length score (no scorer)") +
      " vs volume (\u00c5\u00b3); green: valid, red: invalid";
    var points = run.candidates.filter(function (c) { return typeof c.volume === "number" && typeof c[yKey] === "number"; });
    var W = 420, H = 240, L = 56, B = 34, T = 10, R = 10;
    var box = $("plot-scatter");
    box.textContent = "";
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", role: "img" });
    if (points.length) {
      var xs = points.map(function (c) { return c.volume; }), ys = points.map(function (c) { return c[yKey]; });
      var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
      var padX = (x1 - x0) * 0.08 || Math.max(1, Math.abs(x0) * 0.05), padY = (y1 - y0) * 0.08 || Math.max(0.05, Math.abs(y0) * 0.1);
      x0 -= padX; x1 += padX; y0 -= padY; y1 += padY;
      var px = function (x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
      var py = function (y) { return H - B - (y - y0) / (y1 - y0) * (H - B - T); };
      root.appendChild(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }));
      root.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }));
      ticks(x0, x1).forEach(function (v) { root.appendChild(svg("text", { x: px(v), y: H - B + 14, "text-anchor": "middle" }, v.toFixed(1))); });
      ticks(y0, y1).forEach(function (v) { root.appendChild(svg("text", { x: L - 4, y: py(v) + 4, "text-anchor": "end" }, v.toPrecision(3))); });
      root.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "volume (\u00c5\u00b3)"));
      points.forEach(function (c) {
        var dot = svg("circle", { cx: px(c.volume), cy: py(c[yKey]), r: 5, fill: c.is_valid ? "#1a7f37" : "#b42318", "fill-opacity": 0.75 });
        dot.appendChild(svg("title", {}, c.name));
        dot.addEventListener("click", function () { showCandidate("a", c.name); });
        root.appendChild(dot);
      });
    } else {
      root.appendChild(svg("text", { x: 20, y: 30 }, "no candidates with a volume yet"));
    }
    box.appendChild(root);

    var bars = $("plot-checks");
    bars.textContent = "";
    var names = [];
    run.candidates.forEach(function (c) { (c.checks || []).forEach(function (k) { if (names.indexOf(k.name) < 0) names.push(k.name); }); });
    names.push("valid");
    var BH = 22, LW = 150, BW = 240;
    var chart = svg("svg", { viewBox: "0 0 " + (LW + BW + 50) + " " + (names.length * BH + 10), width: "100%", role: "img" });
    names.forEach(function (name, i) {
      var total = 0, passed = 0;
      run.candidates.forEach(function (c) {
        if (name === "valid") { total++; if (c.is_valid) passed++; return; }
        var k = checkOf(c, name);
        if (k) { total++; if (k.passed) passed++; }
      });
      var frac = total ? passed / total : 0;
      var y = 5 + i * BH;
      chart.appendChild(svg("text", { x: LW - 6, y: y + 14, "text-anchor": "end" }, name));
      chart.appendChild(svg("rect", { x: LW, y: y + 3, width: BW, height: BH - 8, fill: "#eef0f3" }));
      chart.appendChild(svg("rect", { x: LW, y: y + 3, width: BW * frac, height: BH - 8, fill: name === "valid" ? "#2456c7" : "#1a7f37" }));
      chart.appendChild(svg("text", { x: LW + BW + 6, y: y + 14 }, passed + "/" + total));
    });
    bars.appendChild(chart);
  }

  /* ---- start ---- */
  api("/api/plugins").then(fillForm).catch(function (error) { $("form-error").textContent = error.message; });
  loadRuns().then(function () {
    var first = document.querySelector("#run-list li");
    if (first && !state.runId) selectRun(first.dataset.run);
  });
  setInterval(function () { if (!document.hidden) loadRuns(); }, 10000);
})();
