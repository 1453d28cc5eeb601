/* pacore view: the browser side. Plain JS, no build step.
 *
 * Every text that comes from a run or a study (prompts, answers, ids, names) is hostile: it is
 * put in the page ONLY as text (textContent / createTextNode / SVG text nodes), never parsed as
 * HTML. Numbers are formatted here; every statistic (intervals, paired differences, flags) is
 * computed by the Python side and only displayed.
 *
 * Data comes from the local server's /api (fetch, same origin) or, in an exported file, from
 * the <script type="application/json" id="pacore-data"> block (JSON.parse, never eval).
 */
(function () {
  "use strict";

  var EDGE_LIMIT = 4000;   // above this many edges, only the selected node's references are drawn
  var POLL_MS = 2000;      // live updates: how often the server is asked whether data changed
  var ROW_LIMIT = 500;     // problem rows shown before "show all"
  var KEY_STORE = "pacore-view-key";

  // ---------- DOM, text only ----------
  function h(tag, props) {
    var el = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        var v = props[k];
        if (v === undefined || v === null) return;
        if (k === "className") el.className = v;
        else if (k === "text") el.textContent = String(v);
        else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
        else if (k === "dataset") Object.keys(v).forEach(function (d) { el.dataset[d] = String(v[d]); });
        else el.setAttribute(k, String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }
  function add(el) {  // add(el, child, ...): nodes, arrays of them, or strings (as text)
    for (var i = 1; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === undefined || child === null || child === false) continue;
      if (Array.isArray(child)) { child.forEach(function (c) { add(el, c); }); continue; }
      el.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
  }
  function pre(text) { return h("pre", { className: "text", text: text === null || text === undefined ? "—" : text }); }
  function pct(x, digits) { return x === null || x === undefined ? "—" : (100 * x).toFixed(digits === undefined ? 0 : digits) + "%"; }
  function num(x, digits) {
    if (x === null || x === undefined) return "—";
    return Number(x).toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 0 : digits });
  }
  function of(n, base, rate) { return rate === null || rate === undefined ? "—" : pct(rate) + " (" + n + "/" + base + ")"; }
  function badge(status) { return h("span", { className: "badge st-" + cls(status), text: status === null || status === undefined ? "—" : status }); }
  function cls(s) { return String(s).replace(/[^a-z_]/g, ""); }

  // ---------- data backends ----------
  var embedded = document.getElementById("pacore-data");
  var api = embedded ? embeddedApi(JSON.parse(embedded.textContent)) : serverApi();

  function runKey(arm, problem, sample) { return JSON.stringify(["run", arm, problem, Number(sample)]); }
  function traceKey(name, index) { return JSON.stringify(["trace", name, Number(index)]); }

  function embeddedApi(bundle) {
    function found(v, what) { return v === undefined ? Promise.reject(new Error("not in this file: " + what)) : Promise.resolve(v); }
    return {
      live: false,
      source: function () { return Promise.resolve(bundle.source); },
      version: function () { return Promise.resolve(bundle.source.version); },
      traces: function () { return found(bundle.traces, "trace list"); },
      study: function () { return found(bundle.study, "study"); },
      trace: function (name, index) { return found(bundle.runs[traceKey(name, index)], name); },
      run: function (arm, problem, sample) { return found(bundle.runs[runKey(arm, problem, sample)], arm + " " + problem); }
    };
  }

  function serverApi() {
    function get(path, params) {
      var q = params ? "?" + new URLSearchParams(params).toString() : "";
      var headers = {};
      var key = sessionStorage.getItem(KEY_STORE);
      if (key) headers.Authorization = "Bearer " + key;
      return fetch("api/" + path + q, { headers: headers, cache: "no-store" }).then(function (r) {
        return r.json().then(function (body) {
          if (r.status === 401) { var e = new Error("api key"); e.auth = true; throw e; }
          if (!r.ok) throw new Error(body && body.error ? body.error.message : "HTTP " + r.status);
          return body;
        });
      });
    }
    return {
      live: true,
      source: function () { return get("source"); },
      version: function () { return get("version").then(function (b) { return b.version; }); },
      traces: function () { return get("traces"); },
      study: function () { return get("study"); },
      trace: function (name, index) { return get("trace", { name: name, index: index }); },
      run: function (arm, problem, sample) { return get("run", { arm: arm, problem: problem, sample: sample }); }
    };
  }

  // ---------- page frame and routing ----------
  var app = document.getElementById("app");
  var state = { source: null, version: null, sort: { col: null, dir: 1 }, filters: {}, allPairs: false,
                showAll: false, selected: null, cy: null, render: null };
  window.pacoreView = state;  // for tests and the console: the graph (state.cy) and what is shown

  function frame(title, crumbs) {
    app.textContent = "";
    var live = h("span", { className: "live", id: "live" }, api.live ? "live" : "exported file (static)");
    var top = h("header", { className: "top" }, h("strong", { text: "pacore view" }), crumbs, h("span", { text: title }), live);
    var main = h("main");
    add(app, [top, main]);
    return main;
  }
  function homeLink() { return h("a", { href: "#/", text: state.source ? state.source.name : "home" }); }

  function route() {
    var parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    var go;
    if (parts[0] === "run" && parts.length >= 4) go = function () { return api.run(parts[1], parts[2], parts[3]).then(showRun); };
    else if (parts[0] === "trace" && parts.length >= 2) go = function () { return api.trace(parts[1], parts[2] || 0).then(showRun); };
    else go = home;
    state.render = go;
    // live: the home views (study, trace list) and a single trace file re-render on a change;
    // a stored run of a study never changes
    state.liveView = go === home || parts[0] === "trace" && state.source.kind === "trace";
    return go().catch(showError);
  }
  function home() {
    if (state.source.kind === "study") return api.study().then(showStudy);
    return api.traces().then(function (list) {
      if (state.source.kind === "trace" && list.length === 1 && !list[0].error) return api.trace(list[0].name, 0).then(showRun);
      return showTraces(list);
    });
  }
  function showError(err) {
    if (err && err.auth) return askKey();
    var main = frame("error", homeLink());
    add(main, h("p", { className: "error", text: String(err && err.message ? err.message : err) }));
  }
  function askKey() {
    var main = frame("API key", null);
    var input = h("input", { type: "password", id: "key", autocomplete: "off", size: 40 });
    var form = h("form", { className: "key", onsubmit: function (ev) {
      ev.preventDefault(); sessionStorage.setItem(KEY_STORE, input.value); start();
    } }, h("p", { text: "This viewer was started with an API key. Enter it (it stays in this tab only)." }), input, " ",
      h("button", { type: "submit", text: "open" }));
    add(main, form);
  }

  // ---------- trace list (a server's --trace-dir, or a file of n runs) ----------
  function showTraces(list) {
    var main = frame(state.source.path, homeLink());
    add(main, h("h2", { text: list.length + " run(s)" }));
    var rows = list.slice().reverse().map(function (t) {
      var link = t.error ? h("span", { className: "error", text: t.error })
        : h("a", { href: "#/trace/" + encodeURIComponent(t.name) + "/" + t.index, text: t.name + (t.index ? " [" + t.index + "]" : "") });
      return h("tr", null, h("td", { className: "left" }, link), h("td", { className: "left", text: t.problem_id || "" }),
        h("td", { className: "left", text: t.topology || "" }), h("td", { text: num(t.nodes) }), h("td", { text: num(t.failed) }),
        h("td", { text: num(t.effective_ttc) }), h("td", { className: "left", text: t.answer === null || t.answer === undefined ? "—" : String(t.answer).slice(0, 80) }));
    });
    add(main, table(["run", "problem", "topology", "nodes", "failed", "TTC", "answer"], rows, "traces"));
  }

  function table(headers, rows, id) {
    var head = h("tr", null, headers.map(function (x, i) { return h("th", { className: i === 0 ? "left" : "", text: x }); }));
    return h("table", { className: "grid", id: id }, h("thead", null, head), h("tbody", null, rows));
  }

  // ---------- run view ----------
  var GRADE_COLOR = { correct: "#2e9d4a", wrong: "#d9534f", timeout: "#a66bbe", error: "#8a8f99", failed: "#333333",
    cancelled: "#e08a1e", skipped: "#d5d9e0" };
  var STATUS_COLOR = { ok: "#4a78c2", failed: "#222222", cancelled: "#e08a1e", timed_out: "#a66bbe", skipped: "#d5d9e0" };

  function showRun(view) {
    var t = view.trace, t0 = performance.now();
    var crumbs = [homeLink(), " / "];
    var main = frame(view.title || t.problem_id || "run", crumbs);
    var byId = {};
    t.nodes.forEach(function (n) { byId[n.id] = n; });
    var sink = t.sink ? byId[t.sink] : null;

    var problem = (t.problem || []).map(function (m) { return m.content; }).join("\n\n");
    var answer = view.outcome ? view.outcome.answer : (sink ? sink.answer : null);
    var head = h("div", { className: "kv", id: "run-head" },
      h("span", { className: "k", text: "problem" }), h("span", null, t.problem_id),
      h("span", { className: "k", text: "topology" }), h("span", { text: (t.topology_name || t.kind || "") + " · " + t.nodes.length + " nodes" }),
      h("span", { className: "k", text: "effective TTC" }), h("span", { text: num(t.effective_ttc) }),
      h("span", { className: "k", text: t.sink ? "sink's answer" : "answer (vote)" }),
      h("span", { id: "sink-answer" }, view.outcome ? badge(view.outcome.status) : null, " ", answer === null || answer === undefined ? "—" : String(answer),
        view.outcome && view.outcome.flags && view.outcome.flags.flip ? h("span", { className: "badge st-wrong", text: "right→wrong flip" }) : null,
        view.outcome && view.outcome.flags && view.outcome.flags.emergent ? h("span", { className: "badge st-correct", text: "emergent" }) : null),
      t.error ? h("span", { className: "k", text: "error" }) : null, t.error ? h("span", { className: "error", text: t.error }) : null,
      t.degraded ? h("span", { className: "k", text: "degraded" }) : null, t.degraded ? h("span", { text: "a node failed; the run went on without it" }) : null,
      (t.policy_events || []).length ? h("span", { className: "k", text: "policies" }) : null,
      (t.policy_events || []).length ? h("span", { id: "policy-events", text: t.policy_events.map(function (e) {
        return e.policy + " (round " + e.round + "): " + e.detail + (e.answered_from ? "; answered from " + e.answered_from : "");
      }).join(" · ") }) : null);
    add(main, head);
    add(main, h("details", null, h("summary", { text: "problem text" }), pre(problem)));
    if (t.sink) add(main, h("details", null, h("summary", { text: "sink's message" }), pre(t.answer)));

    var legend = h("div", { className: "legend" },
      view.graded ? [legendItem(GRADE_COLOR.correct, "correct"), legendItem(GRADE_COLOR.wrong, "wrong"), legendItem(GRADE_COLOR.error, "no verdict")]
        : legendItem(STATUS_COLOR.ok, "ok"),
      legendItem(STATUS_COLOR.failed, "failed"), legendItem(STATUS_COLOR.cancelled, "cancelled"), legendItem(STATUS_COLOR.timed_out, "timed out"),
      legendItem(STATUS_COLOR.skipped, "skipped (a policy)"),
      h("span", { className: "muted", text: "x: agent, y: round; click a node; its references are numbered in prompt order" }));
    var find = h("input", { id: "find", placeholder: "node id, e.g. r1.a0", size: 16 });
    var tools = h("div", { className: "toolbar" },
      t.sink ? h("button", { id: "select-sink", text: "select the sink", onclick: function () { select(t.sink, true); } }) : null,
      h("form", { onsubmit: function (ev) { ev.preventDefault(); if (byId[find.value]) select(find.value, true); } }, find, h("button", { text: "find" })),
      legend);
    add(main, tools);
    var graph = h("div", { id: "graph" });
    var panel = h("div", { className: "panel", id: "details" }, h("p", { className: "muted", text: "Click a node to see its prompt, reasoning, message, usage, seed, attempts, truncations and errors." }));
    add(main, h("div", { className: "run-layout" }, graph, panel));
    add(main, h("h2", { text: "per round" }));
    add(main, table(["round", "nodes", "failed", "skipped", "tokens", "message accuracy", "consensus", "cross-check", "wall s"],
      view.rounds.map(function (r) {
        return h("tr", null, h("td", { className: "left", text: r.round }), h("td", { text: r.nodes }), h("td", { text: r.failed }),
          h("td", { text: r.skipped || 0 }),
          h("td", { text: num(r.tokens) }), h("td", { text: pct(r.accuracy) }), h("td", { text: pct(r.consensus) }),
          h("td", { text: pct(r.cross_check) }), h("td", { text: r.seconds === null || r.seconds === undefined ? "—" : r.seconds.toFixed(2) }));
      }), "rounds"));

    var t1 = performance.now();
    var cy = drawGraph(graph, t.nodes);
    state.cy = cy;
    state.timings = { page_ms: t1 - t0, graph_ms: performance.now() - t1, since_load_ms: performance.now() };
    var allEdges = cy.edges().length > 0;

    function select(id, center) {
      var n = byId[id];
      if (!n) return;
      state.selected = id;
      cy.batch(function () {
        cy.elements(".ref, .selected, .miss").removeClass("ref selected miss");
        cy.edges(".picked").remove();
        var me = cy.getElementById(id);
        me.addClass("selected");
        var inputs = n.inputs || [];
        inputs.forEach(function (src, i) {
          var eid = "e:" + src + ">" + id;
          var edge = allEdges ? cy.getElementById(eid) : cy.collection();
          if (!edge.length) edge = cy.add({ group: "edges", data: { id: eid, source: src, target: id }, classes: "picked" });
          edge.data("order", String(i + 1));
          edge.addClass("ref");
          cy.getElementById(src).addClass("ref");
        });
        (n.missing_inputs || []).forEach(function (src) {
          var eid = "e:" + src + ">" + id;
          var edge = allEdges ? cy.getElementById(eid) : cy.collection();
          if (!edge.length) edge = cy.add({ group: "edges", data: { id: eid, source: src, target: id }, classes: "picked missing" });
          edge.addClass("miss");
        });
      });
      if (center) cy.center(cy.getElementById(id));
      showNode(panel, n, byId, select);
    }
    cy.on("tap", "node", function (ev) { select(ev.target.id(), false); });
    if (state.selected && byId[state.selected]) select(state.selected, false);
    else state.selected = null;
  }

  function legendItem(color, label) {
    var sw = h("span", { className: "swatch" });
    sw.style.background = color;  // CSSOM, not an inline style attribute: allowed by the CSP
    return h("span", null, sw, label);
  }

  // fill classes (a class per colour styles 10,000 nodes much faster than a data() mapping)
  function colorClass(n) {
    if (n.status !== "ok") return "s-" + cls(n.status);
    return n.grade ? "g-" + cls(n.grade) : "s-ok";
  }

  function drawGraph(container, nodes) {
    var rounds = {};
    nodes.forEach(function (n) { (rounds[n.round] = rounds[n.round] || []).push(n); });
    var dx = 46, dy = 120, els = [], edges = 0;
    var big = nodes.length > 2000;
    Object.keys(rounds).forEach(function (r) {
      var row = rounds[r].slice().sort(function (a, b) { return a.agent - b.agent; });
      row.forEach(function (n, i) {
        els.push({ group: "nodes", data: { id: n.id, label: String(n.agent) }, classes: colorClass(n),
                   position: { x: (i - (row.length - 1) / 2) * dx, y: (Number(r) - 1) * dy } });
        edges += (n.inputs || []).length + (n.missing_inputs || []).length;
      });
    });
    if (edges <= EDGE_LIMIT) {
      nodes.forEach(function (n) {
        (n.inputs || []).forEach(function (src) { els.push({ group: "edges", data: { id: "e:" + src + ">" + n.id, source: src, target: n.id } }); });
        (n.missing_inputs || []).forEach(function (src) {
          els.push({ group: "edges", data: { id: "e:" + src + ">" + n.id, source: src, target: n.id }, classes: "missing" });
        });
      });
    }
    var style = [
      { selector: "node", style: { width: 26, height: 26, "background-color": STATUS_COLOR.ok } },
      { selector: "edge", style: { width: 1, "line-color": "#c9ced8", "curve-style": "straight", opacity: 0.5 } }
    ];
    if (!big) {  // agent numbers on the nodes: text costs too much at 10,000 nodes
      style.push({ selector: "node", style: { label: "data(label)", "font-size": 10, color: "#fff", "text-valign": "center",
        "text-halign": "center", "min-zoomed-font-size": 7 } });
    }
    Object.keys(GRADE_COLOR).forEach(function (g) { style.push({ selector: ".g-" + g, style: { "background-color": GRADE_COLOR[g] } }); });
    Object.keys(STATUS_COLOR).forEach(function (s) { style.push({ selector: ".s-" + s, style: { "background-color": STATUS_COLOR[s] } }); });
    ["s-failed", "s-cancelled", "s-timed_out"].forEach(function (c) {
      style.push({ selector: "." + c, style: { shape: "round-rectangle", "border-width": 3, "border-color": "#b3261e" } });
    });
    style.push(
      { selector: "edge.missing", style: { "line-style": "dashed", "line-color": "#e4a0a0" } },
      { selector: "edge.ref", style: { width: 2.5, "line-color": "#f2b400", opacity: 1, "target-arrow-shape": "triangle",
        "target-arrow-color": "#f2b400", label: "data(order)", "font-size": 11, "text-background-color": "#fff",
        "text-background-opacity": 1, "z-index": 10 } },
      { selector: "edge.miss", style: { width: 2, "line-style": "dashed", "line-color": "#b3261e", opacity: 1,
        "target-arrow-shape": "triangle", "target-arrow-color": "#b3261e" } },
      { selector: "node.ref", style: { "border-width": 4, "border-color": "#f2b400" } },
      { selector: "node.selected", style: { "border-width": 5, "border-color": "#1d2330", width: 34, height: 34 } });
    var cy = cytoscape({
      container: container, elements: els, layout: { name: "preset", fit: false }, minZoom: 0.02, maxZoom: 4, boxSelectionEnabled: false, autoungrabify: true,
      textureOnViewport: big, hideEdgesOnViewport: big, hideLabelsOnViewport: big, pixelRatio: big ? 1 : "auto",
      motionBlur: false, style: style
    });
    cy.maxZoom(1.2);  // a small graph: no giant nodes
    cy.fit(undefined, 30);  // the positions are given (by round): "preset" only applies them
    cy.maxZoom(4);
    return cy;
  }

  function showNode(panel, n, byId, select) {
    panel.textContent = "";
    var u = n.usage || {};
    add(panel, h("h3", { id: "node-title", text: n.id + " · " + n.role }));
    add(panel, h("div", { className: "kv" },
      kv("status", badge(n.status)), n.grade ? kv("grade", badge(n.grade)) : null,
      kv("answer", n.answer === null || n.answer === undefined ? "—" : String(n.answer)),
      kv("round / agent", n.round + " / " + n.agent),
      kv("usage", "prompt " + num(u.prompt_tokens) + " · completion " + num(u.completion_tokens) + " · cached " + num(u.cached_tokens)),
      kv("seed", n.seed === null || n.seed === undefined ? "—" : String(n.seed)),
      kv("attempts", String(n.attempts)),
      kv("request", n.request === null || n.request === undefined ? "—" : n.request + " (n=" + n.request_n + ")"),
      kv("finish", n.finish_reason || "—")));
    if (n.error) add(panel, h("h3", { text: "error" }), h("pre", { className: "text error", id: "node-error", text: n.error }));
    if ((n.truncations || []).length) {
      add(panel, h("h3", { text: "truncations" }), h("ul", null, n.truncations.map(function (tr) {
        return h("li", { text: tr.source + ": " + tr.original_tokens + " → " + tr.kept_tokens + " tokens" });
      })));
    }
    add(panel, h("h3", { text: "references, in prompt order (" + (n.inputs || []).length + ")" }));
    add(panel, h("ol", { className: "refs", id: "refs" }, (n.inputs || []).map(function (src) {
      var other = byId[src];
      return h("li", { dataset: { node: src }, onclick: function () { select(src, true); } },
        src, " ", other && other.grade ? badge(other.grade) : null, " ", other && other.answer !== null && other.answer !== undefined ? String(other.answer) : "");
    })));
    if ((n.missing_inputs || []).length) add(panel, h("p", { className: "error", text: "missing (failed) inputs: " + n.missing_inputs.join(", ") }));
    add(panel, h("h3", { text: "prompt" }));
    (n.prompt || []).forEach(function (m, i) {
      add(panel, h("div", { className: "muted", text: m.role }), h("pre", { className: "text prompt", id: "prompt-" + i, text: m.content === null ? "" : m.content }));
    });
    if (n.reasoning) add(panel, h("h3", { text: "reasoning" }), pre(n.reasoning));
    add(panel, h("h3", { text: "content" }), pre(n.content));
    add(panel, h("h3", { text: "message (what later rounds see)" }), h("pre", { className: "text", id: "node-message", text: n.message === null ? "—" : n.message }));
  }
  function kv(k, v) { return [h("span", { className: "k", text: k }), h("span", null, v)]; }

  // ---------- study view ----------
  var ARM_COLS = [
    { key: "label", title: "arm", left: true, text: function (m) { return m.label; } },
    { key: "kind", title: "kind", left: true, text: function (m) {
      var k = { topology: "pacore", "self-consistency": "SC" }[m.kind] || m.kind;
      return k + (m.vote_size === null || m.vote_size === undefined ? "" : " N=" + m.vote_size); } },
    { key: "graded", title: "graded", text: function (m) { return m.graded + "/" + m.samples; } },
    { key: "accuracy", title: "accuracy [95%]", text: function (m) {
      return m.accuracy === null ? "—" : pct(m.accuracy, 1) + " [" + pct(m.ci_low) + "–" + pct(m.ci_high) + "]"; } },
    { key: "mean_ttc", title: "mean TTC", text: function (m) { return num(m.mean_ttc); } },
    { key: "emergent", title: "emergent", text: function (m) { return of(m.emergent_n, m.emergent_base, m.emergent); } },
    { key: "flips", title: "right→wrong", text: function (m) { return of(m.flips_n, m.flips_base, m.flips); } },
    { key: "cross_check", title: "cross-check", text: function (m) { return pct(m.cross_check); } },
    { key: "timeouts", title: "t/o", text: function (m) { return String(m.timeouts); } },
    { key: "errors", title: "err", text: function (m) { return String(m.errors); } }
  ];

  function showStudy(s) {
    var main = frame((s.name || "study") + " · " + s.out, homeLink());
    add(main, h("p", { className: "muted", id: "study-meta" },
      s.samples + " samples stored" + (s.last_write ? "; last written " + new Date(s.last_write * 1000).toLocaleString() : "") +
      ". Intervals: 95% " + (s.arms.some(function (m) { return m.ci_method !== "wilson"; }) ? "Wilson, clustered by problem" : "Wilson") +
      "; emergent: sink right, every input wrong; right→wrong: sink wrong, most inputs right."));
    add(main, h("h2", { text: "arms" }), armsTable(s));
    add(main, h("details", null, h("summary", { text: "per round (tokens = mean per sample)" }), roundsTable(s)));
    add(main, h("h2", { text: s.scaling.swept ? "scaling: accuracy vs effective test-time compute" : "accuracy vs effective test-time compute" }),
      scalingPlot(s.scaling));
    add(main, h("h2", { text: "paired differences (same problems)" }), pairsTable(s));
    add(main, h("h2", { text: "problems" }), problemsView(s));
  }

  function armsTable(s) {
    var rows = s.arms.slice();
    var sort = state.sort;
    if (sort.col) {
      var col = sort.col;
      rows.sort(function (a, b) {
        var x = a[col], y = b[col];
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : x > y ? 1 : 0) * sort.dir;
      });
    }
    var head = h("tr", null, ARM_COLS.map(function (c) {
      var cl = "sortable" + (c.left ? " left" : "") + (sort.col === c.key ? (sort.dir > 0 ? " sorted-asc" : " sorted-desc") : "");
      return h("th", { className: cl, dataset: { col: c.key }, text: c.title, onclick: function () {
        state.sort = { col: c.key, dir: sort.col === c.key ? -sort.dir : (c.left ? 1 : -1) };
        var t = document.getElementById("arms");
        t.parentNode.replaceChild(armsTable(s), t);
      } });
    }));
    var body = rows.map(function (m) {
      return h("tr", { dataset: { label: m.label } }, ARM_COLS.map(function (c) { return h("td", { className: c.left ? "left" : "", text: c.text(m) }); }));
    });
    return h("table", { className: "grid", id: "arms" }, h("thead", null, head), h("tbody", null, body));
  }

  function roundsTable(s) {
    var rows = [];
    s.arms.forEach(function (m) {
      m.rounds.forEach(function (r) {
        rows.push(h("tr", null, h("td", { className: "left", text: m.label }), h("td", { text: r.round }), h("td", { text: r.nodes }),
          h("td", { text: r.failed }), h("td", { text: num(r.tokens, 1) }), h("td", { text: pct(r.accuracy) }),
          h("td", { text: pct(r.consensus) }), h("td", { text: pct(r.cross_check) })));
      });
    });
    return table(["arm", "round", "nodes", "failed", "tokens", "accuracy", "consensus", "cross-check"], rows, "arm-rounds");
  }

  function pairsTable(s) {
    var wrap = h("div");
    function draw() {
      wrap.textContent = "";
      var key = {};
      s.key_pairs.forEach(function (p) { key[p[0] + "\u0000" + p[1]] = true; });
      var pairs = state.allPairs ? s.pairs : s.key_pairs.map(function (p) {
        var found = null;
        s.pairs.forEach(function (q) {
          if (q.a === p[0] && q.b === p[1]) found = q;
          else if (q.a === p[1] && q.b === p[0]) found = swap(q);
        });
        return found;
      }).filter(Boolean);
      var box = h("input", { type: "checkbox", id: "all-pairs", onchange: function () { state.allPairs = box.checked; draw(); } });
      box.checked = state.allPairs;
      add(wrap, h("label", { className: "toolbar" }, box, "every pair of rows (else each PaCoRe arm against single and its budget-matched SC)"));
      add(wrap, table(["A", "B", "problems", "acc A", "acc B", "diff A−B [95%]", "A only", "B only", "p (McNemar)"],
        pairs.filter(function (p) { return p.diff !== null; }).map(function (p) {
          return h("tr", null, h("td", { className: "left", text: p.a }), h("td", { className: "left", text: p.b }), h("td", { text: p.problems }),
            h("td", { text: pct(p.acc_a) }), h("td", { text: pct(p.acc_b) }),
            h("td", { text: signed(p.diff, 1) + " [" + signed(p.diff_low, 0) + ", " + signed(p.diff_high, 0) + "]" }),
            h("td", { text: p.a_only === null ? "—" : p.a_only }), h("td", { text: p.b_only === null ? "—" : p.b_only }),
            h("td", { text: p.p_value === null ? "—" : Number(p.p_value).toPrecision(3) }));
        }), "pairs"));
      add(wrap, h("p", { className: "muted", text: "diff: accuracy points, paired bootstrap over problems; p: exact McNemar (one sample per problem)." }));
    }
    draw();
    return wrap;
  }
  function swap(p) {
    return { a: p.b, b: p.a, problems: p.problems, acc_a: p.acc_b, acc_b: p.acc_a, diff: p.diff === null ? null : -p.diff,
             diff_low: p.diff_high === null ? null : -p.diff_high, diff_high: p.diff_low === null ? null : -p.diff_low,
             a_only: p.b_only, b_only: p.a_only, p_value: p.p_value };
  }
  function signed(x, d) { return x === null || x === undefined ? "—" : (x >= 0 ? "+" : "−") + Math.abs(100 * x).toFixed(d); }

  var NS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  function svg(tag, attrs, text) {
    var el = document.createElementNS(NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { el.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) el.textContent = String(text);
    return el;
  }
  function scalingPlot(sc) {
    var W = 760, H = 360, L = 56, R = 250, T = 14, B = 40;
    var pts = [];
    sc.lines.forEach(function (l) { l.points.forEach(function (p) { pts.push(p); }); });
    sc.singles.forEach(function (p) { pts.push(p); });
    var root = svg("svg", { "class": "plot", id: "scaling", width: W, height: H, viewBox: "0 0 " + W + " " + H });
    if (!pts.length) { root.appendChild(svg("text", { x: 20, y: 30 }, "no graded rows yet")); return root; }
    var xs = pts.map(function (p) { return Math.log10(Math.max(p.ttc, 1)); });
    var x0 = Math.floor(Math.min.apply(null, xs) * 2) / 2, x1 = Math.ceil(Math.max.apply(null, xs) * 2) / 2;
    if (x1 <= x0) x1 = x0 + 0.5;
    function X(ttc) { return L + (Math.log10(Math.max(ttc, 1)) - x0) / (x1 - x0) * (W - L - R); }
    function Y(a) { return T + (1 - a) * (H - T - B); }
    for (var g = 0; g <= 10; g += 2) {
      root.appendChild(svg("line", { "class": "gridline", x1: L, x2: W - R, y1: Y(g / 10), y2: Y(g / 10) }));
      root.appendChild(svg("text", { x: L - 6, y: Y(g / 10) + 4, "text-anchor": "end" }, (g * 10) + "%"));
    }
    for (var e = Math.ceil(x0); e <= x1; e++) {
      root.appendChild(svg("line", { "class": "gridline", x1: X(Math.pow(10, e)), x2: X(Math.pow(10, e)), y1: T, y2: H - B }));
      root.appendChild(svg("text", { x: X(Math.pow(10, e)), y: H - B + 15, "text-anchor": "middle" }, num(Math.pow(10, e))));
    }
    root.appendChild(svg("line", { "class": "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    root.appendChild(svg("line", { "class": "axis", x1: L, x2: L, y1: T, y2: H - B }));
    root.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, "mean effective TTC per sample (tokens, log)"));
    var ly = T + 4;
    sc.singles.forEach(function (p) {
      root.appendChild(svg("line", { x1: L, x2: W - R, y1: Y(p.acc), y2: Y(p.acc), stroke: "#888", "stroke-dasharray": "2,3" }));
      root.appendChild(svg("text", { x: L + 4, y: Y(p.acc) - 3, fill: "#888" }, p.label));
    });
    var solid = 0, dashed = 0;
    sc.lines.forEach(function (l) {
      var color = l.dashed ? (dashed++ === 0 ? "#000" : PALETTE[(solid + dashed - 1) % 10]) : PALETTE[solid++ % 10];
      var path = l.points.map(function (p, i) { return (i ? "L" : "M") + X(p.ttc).toFixed(1) + "," + Y(p.acc).toFixed(1); }).join("");
      if (l.points.length > 1) root.appendChild(svg("path", { d: path, fill: "none", stroke: color, "stroke-width": 1.6, "stroke-dasharray": l.dashed ? "5,4" : "" }));
      l.points.forEach(function (p) {
        var x = X(p.ttc);
        root.appendChild(svg("line", { x1: x, x2: x, y1: Y(p.hi === null ? p.acc : p.hi), y2: Y(p.lo === null ? p.acc : p.lo), stroke: color }));
        var mark = l.dashed ? svg("rect", { x: x - 4, y: Y(p.acc) - 4, width: 8, height: 8, fill: "#fff", stroke: color, "stroke-width": 1.6 })
          : svg("circle", { cx: x, cy: Y(p.acc), r: 4, fill: color });
        mark.appendChild(svg("title", {}, p.label + ": " + pct(p.acc, 1) + " [" + pct(p.lo) + "–" + pct(p.hi) + "], TTC " + num(p.ttc)));
        root.appendChild(mark);
      });
      root.appendChild(svg("line", { x1: W - R + 12, x2: W - R + 32, y1: ly, y2: ly, stroke: color, "stroke-width": 2, "stroke-dasharray": l.dashed ? "4,3" : "" }));
      root.appendChild(svg("text", { x: W - R + 36, y: ly + 4 }, l.label.length > 34 ? l.label.slice(0, 33) + "…" : l.label));
      ly += 16;
    });
    return root;
  }

  var FILTERS = [
    { key: "flip", label: "right→wrong flips", test: function (c) { return c.flip; } },
    { key: "emergent", label: "emergent correctness", test: function (c) { return c.emergent; } },
    { key: "failed", label: "failed nodes", test: function (c) { return c.failed > 0 || c.status === "failed" || c.status === "error"; } },
    { key: "disagree", label: "arms disagree", row: true }
  ];
  var SYMBOL = { correct: "✓", wrong: "✗", timeout: "⏱", error: "!", failed: "†" };

  function problemsView(s) {
    var wrap = h("div", { id: "problems" });
    var search = h("input", { id: "problem-search", placeholder: "problem id contains…", size: 20 });
    search.value = state.filters.search || "";
    var boxes = FILTERS.map(function (f) {
      var box = h("input", { type: "checkbox", id: "filter-" + f.key, onchange: function () { state.filters[f.key] = box.checked; draw(); } });
      box.checked = !!state.filters[f.key];
      return h("label", null, box, f.label);
    });
    search.addEventListener("input", function () { state.filters.search = search.value; draw(); });
    var body = h("div");
    add(wrap, h("div", { className: "toolbar" }, boxes, search), body);
    function keep(row) {
      var cells = s.arm_names.map(function (a) { return row.cells[a]; }).filter(Boolean);
      if (state.filters.search && String(row.problem).indexOf(state.filters.search) < 0) return false;
      return FILTERS.every(function (f) {
        if (!state.filters[f.key]) return true;
        if (f.row) {
          var seen = {};
          cells.forEach(function (c) { if (c.status === "correct" || c.status === "wrong") seen[c.status] = 1; });
          return Object.keys(seen).length > 1;
        }
        return cells.some(f.test);
      });
    }
    function draw() {
      body.textContent = "";
      var rows = s.problems.filter(keep);
      var shown = state.showAll ? rows : rows.slice(0, ROW_LIMIT);
      add(body, h("p", { className: "muted", id: "problem-count", text: rows.length + " of " + s.problems.length + " (problem, sample) rows" +
        (shown.length < rows.length ? "; showing the first " + shown.length : "") + ". Click a cell to open that run's graph." }));
      var head = ["problem", "sample"].concat(s.arm_names);
      add(body, table(head, shown.map(function (row) {
        return h("tr", null, h("td", { className: "left", text: row.problem }), h("td", { text: row.sample }), s.arm_names.map(function (arm) {
          var c = row.cells[arm];
          if (!c) return h("td", { className: "cell muted", text: "·" });
          var tip = arm + ": " + c.status + (c.answer === null ? "" : ", answer " + c.answer) + ", TTC " + c.ttc +
            (c.failed ? ", " + c.failed + " failed node(s)" : "") + (c.flip ? ", right→wrong flip" : "") + (c.emergent ? ", emergent" : "");
          var b = h("button", { className: "st-" + cls(c.status) + (c.flip || c.emergent ? " flagged" : ""), title: tip,
            dataset: { arm: arm, problem: row.problem, sample: row.sample },
            onclick: function () { location.hash = "#/run/" + [arm, row.problem, row.sample].map(encodeURIComponent).join("/"); } },
            (SYMBOL[c.status] || "?") + (c.failed ? " †" + c.failed : ""));
          return h("td", { className: "cell" }, b);
        }));
      }), "problem-table"));
      if (shown.length < rows.length) add(body, h("button", { id: "show-all", text: "show all " + rows.length, onclick: function () { state.showAll = true; draw(); } }));
    }
    draw();
    return wrap;
  }

  // ---------- live updates ----------
  function poll() {
    if (!api.live) return;
    setTimeout(function () {
      api.version().then(function (v) {
        var el = document.getElementById("live");
        if (v !== state.version) {
          state.version = v;
          var scroll = window.scrollY;
          if (state.render && state.liveView) state.render().then(function () { window.scrollTo(0, scroll); }).catch(showError);
        }
        el = document.getElementById("live");
        if (el) el.textContent = "live · checked " + new Date().toLocaleTimeString();
      }).catch(function () {
        var el = document.getElementById("live");
        if (el) el.textContent = "live · server unreachable";
      }).then(poll);
    }, POLL_MS);
  }

  var listening = false;
  function start() {
    api.source().then(function (src) {
      state.source = src;
      state.version = src.version;
      document.title = "pacore view: " + src.name;
      if (!listening) window.addEventListener("hashchange", function () { state.selected = null; route(); });
      listening = true;
      return route().then(function () { app.dataset.ready = "1"; });
    }).catch(showError);
  }
  start();
  poll();
})();
