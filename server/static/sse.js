// POST a JSON body and yield the parsed `data:` objects of the SSE answer, until [DONE].
// fetch + ReadableStream (EventSource cannot POST); `signal` aborts the request, and the server
// aborts the generation when the connection drops.

export class ApiError extends Error {}

export async function* streamJSON(url, body, headers, signal) {
  const resp = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
    signal,
  });
  if (!resp.ok) throw new ApiError(await errorMessage(resp));
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
      if (!line.startsWith("data:")) continue;          // blank separators, ": ping" comments
      const data = line.slice(5).replace(/^ /, "");
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
  throw new ApiError("the stream ended without [DONE]");
}

export async function errorMessage(resp) {
  let text = await resp.text();
  try {
    const obj = JSON.parse(text);
    text = (obj.error && obj.error.message) || obj.message || text;
  } catch (_) { /* not JSON: show the raw body */ }
  return `${resp.status}: ${text || resp.statusText}`;
}

export function chunkError(chunk) {
  // the server reports a failure inside the stream as {"error": {...}}, then [DONE]
  if (!chunk || !chunk.error) return null;
  return chunk.error.message || JSON.stringify(chunk.error);
}
