// The flame graph's drawing, shared by flamegraph.html (one snapshot) and
// report.html (a run: the peak and the end). _flamegraph.py inlines this
// file into both pages, so that they stay self-contained.
//
// new ctmFlame.Graph(chart, tip, D) draws D, the tree that
// _flamegraph.tree_data() gives (node 0 the root, a parent before its
// children), into the element chart: a box per node, callers above
// callees, each as wide as the memory allocated below it. Hovering a box
// shows its details in tip (a fixed-position element); clicking zooms to
// it, clicking the zoomed box again zooms out. A chart that is not
// displayed (clientWidth 0) draws when it is rendered again.
var ctmFlame = (function () {
  "use strict";
  var ROW = 20;
  // a native node: the native memory (malloc, mmap... by extensions)
  // allocated while its parent frame ran
  var NATIVE_COLOR = "hsl(205, 70%, 70%)";

  // tracemalloc's _format_size
  function fmtSize(size) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    for (var u = 0; u < units.length; u++) {
      if (Math.abs(size) < 100 && units[u] !== "B") {
        return size.toFixed(1) + " " + units[u];
      }
      if (Math.abs(size) < 10 * 1024 || u === units.length - 1) {
        return Math.round(size) + " " + units[u];
      }
      size /= 1024;
    }
  }

  function basename(path) {
    var parts = path.split(/[\\/]/);
    return parts[parts.length - 1];
  }

  // "func (file:line)" when the frame's function is known, else
  // "file:line"
  function place(func, file, line) {
    var at = file + ":" + line;
    return func ? func + " (" + at + ")" : at;
  }

  function Graph(chart, tip, D) {
    var self = this;
    var N = D.parent.length;
    var kids = [], depth = [], native = {};
    var i;
    D.native.forEach(function (n) { native[n] = true; });
    for (i = 0; i < N; i++) {
      kids.push([]);
      depth.push(i === 0 ? 0 : depth[D.parent[i]] + 1);
      if (i > 0) kids[D.parent[i]].push(i);
    }
    kids.forEach(function (k) {
      k.sort(function (a, b) { return D.size[b] - D.size[a]; });
    });
    this.data = D;
    this.kids = kids;
    this.chart = chart;
    this.focus = 0;

    function func(n) {
      return D.func && D.func[n] >= 0 ? D.funcs[D.func[n]] : null;
    }
    this.where = function (n) {
      if (native[n]) return "native memory, allocated under " +
                            self.where(D.parent[n]);
      return n === 0 ? "all"
                     : place(func(n), D.names[D.file[n]], D.line[n]);
    };
    this.label = function (n) {
      if (native[n]) return "native";
      return n === 0 ? "all"
                     : place(func(n), basename(D.names[D.file[n]]),
                             D.line[n]);
    };
    function color(n) {
      if (n === 0) return "hsl(0, 0%, 80%)";
      if (native[n]) return NATIVE_COLOR;
      var s = D.names[D.file[n]], h = 0;
      for (var k = 0; k < s.length; k++) h = (h * 31 + s.charCodeAt(k)) | 0;
      return "hsl(" + (20 + Math.abs(h) % 40) + ", 80%, " +
             (62 + Math.abs(h >> 8) % 16) + "%)";
    }

    function box(n, x, w, d, ancestor) {
      var el = document.createElement("div");
      el.className = ancestor ? "node ancestor" : "node";
      el.style.left = x + "px";
      el.style.top = d * ROW + "px";
      el.style.width = Math.max(w, 1) + "px";
      el.style.background = color(n);
      el.dataset.node = n;
      if (w > 36) el.textContent = self.label(n);
      chart.appendChild(el);
    }
    this.render = function (z) {
      self.focus = z;
      var W = chart.clientWidth;
      if (W === 0) return;            // hidden: drawn when shown
      chart.textContent = "";
      var maxDepth = depth[z];
      var path = [];
      for (var a = z; a !== 0; a = D.parent[a]) path.unshift(a);
      path.unshift(0);
      path.forEach(function (a, d) { if (a !== z) box(a, 0, W, d, true); });
      var stack = [[z, 0, W]];
      while (stack.length) {
        var top = stack.pop(), n = top[0], x = top[1], w = top[2];
        box(n, x, w, depth[n], false);
        if (depth[n] > maxDepth) maxDepth = depth[n];
        var total = D.size[n], cx = x;
        for (var k = 0; k < kids[n].length; k++) {
          var c = kids[n][k];
          var cw = total > 0 ? w * D.size[c] / total : 0;
          if (cw >= 0.5) stack.push([c, cx, cw]);
          cx += cw;
        }
      }
      chart.style.height = (maxDepth + 1) * ROW + "px";
    };

    function nodeOf(target) {
      var el = target.closest ? target.closest(".node") : null;
      return el ? +el.dataset.node : -1;
    }
    chart.addEventListener("mouseover", function (ev) {
      var n = nodeOf(ev.target);
      if (n < 0) return;
      tip.textContent = "";
      var w = document.createElement("div");
      w.className = "where";
      w.textContent = self.where(n);
      tip.appendChild(w);
      if (n > 0 && D.source[n] >= 0 && D.sources[D.source[n]]) {
        var code = document.createElement("code");
        code.textContent = D.sources[D.source[n]];
        tip.appendChild(code);
      }
      var pct = D.size[0] > 0 ? (100 * D.size[n] / D.size[0]).toFixed(1)
                              : "0";
      var info = document.createElement("div");
      info.textContent = "size=" + fmtSize(D.size[n]) + " (" + pct +
          "%), count=" + D.count[n];
      tip.appendChild(info);
      tip.style.display = "block";
    });
    chart.addEventListener("mousemove", function (ev) {
      tip.style.left = Math.min(ev.clientX + 12,
                                window.innerWidth - tip.offsetWidth - 4) +
                       "px";
      tip.style.top = (ev.clientY + 14) + "px";
    });
    chart.addEventListener("mouseout", function () {
      tip.style.display = "none";
    });
    chart.addEventListener("click", function (ev) {
      var n = nodeOf(ev.target);
      if (n >= 0) {
        self.render(n === self.focus ? (n === 0 ? 0 : D.parent[n]) : n);
      }
    });
    window.addEventListener("resize", function () {
      self.render(self.focus);
    });
  }

  // {size, count} of the native nodes
  Graph.prototype.nativeTotals = function () {
    var D = this.data, t = {size: 0, count: 0};
    D.native.forEach(function (n) {
      t.size += D.size[n];
      t.count += D.count[n];
    });
    return t;
  };

  // The summary line and, when there is native memory, the legend with
  // its swatch, written into the elements summary and legend.
  Graph.prototype.describe = function (summary, legend) {
    var D = this.data, nat = this.nativeTotals();
    summary.textContent = "size=" + fmtSize(D.size[0]) + ", count=" +
        D.count[0] + ", " + (D.parent.length - 1 - D.native.length) +
        " frames in the tree";
    legend.textContent = "";
    if (!D.native.length) return;
    legend.appendChild(document.createTextNode(
        " (Python: size=" + fmtSize(D.size[0] - nat.size) + ", count=" +
        (D.count[0] - nat.count) + ";"));
    var swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = NATIVE_COLOR;
    legend.appendChild(swatch);
    legend.appendChild(document.createTextNode(
        "native: size=" + fmtSize(nat.size) + ", count=" + nat.count + ")"));
  };

  // the page's data (_flamegraph.page() puts it in #data)
  function pageData() {
    return JSON.parse(document.getElementById("data").textContent);
  }

  return {Graph: Graph, fmtSize: fmtSize, NATIVE_COLOR: NATIVE_COLOR,
          pageData: pageData};
})();
