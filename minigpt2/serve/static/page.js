// "Write With Transformer": Tab sends the text to /v1/completions (stream + logprobs) and
// appends each generated piece as a <span class="tok"> shaded by its probability. Hovering a
// span shows that token's probability and the top alternatives. No libraries, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const editor = $("editor"), tooltip = $("tooltip"), statusLine = $("status");
const TOP_ALTERNATIVES = 5;
let modelName = null;
let controller = null;              // the AbortController of the running request, if any
const tokenInfo = new WeakMap();    // span -> [{token, logprob, top}] (one piece can hold several tokens)

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function settings() {
  return {
    temperature: Number($("temperature").value), top_k: Number($("top-k").value),
    top_p: Number($("top-p").value), max_tokens: Number($("length").value),
  };
}

for (const id of ["temperature", "top-k", "top-p", "length"]) {
  const input = $(id), output = $(id + "-value");
  input.addEventListener("input", () => { output.textContent = input.value; });
}

async function loadModel() {
  try {
    const response = await fetch("/v1/models", { headers: authHeaders() });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    modelName = body.data[0].id;
    $("model-name").textContent = modelName;
    const context = body.data[0].max_model_len;
    if (context) $("length").max = Math.min(Number($("length").max), context - 1);
  } catch (error) {
    setStatus("cannot list the models: " + error.message, true);
  }
}

// probability -> a background colour: green for likely tokens, red for unlikely ones (square
// root: most sampled tokens have p well under 0.5, and a linear scale would paint them all red)
function shade(p) {
  return `hsl(${Math.round(120 * Math.sqrt(p))}, 70%, 82%)`;
}

function appendPiece(text, infos) {
  const span = document.createElement("span");
  span.className = "tok";
  span.textContent = text;
  if (infos.length) {
    const p = Math.exp(infos.reduce((sum, info) => sum + info.logprob, 0));
    span.style.background = shade(p);
    tokenInfo.set(span, infos);
  }
  editor.appendChild(span);
  editor.scrollTop = editor.scrollHeight;
}

// one server-sent event ("data: {...}") -> pieces in the editor; returns false at [DONE]
function handleEvent(event, state) {
  for (const line of event.split("\n")) {
    if (!line.startsWith("data: ")) continue;
    const data = line.slice(6);
    if (data === "[DONE]") return false;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(chunk.error.message);
    const choice = chunk.choices[0];
    const lp = choice.logprobs;
    if (lp) {
      for (let i = 0; i < lp.tokens.length; i++) {
        state.pending.push({ token: lp.tokens[i], logprob: lp.token_logprobs[i], top: lp.top_logprobs[i] });
      }
    }
    // a piece may be held back (half a UTF-8 character): its tokens go with the next piece
    if (choice.text) {
      appendPiece(choice.text, state.pending.splice(0));
      state.pieces += 1;
    }
  }
  return true;
}

async function complete() {
  if (controller) return;
  if (!modelName) await loadModel();
  if (!modelName) return;
  controller = new AbortController();
  $("continue").disabled = true;
  $("stop").disabled = false;
  setStatus("generating…");
  const started = performance.now();
  try {
    const response = await fetch("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify({ model: modelName, prompt: editor.textContent, stream: true,
                             logprobs: TOP_ALTERNATIVES, ...settings() }),
      signal: controller.signal,
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const state = { pending: [], pieces: 0 };   // tokens waiting for their text; pieces shown
    let buffer = "", going = true;
    while (going) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while (going && (end = buffer.indexOf("\n\n")) >= 0) {
        going = handleEvent(buffer.slice(0, end), state);
        buffer = buffer.slice(end + 2);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    setStatus(`done: ${state.pieces} pieces in ${seconds.toFixed(1)} s`);
  } catch (error) {
    setStatus(error.name === "AbortError" ? "stopped" : "error: " + error.message, error.name !== "AbortError");
  } finally {
    controller = null;
    $("continue").disabled = false;
    $("stop").disabled = true;
  }
}

function stop() {
  if (controller) controller.abort();     // closing the stream frees the row on the server at once
}

function percent(logprob) {
  return (100 * Math.exp(logprob)).toFixed(logprob > Math.log(0.1) ? 1 : 2) + "%";
}

function visible(text) {
  return JSON.stringify(text).slice(1, -1);    // show spaces and newlines: "\n", " the"
}

function showTooltip(span) {
  const infos = tokenInfo.get(span);
  if (!infos) return;
  tooltip.replaceChildren();
  for (const info of infos) {
    const head = document.createElement("div");
    head.className = "chosen";
    head.textContent = `"${visible(info.token)}"  ${percent(info.logprob)}`;
    tooltip.appendChild(head);
    const table = document.createElement("table");
    const best = Math.max(...Object.values(info.top || {}), info.logprob);
    for (const [token, logprob] of Object.entries(info.top || {})) {
      const row = table.insertRow();
      if (token === info.token) row.className = "is-chosen";
      row.insertCell().textContent = `"${visible(token)}"`;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = Math.max(1, Math.round(60 * Math.exp(logprob - best))) + "px";   // the likeliest: full width
      row.insertCell().appendChild(bar);
      const p = row.insertCell();
      p.className = "p";
      p.textContent = percent(logprob);
    }
    tooltip.appendChild(table);
  }
  const box = span.getBoundingClientRect();
  tooltip.style.left = `${window.scrollX + box.left}px`;
  tooltip.style.top = `${window.scrollY + box.bottom + 6}px`;
  tooltip.hidden = false;
}

editor.addEventListener("keydown", (event) => {
  if (event.key === "Tab") {
    event.preventDefault();              // Tab continues the text instead of leaving the editor
    complete();
  } else if (event.key === "Escape") {
    stop();
  }
});
editor.addEventListener("mouseover", (event) => {
  const span = event.target.closest && event.target.closest(".tok");
  if (span) showTooltip(span);
});
editor.addEventListener("mouseout", (event) => {
  if (event.target.closest && event.target.closest(".tok")) tooltip.hidden = true;
});
$("continue").addEventListener("click", complete);
$("stop").addEventListener("click", stop);
$("api-key").addEventListener("change", loadModel);

// put the caret at the end of the sample text, ready for Tab
editor.focus();
document.getSelection().selectAllChildren(editor);
document.getSelection().collapseToEnd();
loadModel();
