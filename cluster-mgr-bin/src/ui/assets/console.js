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

  // Live refresh: one timer; the server answers the header with only the #live part and
  // X-Console-Refresh (0: the content is final, stop asking). The part is not replaced while
  // the user is in it: an action's request in flight, a form in it edited in the last minute
  // or showing an error.
  const live = document.getElementById("live");
  let every = live ? Number(live.dataset.refresh || 0) : 0;
  let timer = null;
  let seq = 0;
  let busy = 0;
  let last = null;
  // How long a form edited in #live holds its refresh after the last keystroke.
  const EDIT_HOLD_MS = 60000;

  function schedule(ms) {
    clearTimeout(timer);
    timer = null;
    if (live && (every > 0 || ms === 0)) timer = setTimeout(refresh, ms === undefined ? every : ms);
  }

  function userInLive() {
    if (busy > 0) return true;
    const a = document.activeElement;
    if (a && live.contains(a) && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName)) return true;
    return Array.from(live.querySelectorAll("form.api")).some(
      (f) =>
        Date.now() - Number(f.dataset.dirty || 0) < EDIT_HOLD_MS ||
        !(f.querySelector(".api-error") || { hidden: true }).hidden
    );
  }

  async function refresh() {
    timer = null;
    if (!live) return;
    if (document.hidden || userInLive()) {
      schedule();
      return;
    }
    const mine = ++seq;
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
      const next = r.headers.get("X-Console-Refresh");
      // Only the console's own fragments (not an overload answer or another error body).
      if (next !== null && mine === seq && !userInLive()) {
        const html = await r.text();
        if (html !== last) {
          last = html;
          const open = Array.from(live.querySelectorAll("details")).map((d) => d.open);
          live.innerHTML = html;
          live.querySelectorAll("details").forEach((d, i) => {
            if (i < open.length) d.open = open[i];
          });
          sizeTimelines(live);
        }
        every = Number(next);
      }
    } catch (e) {
      // The daemon restarting: keep the last content and try again.
    }
    schedule();
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && every > 0) schedule(0);
  });
  document.addEventListener("input", (ev) => {
    const f = ev.target.closest && ev.target.closest("form.api");
    if (f) f.dataset.dirty = String(Date.now());
  });

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
      schedule(0);
    }
  }

  function failure(res) {
    const j = res.j || {};
    return (j.code ? j.code + ": " : "HTTP " + res.status + ": ") + (j.message || "no details");
  }

  // Shows an action's refusal next to its form, or at the top if the form is gone.
  function refusal(err, text) {
    if (err && err.isConnected) {
      err.textContent = text;
      err.hidden = false;
    } else {
      flash(text, true);
    }
  }

  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-api-method]");
    if (!b) return;
    ev.preventDefault();
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    b.disabled = true;
    b.setAttribute("aria-busy", "true");
    busy++;
    let res = null;
    try {
      const body = b.dataset.apiBody ? JSON.parse(b.dataset.apiBody) : undefined;
      res = await call(b.dataset.apiMethod, b.dataset.apiPath, body);
    } catch (e) {
      flash("The request did not complete: " + e, true);
    } finally {
      busy--;
      b.disabled = false;
      b.removeAttribute("aria-busy");
    }
    if (res && res.ok) after(b.dataset.then, res);
    else if (res) flash(failure(res), true);
  });

  // A JSON body from a form: fields with data-type="int" are sent as numbers when they are
  // integers (anything else as typed, so the API names the field); empty optional ones are
  // left out.
  function body(f) {
    const out = {};
    for (const el of f.elements) {
      if (!el.name) continue;
      const v = el.value.trim();
      if (v === "" && !el.required) continue;
      out[el.name] = el.dataset.type === "int" && /^-?\d+$/.test(v) ? Number(v) : v;
    }
    return out;
  }

  document.addEventListener("submit", async (ev) => {
    const f = ev.target;
    if (!f.matches("form.api")) return;
    ev.preventDefault();
    const err = f.querySelector(".api-error");
    const data = body(f);
    if (f.dataset.confirm && !window.confirm(f.dataset.confirm)) return;
    const btn = f.querySelector('button[type="submit"]');
    if (btn) btn.disabled = true;
    busy++;
    let res = null;
    try {
      res = await call(f.dataset.apiMethod, f.dataset.apiPath, data);
    } catch (e) {
      refusal(err, "The request did not complete: " + e);
    } finally {
      busy--;
      if (btn) btn.disabled = false;
    }
    if (!res) return;
    if (res.ok) {
      if (err) err.hidden = true;
      delete f.dataset.dirty;
      after(f.dataset.then, res);
    } else {
      refusal(err, failure(res));
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    sizeTimelines(document);
    schedule();
  });
})();
