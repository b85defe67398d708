import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef, useState } from "react";
import { applyLive } from "./queries";

export type StreamState = "connecting" | "live" | "down" | "recovered";

export interface StreamStatus {
  state: StreamState;
  since: number; // ms epoch of the last state change
  lastEvent: number | null; // ms epoch of the last event
}

/**
 * Live updates over /api/v1/stream (server-sent events). EventSource retries by itself after a
 * network error; when the browser gives up (readyState CLOSED, e.g. the server answered an
 * error) we reconnect with backoff. "recovered" is shown for a few seconds after a drop.
 */
export function useLiveStream(enabled: boolean): StreamStatus {
  const qc = useQueryClient();
  const [status, setStatus] = useState<StreamStatus>({ state: "connecting", since: Date.now(), lastEvent: null });
  const wasDown = useRef(false);

  useEffect(() => {
    if (!enabled || typeof EventSource === "undefined") return;
    let es: EventSource | null = null;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let calm: ReturnType<typeof setTimeout> | undefined;
    let backoff = 1000;
    let stopped = false;

    const set = (state: StreamState, lastEvent?: number) =>
      setStatus((s) =>
        s.state === state && lastEvent === undefined
          ? s
          : { state, since: s.state === state ? s.since : Date.now(), lastEvent: lastEvent ?? s.lastEvent },
      );

    const onData = (name: "overview" | "gpus") => (e: MessageEvent<string>) => {
      try {
        applyLive(qc, name, JSON.parse(e.data));
      } catch {
        return;
      }
      backoff = 1000;
      if (wasDown.current) {
        wasDown.current = false;
        set("recovered", Date.now());
        clearTimeout(calm);
        calm = setTimeout(() => set("live"), 5000);
        // Anything that changed while we were away (nodes, details) is fetched again.
        void qc.invalidateQueries({ refetchType: "active" });
      } else {
        setStatus((s) => ({ state: s.state === "recovered" ? "recovered" : "live", since: s.state === "live" || s.state === "recovered" ? s.since : Date.now(), lastEvent: Date.now() }));
      }
    };

    const connect = () => {
      if (stopped) return;
      es = new EventSource("/api/v1/stream", { withCredentials: true });
      es.addEventListener("overview", onData("overview"));
      es.addEventListener("gpus", onData("gpus"));
      es.onerror = () => {
        wasDown.current = true;
        set("down");
        if (es && es.readyState === EventSource.CLOSED) {
          es.close();
          retry = setTimeout(connect, backoff);
          backoff = Math.min(backoff * 2, 15_000);
        }
      };
    };
    connect();
    return () => {
      stopped = true;
      clearTimeout(retry);
      clearTimeout(calm);
      es?.close();
    };
  }, [enabled, qc]);

  return status;
}
