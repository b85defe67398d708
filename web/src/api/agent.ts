import { useQuery } from "@tanstack/react-query";
import type { AgentEvent, AgentStatus, Decision, RunView } from "../lib/agent";
import { readSSE } from "../lib/sse";
import { api, ApiError, signInUrl, unwrap } from "./client";

export const agentKeys = {
  status: ["agent"] as const,
  runs: ["agent", "runs"] as const,
};

export const useAgentStatus = () =>
  useQuery({ queryKey: agentKeys.status, queryFn: () => unwrap<AgentStatus>(api.GET("/api/v1/agent")), staleTime: 60_000 });

export const useAgentRuns = () =>
  useQuery({
    queryKey: agentKeys.runs,
    queryFn: () => unwrap<RunView[]>(api.GET("/api/v1/agent/runs", { params: { query: { limit: 20 } } })),
    refetchInterval: 30_000,
  });

export const getRun = (id: string) =>
  unwrap<RunView>(api.GET("/api/v1/agent/runs/{run_id}", { params: { path: { run_id: id } } }));

async function problem(r: Response): Promise<ApiError> {
  let detail = r.statusText || `HTTP ${r.status}`;
  try {
    const body: unknown = await r.json();
    if (body && typeof body === "object" && "detail" in body) {
      const d = (body as { detail: unknown }).detail;
      detail = typeof d === "string" ? d : JSON.stringify(d);
    }
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(r.status, detail);
}

/**
 * POST with ?stream=true and hand each server-sent event to `onEvent` as it arrives. Throws an
 * ApiError with the problem's detail when the API refuses before streaming (403, 404, 422).
 * Same-origin cookie auth, like the generated client.
 */
async function streamPost(path: string, body: unknown, onEvent: (e: AgentEvent) => void, signal?: AbortSignal): Promise<void> {
  let r: Response;
  try {
    r = await fetch(`${path}?stream=true`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal,
    });
  } catch (e) {
    if (signal?.aborted) return;
    throw new ApiError(0, `cannot reach the control plane (${e instanceof Error ? e.message : String(e)})`);
  }
  if (r.status === 401) {
    window.location.assign(signInUrl());
    throw await problem(r);
  }
  if (!r.ok) throw await problem(r);
  if (!r.body || !(r.headers.get("content-type") ?? "").includes("text/event-stream")) {
    // an answer without a stream (a run view): treat it as the end of the run
    onEvent({ type: "end", run: (await r.json()) as RunView });
    return;
  }
  try {
    for await (const m of readSSE(r.body, signal)) {
      let event: AgentEvent;
      try {
        event = JSON.parse(m.data) as AgentEvent;
      } catch {
        continue;
      }
      if (event && typeof event === "object" && typeof event.type === "string") onEvent(event);
    }
  } catch (e) {
    if (signal?.aborted) return;
    throw new ApiError(0, `the stream broke off (${e instanceof Error ? e.message : String(e)})`);
  }
}

export const askStream = (prompt: string, onEvent: (e: AgentEvent) => void, signal?: AbortSignal) =>
  streamPost("/api/v1/agent/runs", { prompt }, onEvent, signal);

export const decideStream = (runId: string, decisions: Decision[], onEvent: (e: AgentEvent) => void, signal?: AbortSignal) =>
  streamPost(`/api/v1/agent/runs/${encodeURIComponent(runId)}/decisions`, { decisions }, onEvent, signal);
