// The console's only script: live refresh of a page's #live part, the timeline bars' widths,
// and the actions, which call the REST API with the session cookie and its CSRF token.
"use strict";
(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // Each bar's width is its phase's share of the whole (at least a sliver, to stay visible).
  function sizeTimelines(root) {
    root.querySelectorAll(".timeline").forEach((t) => {
      const segs = Array.from(t.querySelectorAll(".seg[data-ms]"));
      const total = segs.reduce((a, s) => a + Number(s.dataset.ms || 0), 0) || 1;
      segs.forEach((s) => {
        s.style.flexGrow = String(Math.max(Number(s.dataset.ms || 0), total * 0.03));
      });
    });
  }

  function flash(text, bad) {
    const f = document.getElementById("flash");
    if (!f) return;
    f.textContent = text;
    f.className = bad ? "error" : "done";
    f.hidden = false;
  }

  // Live refresh: the server answers the header with only the #live part; a page whose
  // content is final answers X-Console-Refresh: 0 and is no longer asked.
  const live = document.getElementById("live");
  let every = live ? Number(live.dataset.refresh || 0) : 0;
  async function refresh() {
    if (!live || document.hidden) return;
    const a = document.activeElement;
    if (a && live.contains(a) && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName)) return;
    try {
      const r = await fetch(location.href, {
        headers: { "X-Console-Live": "1" },
        credentials: "same-origin",
        redirect: "manual",
      });
      if (r.type === "opaqueredirect" || r.status === 401) {
        location.reload();
        return;
      }
      const html = await r.text();
      if (html !== live.dataset.last) {
        live.dataset.last = html;
        live.innerHTML = html;
        sizeTimelines(live);
      }
      const next = r.headers.get("X-Console-Refresh");
      if (next !== null) every = Number(next);
    } catch (e) {
      // The daemon restarting: keep the last content and try again.
    }
    if (every > 0) setTimeout(refresh, every);
  }

  async function call(method, path, body) {
    const headers = { "X-CSRF-Token": csrf(), Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    let j = null;
    try {
      j = await r.json();
    } catch (e) {
      j = null;
    }
    return { ok: r.ok, status: r.status, j };
  }

  function after(then, res) {
    const j = res.j || {};
    if (then === "job" && (j.job_id || j.id)) {
      location.assign("/ui/jobs/" + encodeURIComponent(j.job_id || j.id));
    } else if (then === "failover" && j.id !== undefined) {
      location.assign("/ui/failovers/" + encodeURIComponent(j.id));
    } else {
      flash("Done.", false);
      every = every || 3000;
      refresh();
    }
  }

  function failure(res) {
    const j = res.j || {};
    return (j.code ? j.code + ": " : "HTTP " + res.status + ": ") + (j.message || "no details");
  }

  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-api-method]");
    if (!b) return;
    ev.preventDefault();
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    b.disabled = true;
    b.setAttribute("aria-busy", "true");
    try {
      const body = b.dataset.apiBody ? JSON.parse(b.dataset.apiBody) : undefined;
      const res = await call(b.dataset.apiMethod, b.dataset.apiPath, body);
      if (res.ok) after(b.dataset.then, res);
      else flash(failure(res), true);
    } catch (e) {
      flash("The request did not complete: " + e, true);
    } finally {
      b.disabled = false;
      b.removeAttribute("aria-busy");
    }
  });

  document.addEventListener("submit", async (ev) => {
    const f = ev.target;
    if (!f.matches("form.api")) return;
    ev.preventDefault();
    const err = f.querySelector(".api-error");
    const body = {};
    for (const el of f.elements) {
      if (!el.name) continue;
      const v = el.value.trim();
      if (v === "" && !el.required) continue;
      body[el.name] = el.dataset.type === "int" && v !== "" && !isNaN(Number(v)) ? Number(v) : v;
    }
    if (f.dataset.confirm && !window.confirm(f.dataset.confirm)) return;
    const btn = f.querySelector('button[type="submit"]');
    if (btn) btn.disabled = true;
    try {
      const res = await call(f.dataset.apiMethod, f.dataset.apiPath, body);
      if (res.ok) {
        if (err) err.hidden = true;
        after(f.dataset.then, res);
      } else if (err) {
        err.textContent = failure(res);
        err.hidden = false;
        err.focus && err.setAttribute("tabindex", "-1");
      } else {
        flash(failure(res), true);
      }
    } catch (e) {
      flash("The request did not complete: " + e, true);
    } finally {
      if (btn) btn.disabled = false;
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    sizeTimelines(document);
    if (every > 0) setTimeout(refresh, every);
  });
})();
