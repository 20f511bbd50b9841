// The chat page: settings -> request, the SSE stream -> token elements, reasoning, tool calls,
// errors and live numbers. All text goes in with textContent (never parsed as HTML).
import { ApiError, chunkError, errorMessage, streamJSON } from "./sse.js";
import { LiveStats } from "./stats.js";
import { TokenView } from "./tokens.js";

const $ = (id) => document.getElementById(id);
const history = [];            // the conversation as OpenAI messages (without the system prompt)
const stats = new LiveStats(document);
let controller = null;         // AbortController of the running request

function headers() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function setStatus(text) { $("status").textContent = text; }

function followAnswer(update) {
  // keep the newest tokens in view, unless the reader scrolled up
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  update();
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function addMessage(role) {
  const el = document.createElement("div");
  el.className = `msg ${role}`;
  $("messages").append(el);
  return el;
}

function showError(text, parent = $("messages")) {
  const el = document.createElement("div");
  el.className = "error";
  el.setAttribute("role", "alert");
  el.textContent = `Error: ${text}`;
  parent.append(el);
  el.scrollIntoView({ block: "nearest" });
  return el;
}

function parseJSONField(id, label, check) {
  const raw = $(id).value.trim();
  if (!raw) return undefined;
  let value;
  try {
    value = JSON.parse(raw);
  } catch (e) {
    throw new ApiError(`${label} is not valid JSON: ${e.message}`);
  }
  const problem = check(value);
  if (problem) throw new ApiError(`${label}: ${problem}`);
  return value;
}

function buildRequest(userText) {
  const schema = parseJSONField("schema", "JSON schema",
    (v) => (v && typeof v === "object" && !Array.isArray(v) ? null : "must be a JSON object"));
  const tools = parseJSONField("tools", "Tools",
    (v) => (Array.isArray(v) ? null : "must be a JSON array of tools"));
  const maxTokens = Number($("max-tokens").value);
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new ApiError("max tokens must be a whole number >= 1");
  const temperature = Number($("temperature").value);
  if (!(temperature >= 0 && temperature <= 2)) throw new ApiError("temperature must be between 0 and 2");
  const draft = Number($("draft-tokens").value);
  if ($("speculation").checked && !(Number.isInteger(draft) && draft >= 1 && draft <= 16)) {
    throw new ApiError("draft tokens per step must be a whole number in 1..16");
  }
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history, { role: "user", content: userText });
  const body = {
    messages,
    stream: true,
    stream_options: { include_usage: true, include_spec_trace: true },
    max_tokens: maxTokens,
    temperature,
    num_speculative_tokens: $("speculation").checked ? draft : 0,   // 0 = plain decoding
  };
  if (schema !== undefined) {
    body.response_format = { type: "json_schema", json_schema: { name: "response", schema } };
  }
  if (tools !== undefined) body.tools = tools;
  return body;
}

class AnswerView {
  constructor(el) {
    this.reasoning = document.createElement("details");
    this.reasoning.className = "reasoning";
    this.reasoning.hidden = true;
    const summary = document.createElement("summary");
    summary.textContent = "reasoning";
    this.reasoningText = document.createElement("pre");
    this.reasoning.append(summary, this.reasoningText);
    this.answer = document.createElement("div");
    this.answer.className = "answer";
    this.calls = document.createElement("div");
    this.calls.className = "tool-calls";
    el.append(this.reasoning, this.answer, this.calls);
    this.el = el;
    this.tokens = new TokenView(this.answer);
    this.toolCalls = [];    // {id, name, arguments, el}
  }

  addReasoning(text) {
    this.reasoning.hidden = false;
    this.reasoningText.textContent += text;
  }

  addToolCalls(deltas) {
    for (const d of deltas) {
      const i = d.index ?? this.toolCalls.length;
      let call = this.toolCalls[i];
      if (!call) {
        const el = document.createElement("div");
        el.className = "tool-call";
        const name = document.createElement("span");
        name.className = "tool-name";
        const args = document.createElement("code");
        args.className = "tool-args";
        el.append(name, args);
        this.calls.append(el);
        call = this.toolCalls[i] = { id: d.id, name: "", arguments: "", el, nameEl: name, argsEl: args };
      }
      if (d.id) call.id = d.id;
      if (d.function?.name) call.name += d.function.name;
      if (d.function?.arguments) call.arguments += d.function.arguments;
      call.nameEl.textContent = `${call.name}(`;
      call.argsEl.textContent = `${call.arguments})`;
    }
  }

  message() {
    const msg = { role: "assistant", content: this.tokens.text() };
    if (this.toolCalls.length) {
      msg.tool_calls = this.toolCalls.map((c) => ({
        id: c.id, type: "function", function: { name: c.name, arguments: c.arguments },
      }));
    }
    return msg;
  }
}

async function send() {
  const text = $("prompt").value;
  if (!text.trim() || controller) return;
  let body;
  try {
    body = buildRequest(text);
  } catch (e) {
    showError(e.message);
    setStatus("not sent");
    return;
  }
  $("prompt").value = "";
  addMessage("user").textContent = text;
  const view = new AnswerView(addMessage("assistant"));
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  setStatus("streaming…");
  stats.start();
  let finish = null;
  try {
    for await (const chunk of streamJSON("/v1/chat/completions", body, headers(), controller.signal)) {
      const err = chunkError(chunk);
      if (err) throw new ApiError(err);
      if (chunk.spec_trace) {
        view.tokens.addSteps(chunk.spec_trace);
        stats.addSteps(chunk.spec_trace);
      }
      const choice = chunk.choices && chunk.choices[0];
      if (choice) {
        const delta = choice.delta || {};
        if (delta.reasoning_content) { stats.firstToken(); view.addReasoning(delta.reasoning_content); }
        if (delta.content) {
          stats.firstToken();
          followAnswer(() => view.tokens.addText(delta.content));
          stats.countTokens(view.answer.childElementCount);
        }
        if (delta.tool_calls) { stats.firstToken(); view.addToolCalls(delta.tool_calls); }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      if (chunk.timings) stats.final(chunk.timings);
    }
    view.tokens.finish();
    history.push({ role: "user", content: text }, view.message());
    setStatus(`done (${finish || "no finish reason"})`);
  } catch (e) {
    view.tokens.finish();
    if (e.name === "AbortError") {
      view.el.dataset.stopped = "true";
      history.push({ role: "user", content: text }, view.message());
      setStatus("stopped");
    } else {
      showError(e instanceof ApiError || e instanceof TypeError ? e.message : String(e), view.el);
      setStatus("error");
    }
  } finally {
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
    view.el.dataset.done = "true";
    $("prompt").focus();
  }
}

async function loadModel() {
  try {
    const resp = await fetch("/v1/models", { headers: headers() });
    if (!resp.ok) {
      setStatus(`models: ${await errorMessage(resp)}`);
      return;
    }
    const data = await resp.json();
    $("model-name").textContent = data.data.map((m) => m.id).join(", ");
  } catch (e) {
    setStatus(`cannot reach the server: ${e.message}`);
  }
}

$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => {
  if (controller) controller.abort();
  history.length = 0;
  $("messages").replaceChildren();
  setStatus("ready");
});
$("show-rejected").addEventListener("change", (e) => {
  $("messages").classList.toggle("hide-rejected", !e.target.checked);
});
$("speculation").addEventListener("change", (e) => { $("draft-tokens").disabled = !e.target.checked; });
$("api-key").addEventListener("change", loadModel);
loadModel();
document.body.dataset.ready = "true";
