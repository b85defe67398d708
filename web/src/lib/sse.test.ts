import { describe, expect, it } from "vitest";
import { readSSE, SSEParser, type SSEMessage } from "./sse";

const STREAM =
  'event: run\ndata: {"type":"run","id":"abc","mode":"llm"}\n\n' +
  ": keep-alive\n\n" +
  'event: text\ndata: {"type":"text","delta":"two\\nlines é"}\n\n' +
  'event: end\ndata: {"type":"end"}\n\n';

function all(pieces: string[]): SSEMessage[] {
  const p = new SSEParser();
  return [...pieces.flatMap((x) => p.push(x)), ...p.end()];
}

describe("SSEParser", () => {
  it("parses named events with JSON data", () => {
    const msgs = all([STREAM]);
    expect(msgs.map((m) => m.event)).toEqual(["run", "text", "end"]);
    expect(JSON.parse(msgs[1].data)).toEqual({ type: "text", delta: "two\nlines é" });
  });

  it("gives the same messages however the text is split", () => {
    const whole = all([STREAM]);
    expect(all([...STREAM])).toEqual(whole); // one character at a time
    for (const cut of [1, 7, 13, 40, 41, 42, 80]) expect(all([STREAM.slice(0, cut), STREAM.slice(cut)])).toEqual(whole);
  });

  it("accepts CRLF and CR line ends, including a CRLF split across pieces", () => {
    const crlf = STREAM.replaceAll("\n", "\r\n");
    expect(all([crlf])).toEqual(all([STREAM]));
    const at = crlf.indexOf("\r\n") + 1; // between the CR and the LF
    expect(all([crlf.slice(0, at), crlf.slice(at)])).toEqual(all([STREAM]));
    expect(all([STREAM.replaceAll("\n", "\r")])).toEqual(all([STREAM]));
  });

  it("joins multi-line data, defaults the event name, keeps the id, ignores comments", () => {
    expect(all(["id: 7\ndata: a\ndata:b\ndata\n: note\n\n"])).toEqual([{ event: "message", data: "a\nb\n", id: "7" }]);
  });

  it("drops a message the stream never finished, and blank lines alone dispatch nothing", () => {
    expect(all(["\n\n\nevent: text\ndata: {}\n"])).toEqual([]);
    const p = new SSEParser();
    expect(p.push("data: x\n")).toEqual([]);
    expect(p.push("\n")).toEqual([{ event: "message", data: "x" }]);
  });
});

describe("readSSE", () => {
  it("reads a byte stream whose chunks split UTF-8 characters", async () => {
    const bytes = new TextEncoder().encode(STREAM);
    const split = bytes.indexOf(0xc3) + 1; // inside "é"
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(bytes.slice(0, split));
        c.enqueue(bytes.slice(split));
        c.close();
      },
    });
    const msgs: SSEMessage[] = [];
    for await (const m of readSSE(body)) msgs.push(m);
    expect(msgs).toEqual(all([STREAM]));
  });
});
