/* crystalforge crystal viewer: one candidate in 3D with 3Dmol.js (vendored, no CDN).
 *
 * new CrystalViewer(element).show(item) draws item.structure = {lattice: 3x3 rows (A),
 * species: [symbol], frac: [[x, y, z]]}: the atoms of the unit cell (with their images on
 * the cell faces, edges and corners), bonds, the cell edges, a, b, c labels and a legend of
 * element colours (Jmol scheme). A toggle shows a 2x2x2 supercell. Every text shown comes
 * from textContent, never from HTML.
 */
(function () {
  "use strict";
  var TOL = 1e-3;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function cart(lattice, f) {
    return [0, 1, 2].map(function (k) {
      return f[0] * lattice[0][k] + f[1] * lattice[1][k] + f[2] * lattice[2][k];
    });
  }

  function wrap(x) {
    var w = x - Math.floor(x);
    return w > 1 - TOL ? 0 : w;
  }

  /* atoms of a reps[0] x reps[1] x reps[2] block, with images on its far faces */
  function blockAtoms(structure, reps) {
    var atoms = [];
    structure.frac.forEach(function (f0, i) {
      var f = f0.map(wrap);
      for (var a = 0; a <= reps[0]; a++)
        for (var b = 0; b <= reps[1]; b++)
          for (var c = 0; c <= reps[2]; c++) {
            var g = [f[0] + a, f[1] + b, f[2] + c];
            if (g[0] > reps[0] + TOL || g[1] > reps[1] + TOL || g[2] > reps[2] + TOL) continue;
            atoms.push({ elem: structure.species[i], pos: cart(structure.lattice, g) });
          }
    });
    return atoms;
  }

  /* quaternions [x, y, z, w]: a rotation of `degrees` about unit `axis`, and a product */
  function quat(axis, degrees) {
    var h = degrees * Math.PI / 360, sn = Math.sin(h);
    return [axis[0] * sn, axis[1] * sn, axis[2] * sn, Math.cos(h)];
  }
  function quatMul(a, b) {
    return [a[3] * b[0] + a[0] * b[3] + a[1] * b[2] - a[2] * b[1],
            a[3] * b[1] - a[0] * b[2] + a[1] * b[3] + a[2] * b[0],
            a[3] * b[2] + a[0] * b[1] - a[1] * b[0] + a[2] * b[3],
            a[3] * b[3] - a[0] * b[0] - a[1] * b[1] - a[2] * b[2]];
  }

  function colorOf(symbol) {
    var table = (window.$3Dmol && $3Dmol.elementColors && $3Dmol.elementColors.Jmol) || {};
    var value = table[symbol];
    if (value === undefined) value = 0xff1493;
    return "#" + ("000000" + value.toString(16)).slice(-6);
  }

  function CrystalViewer(container, options) {
    options = options || {};
    this.container = container;
    this.reps = [1, 1, 1];
    this.item = null;
    container.classList.add("cf-viewer");
    var bar = el("div", "cf-viewer-bar");
    this.title = el("span", "cf-viewer-title", options.placeholder || "no structure selected");
    this.superBtn = el("button", "cf-btn", "2\u00d72\u00d72 supercell");
    this.superBtn.type = "button";
    this.superBtn.setAttribute("aria-pressed", "false");
    var resetBtn = el("button", "cf-btn", "reset view");
    resetBtn.type = "button";
    bar.appendChild(this.title);
    bar.appendChild(this.superBtn);
    bar.appendChild(resetBtn);
    this.stage = el("div", "cf-viewer-stage");
    this.legend = el("div", "cf-viewer-legend");
    this.note = el("div", "cf-viewer-note", "drag: rotate \u00b7 scroll: zoom \u00b7 right-drag: move");
    container.appendChild(bar);
    container.appendChild(this.stage);
    container.appendChild(this.legend);
    container.appendChild(this.note);
    var self = this;
    this.superBtn.addEventListener("click", function () {
      self.reps = self.reps[0] === 1 ? [2, 2, 2] : [1, 1, 1];
      self.superBtn.setAttribute("aria-pressed", self.reps[0] === 2 ? "true" : "false");
      self.render(true);
    });
    resetBtn.addEventListener("click", function () { self.render(true); });
    if (!window.$3Dmol) {
      this.stage.appendChild(el("p", "cf-error", "3Dmol.js did not load: the 3D view is unavailable"));
      return;
    }
    this.viewer = $3Dmol.createViewer(this.stage, { backgroundColor: "white", antialias: true });
  }

  CrystalViewer.prototype.show = function (item) {
    this.item = item;
    this.title.textContent = item ? (item.name || "") : "";
    this.render(true);
  };

  CrystalViewer.prototype.render = function (resetView) {
    var item = this.item, viewer = this.viewer;
    this.legend.textContent = "";
    if (!viewer) return;
    var view = resetView ? null : viewer.getView();
    viewer.clear();
    if (!item || !item.structure) {
      if (item) this.legend.appendChild(el("span", "cf-error", "no 3D view: " + (item.structure_error || "structure not readable")));
      viewer.render();
      return;
    }
    var s = item.structure, reps = this.reps;
    var atoms = blockAtoms(s, reps);
    var specs = atoms.map(function (a, i) {
      return { elem: a.elem, x: a.pos[0], y: a.pos[1], z: a.pos[2], index: i, serial: i, bonds: [], bondOrder: [] };
    });
    /* bonds: pairs closer than the server's cutoff for their elements (the bond-length check's rule) */
    var cutoffs = s.bond_cutoffs || {};
    for (var i = 0; i < specs.length; i++)
      for (var j = i + 1; j < specs.length; j++) {
        var limit = (cutoffs[specs[i].elem] || {})[specs[j].elem];
        if (!limit) continue;
        var dx = specs[i].x - specs[j].x, dy = specs[i].y - specs[j].y, dz = specs[i].z - specs[j].z;
        var d2 = dx * dx + dy * dy + dz * dz;
        if (d2 > 0.01 && d2 < limit * limit) {
          specs[i].bonds.push(j); specs[i].bondOrder.push(1);
          specs[j].bonds.push(i); specs[j].bondOrder.push(1);
        }
      }
    viewer.addModel().addAtoms(specs);
    viewer.setStyle({}, { sphere: { scale: 0.28, colorscheme: "Jmol" }, stick: { radius: 0.09, colorscheme: "Jmol" } });
    if (reps[0] > 1) this.drawCell(s.lattice, reps, "#a0a0a0", 0.02);
    this.drawCell(s.lattice, [1, 1, 1], "#222222", 0.035);
    /* the axes from the origin, VESTA-like colours: a red, b green, c blue */
    var AXES = ["#d62728", "#2ca02c", "#1f5fd6"];
    ["a", "b", "c"].forEach(function (name, k) {
      var f = [0, 0, 0];
      f[k] = 1;
      var e = cart(s.lattice, f);
      viewer.addCylinder({ start: { x: 0, y: 0, z: 0 }, end: { x: e[0], y: e[1], z: e[2] }, radius: 0.05,
                           color: AXES[k], fromCap: 1, toCap: 1 });
      f[k] = 1.12;
      var p = cart(s.lattice, f);
      viewer.addLabel(name, { position: { x: p[0], y: p[1], z: p[2] }, fontColor: AXES[k], backgroundColor: "white",
                              backgroundOpacity: 0.8, fontSize: 16, inFront: true, alignment: "center" });
    });
    if (view && !resetView) viewer.setView(view);
    else {
      viewer.zoomTo();
      /* c up, a to the right, b into the screen, then turned a little so depth shows
         (straight down an axis hides atoms behind each other) */
      var q = quatMul(quat([1, 0, 0], 12), quatMul(quat([0, 1, 0], -22), quat([1, 0, 0], -90)));
      var v = viewer.getView();
      viewer.setView([v[0], v[1], v[2], v[3], q[0], q[1], q[2], q[3]]);
      viewer.zoom(0.85);
    }
    viewer.render();
    var seen = {};
    var legend = this.legend;
    s.species.forEach(function (symbol) {
      if (seen[symbol]) return;
      seen[symbol] = true;
      var entry = el("span", "cf-legend-item");
      var swatch = el("span", "cf-swatch");
      swatch.style.background = colorOf(symbol);
      entry.appendChild(swatch);
      entry.appendChild(el("span", null, symbol));
      legend.appendChild(entry);
    });
  };

  CrystalViewer.prototype.drawCell = function (lattice, reps, color, radius) {
    var viewer = this.viewer;
    var corners = [];
    for (var i = 0; i < 8; i++) corners.push([(i & 1) ? reps[0] : 0, (i & 2) ? reps[1] : 0, (i & 4) ? reps[2] : 0]);
    for (var p = 0; p < 8; p++)
      for (var q = p + 1; q < 8; q++) {
        var diff = p ^ q;
        if (diff !== 1 && diff !== 2 && diff !== 4) continue;
        var s = cart(lattice, corners[p]), e = cart(lattice, corners[q]);
        viewer.addCylinder({ start: { x: s[0], y: s[1], z: s[2] }, end: { x: e[0], y: e[1], z: e[2] },
                             radius: radius, color: color, fromCap: 1, toCap: 1 });
      }
  };

  /* a table of checks: name, passed, message (textContent only) */
  CrystalViewer.checksTable = function (item) {
    var table = el("table", "cf-checks");
    var head = el("tr");
    ["check", "result", "message"].forEach(function (h) { head.appendChild(el("th", null, h)); });
    table.appendChild(head);
    (item.checks || []).forEach(function (check) {
      var row = el("tr", check.passed ? "pass" : "fail");
      row.appendChild(el("td", null, check.name + (check.required ? " *" : "")));
      row.appendChild(el("td", null, check.passed ? "pass" : "fail"));
      row.appendChild(el("td", null, check.message || ""));
      table.appendChild(row);
    });
    return table;
  };

  window.CrystalViewer = CrystalViewer;
})();
