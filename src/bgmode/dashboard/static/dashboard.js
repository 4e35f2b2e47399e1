// bgmode dashboard: vanilla JS, no build step, no third-party code.
// Data is rendered with textContent only (model output is untrusted); the API key lives in
// sessionStorage (this tab only) and goes in the Authorization header, never in a URL.
"use strict";

(function () {
  const KEY_STORE = "bgmode.apiKey";
  const REFRESH_MS = 2000;
  const TERMINAL = new Set(["completed", "failed", "cancelled", "incomplete"]);
  const TERMINAL_EVENTS = new Set([
    "response.completed", "response.failed", "response.incomplete", "response.cancelled",
  ]);

  class AuthError extends Error {}
  class HttpError extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(err.message || ("HTTP " + status));
      this.status = status;
      this.code = err.code || null;
      this.param = err.param || null;
    }
  }

  const $ = (id) => document.getElementById(id);
  const show = (el, on) => { if (el) el.classList.toggle("hidden", !on); };

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null) continue;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = String(v);
        else if (k === "href") node.setAttribute("href", v);
        else if (k === "title") node.title = String(v);
        else node.setAttribute(k, String(v));
      }
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  // -- the API key -----------------------------------------------------------------------

  function getKey() { return sessionStorage.getItem(KEY_STORE) || ""; }

  function authHeaders(extra) {
    const h = Object.assign({}, extra || {});
    const key = getKey();
    if (key) h["Authorization"] = "Bearer " + key;
    return h;
  }

  async function api(path, opts) {
    const o = Object.assign({ cache: "no-store", credentials: "omit" }, opts || {});
    o.headers = authHeaders(o.headers);
    const resp = await fetch(path, o);
    if (resp.status === 401) {
      let body = null;
      try { body = await resp.json(); } catch (e) { /* not JSON */ }
      askForKey(getKey() ? "That key was not accepted: " + new HttpError(401, body).message : "");
      throw new AuthError("unauthorized");
    }
    return resp;
  }

  async function apiJSON(path, opts) {
    const resp = await api(path, opts);
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    if (!resp.ok) throw new HttpError(resp.status, body);
    return body;
  }

  let onKey = null;

  function askForKey(message) {
    stopTimers();
    show($("main"), false);
    show($("key-panel"), true);
    const err = $("key-error");
    err.textContent = message || "";
    show(err, !!message);
    $("key-input").focus();
  }

  function setupKeyForm(start) {
    onKey = start;
    $("key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("key-input").value.trim();
      if (!value) return;
      sessionStorage.setItem(KEY_STORE, value);
      $("key-input").value = "";
      show($("key-panel"), false);
      onKey();
    });
    const forget = $("forget-key");
    forget.addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORE);
      location.reload();
    });
  }

  function authenticated() {
    show($("key-panel"), false);
    show($("main"), true);
    show($("forget-key"), !!getKey());
  }

  // -- formatting ------------------------------------------------------------------------

  const pad = (n, w) => String(n).padStart(w || 2, "0");

  function fmtTime(epochSeconds, withMs) {
    if (epochSeconds === null || epochSeconds === undefined) return "–";
    const d = new Date(epochSeconds * 1000);
    let s = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (withMs) s += "." + pad(d.getMilliseconds(), 3);
    return s;
  }

  function fmtDuration(seconds) {
    if (seconds < 0) seconds = 0;
    if (seconds < 60) return seconds.toFixed(seconds < 10 ? 2 : 1) + " s";
    const m = Math.floor(seconds / 60);
    return m + " min " + Math.round(seconds - m * 60) + " s";
  }

  function badge(status) {
    return el("span", { class: "badge s-" + String(status).replace(/[^a-z_]/g, ""), text: status });
  }

  function setBadge(node, status) {
    node.textContent = status;
    node.className = "badge s-" + String(status).replace(/[^a-z_]/g, "");
  }

  function outputText(resp) {
    const parts = [];
    for (const item of resp.output || []) {
      if (item.type === "message") {
        for (const c of item.content || []) {
          if (c.type === "output_text") parts.push(c.text || "");
          else if (c.type === "refusal") parts.push("[refusal] " + (c.refusal || ""));
        }
      } else if (item.type === "function_call") {
        parts.push(item.name + "(" + (item.arguments || "") + ")");
      }
    }
    return parts.join(" ");
  }

  function setLive(state, title) {
    const l = $("live");
    if (!l) return;
    l.className = "live " + state;
    l.textContent = state === "ok" ? "live" : state === "done" ? "finished" : state === "wait" ? "reconnecting" : "offline";
    if (title) l.title = title;
  }

  // -- timers ----------------------------------------------------------------------------

  const timers = [];
  function every(ms, fn) {
    let stopped = false;
    let handle = null;
    const tick = async () => {
      if (stopped) return;
      try { await fn(); } catch (e) { /* shown by fn */ }
      if (!stopped) handle = setTimeout(tick, ms);
    };
    const t = { stop() { stopped = true; if (handle) clearTimeout(handle); } };
    timers.push(t);
    handle = setTimeout(tick, ms);
    return t;
  }
  function stopTimers() { while (timers.length) timers.pop().stop(); }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // == the list page =====================================================================

  function listPage() {
    const PAGE = 20;
    const state = { status: "", model: "", lastId: null, hasMore: false, rows: new Map() };
    const params = new URLSearchParams(location.search);
    state.status = params.get("status") || "";
    state.model = params.get("model") || "";
    $("filter-status").value = state.status;
    $("filter-model").value = state.model;

    function query(extra) {
      const q = new URLSearchParams();
      q.set("limit", String(extra.limit || PAGE));
      if (state.status) q.set("status", state.status);
      if (state.model) q.set("model", state.model);
      if (extra.after) q.set("after", extra.after);
      return "/v1/responses?" + q.toString();
    }

    function rowFor(resp) {
      const link = el("a", { href: "/dashboard/responses/" + encodeURIComponent(resp.id), class: "mono", text: resp.id, title: resp.id });
      const usage = resp.usage;
      const tokens = usage ? String(usage.total_tokens) : "–";
      const preview = outputText(resp);
      const tr = el(
        "tr",
        { "data-id": resp.id, "data-status": resp.status },
        el("td", null, link),
        el("td", { class: "status" }, badge(resp.status)),
        el("td", { class: "mono model", text: resp.model }),
        el("td", { class: "nowrap", text: fmtTime(resp.created_at).slice(5), title: fmtTime(resp.created_at) }),
        el("td", { class: "num", text: tokens }),
        el("td", { class: "preview", text: preview.length > 120 ? preview.slice(0, 120) + "…" : preview, title: preview.slice(0, 1000) }),
      );
      return tr;
    }

    function upsert(resp, where) {
      const body = $("responses-body");
      const old = state.rows.get(resp.id);
      const tr = rowFor(resp);
      if (old) {
        body.replaceChild(tr, old);
      } else if (where === "top") {
        body.insertBefore(tr, body.firstChild);
      } else {
        body.appendChild(tr);
      }
      state.rows.set(resp.id, tr);
    }

    function showListError(e) {
      const err = $("responses-error");
      err.textContent = e instanceof HttpError ? e.message : "Could not reach the server.";
      show(err, true);
    }

    async function loadFirst() {
      const page = await apiJSON(query({}));
      $("responses-body").replaceChildren();
      state.rows.clear();
      for (const r of page.data) upsert(r, "bottom");
      state.lastId = page.last_id;
      state.hasMore = page.has_more;
      show($("load-more"), state.hasMore);
      show($("responses-empty"), page.data.length === 0);
      show($("responses-error"), false);
    }

    async function loadMore() {
      if (!state.lastId) return;
      const btn = $("load-more");
      btn.disabled = true;
      try {
        const page = await apiJSON(query({ after: state.lastId }));
        for (const r of page.data) upsert(r, "bottom");
        if (page.last_id) state.lastId = page.last_id;
        state.hasMore = page.has_more;
        show($("load-more"), state.hasMore);
      } catch (e) {
        if (!(e instanceof AuthError)) showListError(e);
      } finally {
        btn.disabled = false;
      }
    }

    // newest page again: new responses go on top, shown ones get their new status
    async function refreshList() {
      const page = await apiJSON(query({}));
      const body = $("responses-body");
      const fresh = page.data.filter((r) => !state.rows.has(r.id)).reverse();
      for (const r of page.data) if (state.rows.has(r.id)) {
        const tr = state.rows.get(r.id);
        if (tr.getAttribute("data-status") !== r.status || r.status === "in_progress") upsert(r);
      }
      for (const r of fresh) {
        const top = body.firstElementChild;
        if (!top || r.id > top.getAttribute("data-id")) upsert(r, "top");
      }
      if (state.lastId === null && page.last_id) {
        state.lastId = page.last_id;
        state.hasMore = page.has_more;
        show($("load-more"), state.hasMore);
      }
      show($("responses-empty"), state.rows.size === 0);
      show($("responses-error"), false);
    }

    async function refreshOverview() {
      const o = await apiJSON("/dashboard/api/overview");
      $("count-queued").textContent = String(o.queued);
      $("count-in_progress").textContent = String(o.in_progress);
      $("count-finished").textContent = String(o.finished);
      const c = o.counts;
      $("count-finished-detail").textContent =
        c.completed + " completed · " + c.failed + " failed · " + c.cancelled + " cancelled · " + c.incomplete + " incomplete";
      $("queue-depth").textContent = String(o.queue_depth);
      const wb = $("workers-body");
      wb.replaceChildren();
      for (const w of o.workers) {
        const host = String(w.id).split(":").slice(0, 2).join(":");
        wb.appendChild(el("tr", null,
          el("td", { class: "mono", text: host, title: w.id }),
          el("td", { class: "num", text: w.in_progress }),
          el("td", { class: "num", text: w.lease_expires_in.toFixed(1) + " s" })));
      }
      show($("workers-empty"), o.workers.length === 0);
      const me = o.this_worker;
      $("this-worker").textContent = "This server: " + String(me.id).split(":").slice(0, 2).join(":") + ", " + me.slots + " worker slots.";
    }

    async function refreshWebhooks() {
      const resp = await api("/v1/webhooks/deliveries?limit=8");
      const wb = $("webhooks-body");
      const empty = $("webhooks-empty");
      if (resp.status === 404) {
        wb.replaceChildren();
        empty.textContent = "No webhooks configured.";
        show(empty, true);
        show($("webhooks"), false);
        return;
      }
      let page = null;
      try { page = await resp.json(); } catch (e) { /* not JSON */ }
      if (!resp.ok || !page || !Array.isArray(page.data)) {
        wb.replaceChildren();
        empty.textContent = "Webhook deliveries unavailable" + (page && page.error ? ": " + page.error.message : ".");
        show(empty, true);
        show($("webhooks"), false);
        return;
      }
      wb.replaceChildren();
      for (const d of page.data) {
        const info = [d.response_id, d.last_status_code ? "HTTP " + d.last_status_code : null, d.last_error]
          .filter(Boolean).join(" · ");
        wb.appendChild(el("tr", { title: info },
          el("td", { class: "mono", text: d.type }),
          el("td", { text: d.endpoint }),
          el("td", null, badge(d.status)),
          el("td", { class: "num", text: d.attempts })));
      }
      show($("webhooks"), page.data.length > 0);
      empty.textContent = "No webhooks configured, or no deliveries yet.";
      show(empty, page.data.length === 0);
    }

    async function tick() {
      try {
        await Promise.all([refreshOverview(), refreshList(), refreshWebhooks().catch((e) => { if (e instanceof AuthError) throw e; })]);
        setLive("ok", "Refreshed " + fmtTime(Date.now() / 1000));
      } catch (e) {
        if (e instanceof AuthError) throw e;
        setLive("off", e.message);
      }
    }

    function applyFilters(status, model) {
      state.status = status;
      state.model = model;
      const q = new URLSearchParams();
      if (status) q.set("status", status);
      if (model) q.set("model", model);
      history.replaceState(null, "", "/dashboard" + (q.toString() ? "?" + q.toString() : ""));
      state.lastId = null;
      loadFirst().catch((e) => { if (!(e instanceof AuthError)) showListError(e); });
    }

    $("filters").addEventListener("submit", (ev) => {
      ev.preventDefault();
      applyFilters($("filter-status").value, $("filter-model").value.trim());
    });
    $("filter-clear").addEventListener("click", () => {
      $("filter-status").value = "";
      $("filter-model").value = "";
      applyFilters("", "");
    });
    $("load-more").addEventListener("click", loadMore);

    async function start() {
      try {
        await refreshOverview();
      } catch (e) {
        if (e instanceof AuthError) return;
        authenticated();
        showListError(e);
        return;
      }
      authenticated();
      try {
        await loadFirst();
        await refreshWebhooks();
        setLive("ok");
      } catch (e) {
        if (e instanceof AuthError) return;
        showListError(e);
      }
      every(REFRESH_MS, tick);
    }
    setupKeyForm(start);
    start();
  }

  // == the response page =================================================================

  function responsePage() {
    const id = decodeURIComponent(location.pathname.split("/").pop() || "");
    document.title = "bgmode · " + id;
    $("crumb-id").textContent = id;
    $("resp-id").textContent = id;
    const path = "/v1/responses/" + encodeURIComponent(id);

    const st = {
      status: null,
      lastSeq: -1,
      done: false,
      createdAt: null,
      liveFromStart: false,  // the page saw the response before its first output
      finishedAtLoad: false,  // already finished when the page opened: nothing was observed
      firstTokenAt: null,
      finishedAt: null,
      events: 0,
      lastGroup: null,
      items: new Map(),  // output_index -> {box, parts: Map(content_index -> node), args}
    };

    function setStatus(status) {
      st.status = status;
      setBadge($("resp-status"), status);
      show($("cancel"), status === "queued" || status === "in_progress");
    }

    function renderSummary(resp) {
      setStatus(resp.status);
      $("resp-model").textContent = resp.model;
      st.createdAt = resp.created_at;
      $("resp-created").textContent = fmtTime(resp.created_at);
      $("resp-background").textContent = resp.background ? "yes" : "no";
      const u = resp.usage;
      if (u) {
        $("usage-input").textContent = String(u.input_tokens);
        $("usage-output").textContent = String(u.output_tokens);
        $("usage-total").textContent = String(u.total_tokens);
      }
      if (resp.completed_at) {
        $("resp-finished").textContent = fmtTime(resp.completed_at) + "  (" + fmtDuration(resp.completed_at - resp.created_at) + ")";
      } else if (TERMINAL.has(resp.status) && st.finishedAt) {
        $("resp-finished").textContent = fmtTime(st.finishedAt, true) + "  (" + fmtDuration(st.finishedAt - resp.created_at) + ", observed)";
      }
      const err = $("resp-error");
      if (resp.error) {
        err.textContent = "Error " + (resp.error.code || "") + ": " + (resp.error.message || "");
        show(err, true);
      } else if (resp.incomplete_details) {
        err.textContent = "Incomplete: " + (resp.incomplete_details.reason || "");
        show(err, true);
      } else {
        show(err, false);
      }
    }

    // -- output ----------------------------------------------------------------------

    function itemBox(index, label) {
      let it = st.items.get(index);
      if (!it) {
        const head = el("div", { class: "item-head", text: label || "" });
        const body = el("div", { class: "item-body" });
        const box = el("div", { class: "item", "data-index": index }, head, body);
        $("output").appendChild(box);
        it = { box, head, body, parts: new Map() };
        st.items.set(index, it);
      } else if (label) {
        it.head.textContent = label;
      }
      return it;
    }

    function part(outputIndex, contentIndex, kind) {
      const it = itemBox(outputIndex);
      const key = kind + ":" + contentIndex;
      let node = it.parts.get(key);
      if (!node) {
        node = el("div", { class: "part " + kind });
        it.body.appendChild(node);
        it.parts.set(key, node);
      }
      return node;
    }

    function itemLabel(item) {
      if (item.type === "message") return "message · " + (item.role || "assistant");
      if (item.type === "function_call") return "function_call · " + (item.name || "");
      return item.type;
    }

    function renderOutput(resp) {
      $("output").replaceChildren();
      st.items.clear();
      (resp.output || []).forEach((item, i) => {
        const it = itemBox(i, itemLabel(item));
        if (item.type === "message") {
          (item.content || []).forEach((c, j) => {
            if (c.type === "output_text") part(i, j, "text").textContent = c.text || "";
            else if (c.type === "refusal") part(i, j, "refusal").textContent = c.refusal || "";
          });
        } else if (item.type === "function_call") {
          part(i, 0, "args").textContent = item.arguments || "";
        } else if (item.type === "reasoning") {
          const texts = (item.summary || []).map((s) => s.text).concat((item.content || []).map((s) => s.text));
          part(i, 0, "reasoning").textContent = texts.join("\n");
        } else {
          it.body.appendChild(el("div", { class: "part muted", text: JSON.stringify(item).slice(0, 400) }));
        }
      });
      showOutputEmpty();
    }

    function showOutputEmpty() {
      const out = $("output");
      const has = st.items.size > 0;
      let ph = out.querySelector(".placeholder");
      if (!has && !ph) out.appendChild(el("p", { class: "placeholder empty", text: st.done ? "No output." : "Waiting for output…" }));
      if (ph && (has || st.done)) { ph.remove(); ph = null; if (!has) out.appendChild(el("p", { class: "placeholder empty", text: "No output." })); }
    }

    function firstToken() {
      if (st.firstTokenAt !== null) return;
      st.firstTokenAt = Date.now() / 1000;
      if (st.finishedAtLoad) return;  // events carry no timestamps: a replay tells nothing
      if (st.liveFromStart) {
        const after = st.createdAt ? "  (" + fmtDuration(st.firstTokenAt - st.createdAt) + " after created, observed)" : "";
        $("resp-first-token").textContent = fmtTime(st.firstTokenAt, true) + after;
      } else {
        $("resp-first-token").textContent = "before this page opened";
      }
    }

    // -- the event log ---------------------------------------------------------------

    function logEvent(seq, type) {
      st.events += 1;
      $("events-count").textContent = "(" + st.events + ")";
      const g = st.lastGroup;
      if (g && g.type === type && type.endsWith(".delta")) {
        g.count += 1;
        g.seqCell.textContent = g.first + "–" + seq;
        g.typeCell.textContent = type + " ×" + g.count;
        return;
      }
      const seqCell = el("td", { class: "num mono", text: seq });
      const typeCell = el("td", { class: "mono", text: type });
      const tr = el("tr", { "data-seq": seq, "data-type": type }, seqCell, typeCell);
      $("events-body").appendChild(tr);
      st.lastGroup = { type, count: 1, first: seq, seqCell, typeCell };
    }

    function handle(ev) {
      const seq = ev.sequence_number;
      if (typeof seq !== "number" || seq <= st.lastSeq) return;
      st.lastSeq = seq;
      const type = String(ev.type || "");
      logEvent(seq, type);
      const phOut = $("output").querySelector(".placeholder");
      switch (type) {
        case "response.created":
        case "response.queued":
        case "response.in_progress":
          if (ev.response) setStatus(ev.response.status);
          break;
        case "response.output_item.added":
          itemBox(ev.output_index, itemLabel(ev.item || {}));
          if (phOut) phOut.remove();
          break;
        case "response.output_text.delta":
          firstToken();
          part(ev.output_index, ev.content_index, "text").append(ev.delta || "");
          if (phOut) phOut.remove();
          break;
        case "response.refusal.delta":
          firstToken();
          part(ev.output_index, ev.content_index, "refusal").append(ev.delta || "");
          break;
        case "response.reasoning_text.delta":
        case "response.reasoning_summary_text.delta":
          firstToken();
          part(ev.output_index, 0, "reasoning").append(ev.delta || "");
          break;
        case "response.function_call_arguments.delta":
          firstToken();
          part(ev.output_index, 0, "args").append(ev.delta || "");
          break;
        default:
          if (TERMINAL_EVENTS.has(type)) {
            st.done = true;
            if (!st.finishedAtLoad) st.finishedAt = Date.now() / 1000;
            if (ev.response) {
              if (type === "response.cancelled" && ev.response.status !== "cancelled") ev.response.status = "cancelled";
              renderSummary(ev.response);
              renderOutput(ev.response);
            }
            if (st.firstTokenAt === null && !st.finishedAtLoad) {
              $("resp-first-token").textContent = st.items.size ? "before this page opened" : "no output";
            }
          }
      }
    }

    // -- the stream: fetch + reader (EventSource cannot send the key), resumed on a drop --

    async function streamOnce() {
      const resp = await api(path + "?stream=true&starting_after=" + st.lastSeq, {
        headers: { Accept: "text/event-stream" },
      });
      if (!resp.ok) {
        let body = null;
        try { body = await resp.json(); } catch (e) { /* not JSON */ }
        throw new HttpError(resp.status, body);
      }
      setLive("ok");
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        buf = buf.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
          if (!data) continue;  // a keep-alive comment
          let ev;
          try { ev = JSON.parse(data); } catch (e) { continue; }
          handle(ev);
          if (st.done) { reader.cancel().catch(() => {}); return; }
        }
      }
    }

    async function follow() {
      let backoff = 500;
      while (!st.done) {
        const before = st.lastSeq;
        try {
          await streamOnce();
          if (st.done) break;
        } catch (e) {
          if (e instanceof AuthError) return;
          if (e instanceof HttpError) {
            if (e.status === 400 && (e.param === "stream" || e.code === "stream_expired")) {
              const note = $("events-note");
              note.textContent = e.code === "stream_expired" ? "The event log has expired (retention)." : "Not a background response: no event log.";
              show(note, true);
              return poll();
            }
            if (e.status === 404) { pageError("Response " + id + " not found."); return; }
          }
        }
        if (st.lastSeq > before) backoff = 500;
        setLive("wait", "Stream dropped; resuming after sequence_number " + st.lastSeq);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 5000);
      }
      setLive("done");
    }

    async function poll() {
      for (;;) {
        try {
          const resp = await apiJSON(path);
          renderSummary(resp);
          renderOutput(resp);
          if (TERMINAL.has(resp.status)) { st.done = true; setLive("done"); showOutputEmpty(); return; }
          setLive("ok");
        } catch (e) {
          if (e instanceof AuthError) return;
          setLive("off", e.message);
        }
        await sleep(REFRESH_MS);
      }
    }

    function pageError(message) {
      const err = $("page-error");
      err.textContent = message;
      show(err, true);
      setLive("off", message);
    }

    $("cancel").addEventListener("click", async () => {
      const btn = $("cancel");
      const err = $("cancel-error");
      btn.disabled = true;
      show(err, false);
      try {
        const resp = await apiJSON(path + "/cancel", { method: "POST" });
        setStatus(resp.status);
        if (TERMINAL.has(resp.status)) show(btn, false);
      } catch (e) {
        if (e instanceof AuthError) return;
        err.textContent = "Cancel failed: " + e.message;
        show(err, true);
      } finally {
        btn.disabled = false;
      }
    });

    async function start() {
      let resp;
      try {
        resp = await apiJSON(path);
      } catch (e) {
        if (e instanceof AuthError) return;
        authenticated();
        pageError(e instanceof HttpError ? e.message : "Could not reach the server.");
        return;
      }
      authenticated();
      renderSummary(resp);
      st.liveFromStart = !TERMINAL.has(resp.status) && !(resp.output || []).length;
      st.finishedAtLoad = TERMINAL.has(resp.status);
      if (st.finishedAtLoad) {
        $("resp-first-token").textContent = "not recorded (finished before this page opened)";
      }
      showOutputEmpty();
      if (resp.background) {
        follow();
      } else {
        const note = $("events-note");
        show(document.querySelector("table.events"), false);
        note.textContent = "Not a background response: no event log.";
        show(note, true);
        st.done = true;
        renderOutput(resp);
        setLive("done");
      }
    }
    setupKeyForm(start);
    start();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.getAttribute("data-page");
    if (page === "list") listPage();
    else if (page === "response") responsePage();
  });
})();
