// The gcmr search page: a query box over GET /search, thumbnails from /items/{id}/media, and
// "more like this" links (/?like=ID -> GET /search?like=ID). Everything shown comes from the
// server's JSON and is written with textContent or DOM properties, never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("search-form"), q = $("q"), k = $("k"), status = $("status"),
        results = $("results"), likeNote = $("like-note"), notice = $("notice");
  const maxK = Number(document.body.dataset.maxK) || 1000;

  function clampK() {
    const n = Math.round(Number(k.value));
    return Number.isFinite(n) ? Math.min(Math.max(n, 1), maxK) : 10;
  }

  // the `detail` of a 4xx answer: a string, or pydantic's list of {loc, msg}
  function detailText(body) {
    const d = body && body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) {
      return d.map((e) => `${(e.loc || []).join(".")}: ${e.msg || ""}`).join("; ");
    }
    return "unexpected answer";
  }

  // a server whose /search has no `like` parameter yet asks for the missing `q`
  function likeUnsupported(response, body) {
    return response.status === 422 && Array.isArray(body.detail) && body.detail.some(
      (e) => Array.isArray(e.loc) && e.loc[e.loc.length - 1] === "q" && e.type === "missing");
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function hitNode(hit) {
    const li = el("li", "hit");
    li.dataset.id = hit.id;
    li.appendChild(el("span", "rank", hit.rank));
    const img = el("img", "thumb");
    img.alt = "";
    img.loading = "lazy";
    img.src = `/items/${encodeURIComponent(hit.id)}/media`;
    img.addEventListener("error", () => img.replaceWith(el("span", "no-thumb")));
    li.appendChild(img);
    const body = el("div", "body");
    body.appendChild(el("div", "caption", hit.caption || "(no caption)"));
    const meta = el("div", "meta");
    meta.appendChild(el("span", "item-id", hit.id));
    meta.appendChild(el("span", "score", `score ${Number(hit.score).toFixed(3)}`));
    const like = el("a", "like", "more like this");
    like.href = "/?" + new URLSearchParams({ like: hit.id, k: String(clampK()) });
    meta.appendChild(like);
    body.appendChild(meta);
    li.appendChild(body);
    return li;
  }

  async function search(params) {
    status.textContent = "searching…";
    const t0 = performance.now();
    let response, body;
    try {
      response = await fetch(`/search?${params}`, { headers: { accept: "application/json" } });
      body = await response.json();
    } catch (err) {
      results.replaceChildren();
      status.textContent = `no answer from the server (${err.message})`;
      return null;
    }
    const roundTrip = performance.now() - t0;
    return { response, body, roundTrip };
  }

  function show(answer) {
    const hits = answer.body.results[0].hits;
    results.replaceChildren(...hits.map(hitNode));
    status.textContent = `${hits.length} results in ${answer.body.took_ms} ms ` +
      `(${answer.roundTrip.toFixed(0)} ms round trip)`;
  }

  async function runQuery(text) {
    likeNote.hidden = notice.hidden = true;
    const answer = await search(new URLSearchParams({ q: text, k: String(clampK()) }));
    if (!answer) return;
    if (!answer.response.ok) {
      results.replaceChildren();
      status.textContent = `error ${answer.response.status}: ${detailText(answer.body)}`;
      return;
    }
    show(answer);
  }

  async function runLike(id) {
    notice.hidden = true;
    likeNote.hidden = false;
    likeNote.textContent = `More like ${id}`;
    fetch(`/items/${encodeURIComponent(id)}`).then((r) => (r.ok ? r.json() : null)).then(
      (item) => {
        if (item && item.captions && item.captions.length) {
          likeNote.textContent = `More like ${id}: “${item.captions[0]}”`;
        }
      }, () => {});
    const answer = await search(new URLSearchParams({ like: id, k: String(clampK()) }));
    if (!answer) return;
    if (likeUnsupported(answer.response, answer.body)) {
      results.replaceChildren();
      status.textContent = "";
      notice.textContent = "“More like this” is not available on this server yet " +
        "(its /search does not take like=ID). Type a query instead.";
      notice.hidden = false;
      return;
    }
    if (!answer.response.ok) {
      results.replaceChildren();
      status.textContent = `error ${answer.response.status}: ${detailText(answer.body)}`;
      return;
    }
    show(answer);
  }

  function fromLocation() {
    const params = new URLSearchParams(window.location.search);
    if (params.has("k")) k.value = String(params.get("k"));
    if (params.get("like")) {
      runLike(params.get("like"));
    } else if (params.get("q")) {
      q.value = params.get("q");
      runQuery(q.value);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = q.value.trim();
    if (!text) {
      status.textContent = "type a query";
      return;
    }
    history.pushState(null, "", "/?" + new URLSearchParams({ q: text, k: String(clampK()) }));
    runQuery(text);
  });
  window.addEventListener("popstate", fromLocation);
  fromLocation();
})();
