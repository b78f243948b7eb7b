// unimm web page: chat, text-to-image and editing against this server's /v1/ API.
// Plain JavaScript, no dependencies; everything it loads comes from this server.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "unimm.apiKey";
const state = { model: "unimm", history: [], pendingImage: null, busy: false };

// ---- helpers ---------------------------------------------------------------

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setBusy(busy, label) {
  state.busy = busy;
  document.querySelectorAll(".busy-lock, #chat-reset").forEach((b) => { b.disabled = busy; });
  document.body.classList.toggle("busy", busy);
  $("status").textContent = busy ? (label || "Working") + "\u2026" : "Ready";
}

// POST/GET to the API; resolves with the JSON body, rejects with the API's error message.
async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("Network error: " + e.message);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    const msg = body && body.error && body.error.message ? body.error.message : response.statusText;
    throw new Error(response.status + ": " + msg);
  }
  return body;
}

async function run(label, work) {
  if (state.busy) return;
  clearError();
  setBusy(true, label);
  try {
    await work();
  } catch (e) {
    showError(e.message);
  } finally {
    setBusy(false);
  }
}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("could not read " + file.name));
    reader.readAsDataURL(file);
  });
}

function pngImg(b64, alt) {
  const img = document.createElement("img");
  img.src = "data:image/png;base64," + b64;
  img.alt = alt;
  img.className = "pixel big";
  return img;
}

function numOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

// ---- tabs and API key ----------------------------------------------------------

document.querySelectorAll(".tab").forEach((tab) => {
  tab.addEventListener("click", () => {
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
    document.querySelectorAll(".panel").forEach((p) => { p.hidden = p.dataset.panel !== tab.dataset.tab; });
  });
});

$("api-key").value = localStorage.getItem(KEY_STORE) || "";
$("api-key").addEventListener("input", () => {
  localStorage.setItem(KEY_STORE, $("api-key").value.trim());
});

// ---- chat ----------------------------------------------------------------------

function renderChat() {
  const log = $("chat-log");
  log.replaceChildren();
  if (state.history.length === 0) {
    const p = document.createElement("p");
    p.className = "muted empty";
    p.textContent = "Ask something; attach an image if you like.";
    log.appendChild(p);
    return;
  }
  for (const m of state.history) {
    const bubble = document.createElement("div");
    bubble.className = "bubble " + m.role;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = m.role === "user" ? "You" : "Model";
    bubble.appendChild(who);
    const parts = typeof m.content === "string" ? [{ type: "text", text: m.content }] : m.content;
    for (const part of parts) {
      if (part.type === "image_url") {
        const img = document.createElement("img");
        img.src = part.image_url.url;
        img.alt = m.role === "user" ? "uploaded image" : "generated image";
        img.className = "pixel chat-img";
        bubble.appendChild(img);
      } else {
        const t = document.createElement("div");
        t.className = "text";
        if (part.text === "") {
          t.textContent = "(empty reply)";
          t.classList.add("muted");
        } else {
          t.textContent = part.text;
        }
        bubble.appendChild(t);
      }
    }
    log.appendChild(bubble);
  }
  log.scrollTop = log.scrollHeight;
}

$("chat-image").addEventListener("change", async () => {
  const file = $("chat-image").files[0];
  state.pendingImage = null;
  $("chat-preview").hidden = true;
  if (!file) return;
  try {
    state.pendingImage = await readAsDataURL(file);
    $("chat-preview").src = state.pendingImage;
    $("chat-preview").hidden = false;
  } catch (e) {
    showError(e.message);
  }
});

$("chat-text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("chat-form").requestSubmit();
  }
});

$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("chat-text").value.trim();
  if (!text && !state.pendingImage) {
    showError("Type a message or attach an image.");
    return;
  }
  const content = [];
  if (state.pendingImage) content.push({ type: "image_url", image_url: { url: state.pendingImage } });
  if (text) content.push({ type: "text", text: text });
  const message = { role: "user", content: content };
  run("Thinking", async () => {
    const body = {
      model: state.model,
      messages: state.history.concat([message]),
      max_tokens: numOrNull("chat-max-tokens") || 48,
    };
    // OpenAI's modalities field asks for an image reply; it comes back in message.images.
    if ($("chat-draw").checked) body.modalities = ["image"];
    const out = await api("/v1/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    });
    const reply = out.choices[0].message;
    // Image replies join the history as image_url parts, so the next turn is conditioned on them.
    const replyParts = (reply.images || []).map((im) => ({ type: "image_url", image_url: im.image_url }));
    if (reply.content || replyParts.length === 0) replyParts.push({ type: "text", text: reply.content || "" });
    state.history.push(message, { role: "assistant", content: replyParts });
    $("chat-text").value = "";
    $("chat-image").value = "";
    state.pendingImage = null;
    $("chat-preview").hidden = true;
    renderChat();
  });
});

$("chat-reset").addEventListener("click", () => {
  state.history = [];
  state.pendingImage = null;
  $("chat-image").value = "";
  $("chat-preview").hidden = true;
  clearError();
  renderChat();
});

// ---- generate --------------------------------------------------------------------

$("gen-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const prompt = $("gen-prompt").value.trim();
  if (!prompt) {
    showError("Enter a prompt.");
    return;
  }
  run("Generating", async () => {
    const body = { prompt: prompt, n: numOrNull("gen-n") || 1, seed: numOrNull("gen-seed") || 0 };
    const guidance = numOrNull("gen-guidance");
    if (guidance !== null) body.guidance = guidance;
    const out = await api("/v1/images/generations", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    });
    const gallery = $("gen-results");
    gallery.replaceChildren(...out.data.map((d, i) => pngImg(d.b64_json, prompt + " #" + (i + 1))));
  });
});

// ---- edit ------------------------------------------------------------------------

$("edit-image").addEventListener("change", async () => {
  const file = $("edit-image").files[0];
  $("edit-output").hidden = true;
  if (!file) {
    $("edit-input").hidden = true;
    return;
  }
  try {
    $("edit-input").src = await readAsDataURL(file);
    $("edit-input").hidden = false;
  } catch (e) {
    showError(e.message);
  }
});

$("edit-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const file = $("edit-image").files[0];
  const prompt = $("edit-prompt").value.trim();
  if (!file || !prompt) {
    showError("Choose an image and enter an instruction.");
    return;
  }
  run("Editing", async () => {
    const form = new FormData();
    form.append("image", file);
    form.append("prompt", prompt);
    form.append("seed", String(numOrNull("edit-seed") || 0));
    const out = await api("/v1/images/edits", { method: "POST", headers: headers(), body: form });
    $("edit-output").src = "data:image/png;base64," + out.data[0].b64_json;
    $("edit-output").hidden = false;
  });
});

// ---- start -----------------------------------------------------------------------

(async () => {
  try {
    const out = await api("/v1/models", { headers: headers() });
    if (out.data && out.data.length) state.model = out.data[0].id;
    $("model-name").textContent = state.model;
  } catch (e) {
    $("status").textContent = "Could not list models (" + e.message + "); set the API key if the server needs one.";
  }
})();
