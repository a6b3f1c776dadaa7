// reasonrec web chat: talks to the JSON API of the same server (no build step, no external scripts).
// The session id lives in localStorage, so reloading the page continues the conversation.
"use strict";

const SESSION_KEY = "reasonrec.session";
const USER_KEY = "reasonrec.user";
const $ = (sel) => document.querySelector(sel);
const messages = $("#messages");

async function api(method, path, body, retries = 3) {
  const res = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  // 429/503: the model queue is full; wait as the server asks, then try again a few times.
  if ((res.status === 429 || res.status === 503) && retries > 0) {
    const wait = Number(res.headers.get("Retry-After") || "1");
    setStatus(`server busy, retrying in ${wait} s`);
    await new Promise((r) => setTimeout(r, wait * 1000));
    return api(method, path, body, retries - 1);
  }
  const data = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) {
    const err = new Error(data.error || `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

function setStatus(text) {
  $("#session-info").textContent = text;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function scrollDown() {
  window.scrollTo(0, document.body.scrollHeight);
}

function addUserMessage(text) {
  const li = el("li", "msg user", text);
  messages.appendChild(li);
  scrollDown();
  return li;
}

function addError(text) {
  messages.appendChild(el("li", "msg bot error", text));
  scrollDown();
}

function constraintChips(c) {
  const chips = [];
  if (!c) return chips;
  (c.genres || []).forEach((g) => chips.push(`genre: ${g}`));
  (c.excluded_genres || []).forEach((g) => chips.push(`no ${g}`));
  if (c.year_min != null || c.year_max != null) chips.push(`years ${c.year_min ?? "…"}–${c.year_max ?? "…"}`);
  if (c.query) chips.push(`“${c.query}”`);
  return chips;
}

function renderCard(rec) {
  const card = $("#card-template").content.firstElementChild.cloneNode(true);
  card.dataset.itemId = rec.item_id;
  card.querySelector(".rank").textContent = `${rec.rank}.`;
  card.querySelector(".title").textContent = rec.title;
  card.querySelector(".year").textContent = rec.year ? `(${rec.year})` : "";
  const genres = card.querySelector(".genres");
  (rec.genres || []).forEach((g) => genres.appendChild(el("span", "genre", g)));
  card.querySelector(".reason").textContent = rec.reason;
  card.querySelector(".thumb-up").addEventListener("click", () => sendFeedback(card, rec, true));
  card.querySelector(".thumb-down").addEventListener("click", () => sendFeedback(card, rec, false));
  return card;
}

function renderTurn(turn) {
  if (turn.user_text) addUserMessage(turn.user_text);
  const li = el("li", "msg bot");
  li.dataset.turn = turn.turn;
  li.appendChild(el("p", "reply", turn.reply));
  const chips = constraintChips(turn.constraints);
  if (chips.length) {
    const box = el("div", "chips");
    chips.forEach((c) => box.appendChild(el("span", "chip", c)));
    li.appendChild(box);
  }
  if (turn.clarification && turn.clarification.length) {
    const box = el("div", "options");
    turn.clarification.forEach((ref) => {
      const label = ref.year ? `${ref.title} (${ref.year})` : ref.title;
      const b = el("button", "option", label);
      b.type = "button";
      b.dataset.itemId = ref.item_id;
      b.addEventListener("click", () => sendMessage(label));
      box.appendChild(b);
    });
    li.appendChild(box);
  }
  if (turn.recommendations && turn.recommendations.items) {
    const cards = el("ol", "cards");
    turn.recommendations.items.forEach((rec) => cards.appendChild(renderCard(rec)));
    li.appendChild(cards);
  }
  messages.appendChild(li);
  scrollDown();
}

async function ensureSession() {
  let id = localStorage.getItem(SESSION_KEY);
  if (id) return id;
  const userId = $("#user-id").value.trim();
  const state = await api("POST", "/v1/sessions", userId ? { user_id: userId } : {});
  id = state.id || state.session_id;
  localStorage.setItem(SESSION_KEY, id);
  localStorage.setItem(USER_KEY, userId);
  showSession(id, userId);
  return id;
}

function showSession(id, userId) {
  setStatus(`session ${id}` + (userId ? ` · user ${userId}` : " · new user"));
}

function setBusy(busy) {
  $("#send").disabled = busy;
  $("#send").classList.toggle("busy", busy);
  document.querySelectorAll(".thumbs button").forEach((b) => {
    if (busy) b.dataset.wasDisabled = b.disabled ? "1" : "";
    b.disabled = busy || b.dataset.wasDisabled === "1";
  });
}

async function run(action) {
  setBusy(true);
  try {
    await action();
  } catch (err) {
    if (err.status === 404 && localStorage.getItem(SESSION_KEY)) localStorage.removeItem(SESSION_KEY);
    addError(`error: ${err.message}`);
  } finally {
    setBusy(false);
  }
}

// Streaming (Server-Sent Events over a POST): progress, the ranked cards as soon as the ranking is
// done, each reason as the model writes it, then the turn exactly as the plain endpoint returns it.
async function streamEvents(path, body, onEvent, retries = 3) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify(body),
  });
  if ((res.status === 429 || res.status === 503) && retries > 0) {
    const wait = Number(res.headers.get("Retry-After") || "1");
    onEvent("progress", { stage: `server busy, retrying in ${wait} s` });
    await new Promise((r) => setTimeout(r, wait * 1000));
    return streamEvents(path, body, onEvent, retries - 1);
  }
  if (!res.ok || !res.body) {
    const data = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
    const err = new Error(data.error || `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = (block.match(/^event: (.*)$/m) || [])[1];
      const data = (block.match(/^data: (.*)$/m) || [])[1];
      if (event && data !== undefined) onEvent(event, JSON.parse(data));
    }
  }
}

const STAGES = { queued: "waiting for the model…", ranking: "ranking candidates…", reasons: "writing reasons…" };

function pendingAnswer() {
  const li = el("li", "msg bot pending");
  const status = el("p", "progress");
  status.appendChild(el("span", "spinner"));
  const label = el("span", "progress-text", STAGES.queued);
  status.appendChild(label);
  li.appendChild(status);
  messages.appendChild(li);
  scrollDown();
  const cards = el("ol", "cards");
  const byId = {};
  return {
    li,
    stage(text) {
      label.textContent = STAGES[text] || text;
    },
    cards(items) {
      items.forEach((it) => {
        const card = renderCard({ ...it, reason: "…" });
        card.classList.add("streaming");
        card.querySelectorAll(".thumbs button").forEach((b) => (b.disabled = true));
        byId[it.item_id] = card;
        cards.appendChild(card);
      });
      li.appendChild(cards);
      this.stage("reasons");
      scrollDown();
    },
    reason(itemId, text) {
      const card = byId[itemId];
      if (card) card.querySelector(".reason").textContent = text;
    },
  };
}

async function sendStreamed(id, text) {
  const answer = pendingAnswer();
  let turn = null;
  try {
    await streamEvents(`/v1/sessions/${encodeURIComponent(id)}/messages/stream`, { text }, (event, data) => {
      if (event === "progress") answer.stage(data.stage);
      else if (event === "cards") answer.cards(data.items);
      else if (event === "reason") answer.reason(data.item_id, data.text);
      else if (event === "done") turn = data;
      else if (event === "error") {
        const err = new Error(data.error);
        err.status = data.status;
        throw err;
      }
    });
  } finally {
    answer.li.remove(); // the final turn replaces the provisional cards (reasons may have been checked)
  }
  if (!turn) throw new Error("the stream ended without an answer");
  return turn;
}

function sendMessage(text) {
  return run(async () => {
    const pending = addUserMessage(text);
    const id = await ensureSession();
    const path = `/v1/sessions/${encodeURIComponent(id)}/messages`;
    const canStream = typeof TextDecoderStream === "function";
    const turn = canStream ? await sendStreamed(id, text) : await api("POST", path, { text });
    pending.remove(); // renderTurn shows the user's text as the server recorded it
    renderTurn(turn);
    showSession(id, localStorage.getItem(USER_KEY));
  });
}

function sendFeedback(card, rec, liked) {
  card.classList.add(liked ? "liked" : "disliked");
  card.querySelectorAll(".thumbs button").forEach((b) => {
    b.disabled = true;
    b.dataset.wasDisabled = "1";
  });
  return run(async () => {
    const id = await ensureSession();
    const turn = await api("POST", `/v1/sessions/${encodeURIComponent(id)}/feedback`, {
      item_id: rec.item_id,
      liked,
    });
    renderTurn(turn);
  });
}

async function restore() {
  const id = localStorage.getItem(SESSION_KEY);
  $("#user-id").value = localStorage.getItem(USER_KEY) || "";
  if (!id) {
    setStatus("new conversation: type what you are in the mood for");
    return;
  }
  try {
    const state = await api("GET", `/v1/sessions/${encodeURIComponent(id)}`);
    (state.turns || []).forEach((t) => {
      if (typeof t === "object") renderTurn(t);
    });
    showSession(id, state.user_id);
  } catch (err) {
    localStorage.removeItem(SESSION_KEY); // unknown (e.g. a different server): start afresh
    setStatus(`previous session not found (${err.message}); starting a new one`);
  }
}

$("#composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $("#text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  sendMessage(text);
});

$("#who").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.removeItem(SESSION_KEY);
  messages.innerHTML = "";
  run(ensureSession);
});

restore();
