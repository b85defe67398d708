// Server-sent events read from a fetch() body (EventSource cannot POST): the parsing rules of
// the HTML spec, fed text in whatever pieces the network delivers.

export interface SSEMessage {
  event: string; // "message" when the server named none
  data: string;
  id?: string;
}

export class SSEParser {
  private buf = "";
  private data: string[] = [];
  private event = "";
  private id: string | undefined;

  /** Feed the next piece of text; the messages it completes. */
  push(chunk: string): SSEMessage[] {
    this.buf += chunk;
    const out: SSEMessage[] = [];
    let start = 0;
    for (;;) {
      let i = start;
      while (i < this.buf.length && this.buf[i] !== "\n" && this.buf[i] !== "\r") i++;
      if (i >= this.buf.length) break;
      // A CR at the very end may be the first half of a CRLF: wait for the next piece.
      if (this.buf[i] === "\r" && i + 1 >= this.buf.length) break;
      const line = this.buf.slice(start, i);
      start = this.buf[i] === "\r" && this.buf[i + 1] === "\n" ? i + 2 : i + 1;
      const msg = this.line(line);
      if (msg) out.push(msg);
    }
    this.buf = this.buf.slice(start);
    return out;
  }

  /** The stream ended: a trailing lone CR still ends its line; an unterminated message is
   *  dropped, as the spec says. */
  end(): SSEMessage[] {
    const out: SSEMessage[] = [];
    if (this.buf.endsWith("\r")) {
      const msg = this.line(this.buf.slice(0, -1));
      if (msg) out.push(msg);
    }
    this.buf = "";
    this.data = [];
    this.event = "";
    return out;
  }

  private line(line: string): SSEMessage | null {
    if (line === "") {
      if (this.data.length === 0) {
        this.event = "";
        return null;
      }
      const msg: SSEMessage = { event: this.event || "message", data: this.data.join("\n") };
      if (this.id !== undefined) msg.id = this.id;
      this.data = [];
      this.event = "";
      return msg;
    }
    if (line.startsWith(":")) return null; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    return null;
  }
}

/** The messages of a response body, as they arrive. */
export async function* readSSE(body: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<SSEMessage> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SSEParser();
  const abort = () => void reader.cancel().catch(() => undefined);
  signal?.addEventListener("abort", abort, { once: true });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    yield* parser.push(decoder.decode());
    yield* parser.end();
  } finally {
    signal?.removeEventListener("abort", abort);
    void reader.cancel().catch(() => undefined); // a no-op once done; frees the body if we stop early
  }
}
