// The mtlrec page: vanilla JavaScript, no libraries. Every text from the server goes in with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "mtlrec.apiKey";
const VISITOR_STORE = "mtlrec.visitor";
const state = { user: null, needsKey: false };

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name === "className") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

class ApiError extends Error {
  constructor(status, message, detail) {
    super(message);
    this.status = status;
    this.detail = detail;
  }
}

// A call to the API. Errors come back as {"error": "...", "detail": ...}; anything else is reported as it came.
async function api(method, path, body, headers = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `the server could not be reached (${err.message})`, null);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data && typeof data.error === "string" ? data.error : `HTTP ${response.status}: ${text.slice(0, 200)}`;
    throw new ApiError(response.status, message, data ? data.detail : null);
  }
  return data;
}

function showError(err) {
  const status = err instanceof ApiError && err.status ? `${err.status}: ` : "";
  $("error-message").textContent = status + (err.message || String(err));
  const detail = err instanceof ApiError ? err.detail : null;
  $("error-detail").textContent = detail === null || detail === undefined ? "" : JSON.stringify(detail, null, 2);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-message").textContent = "";
  $("error-detail").textContent = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

function visitorId() {
  let id = sessionStorage.getItem(VISITOR_STORE);
  if (!id) {
    const random = window.crypto && crypto.getRandomValues
      ? Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("")
      : Math.random().toString(16).slice(2, 14);
    id = `web-${random}`;
    sessionStorage.setItem(VISITOR_STORE, id);
  }
  return id;
}

function howMany() {
  const k = Number.parseInt($("k").value, 10);
  return Number.isFinite(k) ? k : 10;
}

function formatValue(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
  if (Array.isArray(value)) return value.map(formatValue).join(", ");
  if (value && typeof value === "object") {
    return Object.entries(value).map(([name, v]) => `${name} ${formatValue(v)}`).join(", ");
  }
  return String(value);
}

function renderItem(item) {
  const scores = el("dl", { className: "scores" });
  for (const [task, value] of Object.entries(item.scores || {})) {
    scores.append(el("dt", { text: task }), el("dd", { text: formatValue(value), "data-task": task }));
  }
  const categories = el("ul", { className: "categories" });
  for (const name of item.categories || []) categories.append(el("li", { text: name }));
  const like = el("button", { type: "button", className: "like", text: "Like" });
  like.addEventListener("click", () => sendLike(item, like));
  return el("li", { className: "rec", "data-item-id": item.item_id, "data-score": String(item.score) }, [
    el("h3", { className: "title", text: item.title }),
    el("span", { className: "meta", text: `item ${item.item_id}` }),
    categories,
    el("span", { className: "score", text: `score ${formatValue(item.score)}` }),
    scores,
    el("p", { className: "reason", text: item.reason || "" }),
    like,
  ]);
}

function showResults(title, body) {
  $("results-title").textContent = title;
  $("results-title").hidden = false;
  $("results").replaceChildren(...body.items.map(renderItem));
  const blend = body.blend ? ` (blend ${formatValue(body.blend)})` : "";
  setStatus(`${body.items.length} items, strategy ${body.strategy}${blend}`);
}

async function run(title, call) {
  clearError();
  setStatus("asking the model…");
  try {
    showResults(title, await call());
  } catch (err) {
    setStatus("");
    showError(err);
  }
}

function recommendForUser(user) {
  user = user.trim();
  if (!user) {
    showError(new Error("type a user id, or pick one from the suggestions"));
    return;
  }
  state.user = user;
  $("user").value = user;
  $("user-suggestions").replaceChildren();
  const query = new URLSearchParams({ user, k: String(howMany()) });
  run(`Recommended for user ${user}`, () => api("GET", `/recommend?${query}`));
}

function recommendForNewUser(title, body) {
  state.user = null;
  run(title, () => api("POST", "/recommend", { ...body, k: howMany() }));
}

function likedIds() {
  return $("liked").value.split(",").map((s) => s.trim()).filter(Boolean);
}

async function sendLike(item, button) {
  clearError();
  const user = state.user || visitorId();
  const headers = {};
  const key = $("api-key").value;
  if (key) headers["X-API-Key"] = key;
  button.disabled = true;
  try {
    await api("POST", "/feedback", { user, item: item.item_id, type: "like" }, headers);
    button.textContent = "Liked ✓";
    button.classList.add("done");
    const ids = likedIds();
    if (!ids.includes(item.item_id)) $("liked").value = [...ids, item.item_id].join(", ");
    setStatus(`liked "${item.title}" as user ${user}`);
  } catch (err) {
    button.disabled = false;
    showError(err);
  }
}

let suggestTimer = null;
let suggestSeq = 0;

function suggestUsers() {
  clearTimeout(suggestTimer);
  suggestTimer = setTimeout(async () => {
    const seq = ++suggestSeq;
    const query = new URLSearchParams({ prefix: $("user").value.trim(), limit: "12" });
    try {
      const body = await api("GET", `/users?${query}`);
      if (seq !== suggestSeq) return; // a later keystroke has asked again
      const list = $("user-suggestions");
      list.replaceChildren(
        ...body.users.map((user) => {
          const button = el("button", { type: "button", text: user, "data-user": user });
          button.addEventListener("click", () => recommendForUser(user));
          return el("li", {}, [button]);
        }),
      );
      if (body.total > body.users.length) list.append(el("li", { className: "muted", text: `…${body.total} in all` }));
    } catch (err) {
      showError(err);
    }
  }, 120);
}

async function loadInfo() {
  try {
    const ready = await api("GET", "/ready");
    const dataset = ready.dataset ? `, dataset ${ready.dataset}` : "";
    $("run-info").textContent =
      `run ${ready.run_name}${dataset}: ${ready.n_users} users, ${ready.n_items} items, tasks ${ready.tasks.join(", ")}`;
    state.needsKey = Boolean(ready.writes_need_api_key);
    $("key-box").hidden = !state.needsKey;
  } catch (err) {
    $("run-info").textContent = "";
    showError(err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
  $("api-key").addEventListener("input", () => sessionStorage.setItem(KEY_STORE, $("api-key").value));
  $("user").addEventListener("input", suggestUsers);
  $("user").addEventListener("focus", suggestUsers);
  $("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    recommendForUser($("user").value);
  });
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("taste").value.trim();
    if (!text) return showError(new Error("describe what you like first"));
    recommendForNewUser("Recommended for your tastes", { text, liked: likedIds() });
  });
  $("liked-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const liked = likedIds();
    if (!liked.length) return showError(new Error("list at least one item id"));
    recommendForNewUser("Recommended from the items you liked", { liked });
  });
  loadInfo();
});
