import { useMemo, useState } from "react";
import { Link, useParams } from "react-router-dom";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { api, unwrap } from "../api/client";
import type { components } from "../api/schema";
import { useGpus, useNode, useNodes, useOverview, useSlurmNodes } from "../api/queries";
import type { NodeView, SlurmNode } from "../api/types";
import { ActionButton, NodeActions, useCanAct } from "../components/Actions";
import { GpuCard } from "../components/GpuCard";
import { Card, ErrorBox, Loading, PageHeader, StateBadge, Tone } from "../components/ui";
import { ago, duration, pct } from "../lib/format";
import { nodeStateTone } from "../lib/slurm";
import { countStates, naturalCompare, nodeHealth, STATES } from "../lib/gpu";
import { useNow } from "../lib/hooks";
import { perHour } from "../lib/money";
import { sparks } from "../lib/spark";

function Health({ n }: { n: NodeView }) {
  const h = nodeHealth(n);
  return <Tone tone={h.tone}>{h.label}</Tone>;
}

/** The Slurm node a gpuwarden node is (same name, or its hostname), when Slurm is configured. */
function useSlurmNodeOf(): (n: NodeView) => SlurmNode | undefined {
  const overview = useOverview();
  const slurm = useSlurmNodes(!!overview.data?.slurm);
  const by = useMemo(() => new Map((slurm.data ?? []).map((s) => [s.name, s])), [slurm.data]);
  return (n) => by.get(n.name) ?? (n.hostname ? by.get(n.hostname) : undefined);
}

function SlurmState({ s }: { s: SlurmNode }) {
  return (
    <span className="flex flex-col items-start gap-0.5">
      <Tone tone={nodeStateTone(s.state)}>{[s.state, ...s.flags].join("+").toLowerCase()}</Tone>
      {s.reason && (
        <span className="max-w-[12rem] truncate text-xs text-slate-500" title={s.reason}>
          {s.reason}
        </span>
      )}
    </span>
  );
}

const wide = "hidden md:table-cell";

export default function Nodes() {
  const nodes = useNodes();
  const gpus = useGpus();
  const slurmOf = useSlurmNodeOf();
  const canAct = useCanAct();
  const now = useNow(1000) / 1000;
  const byNode = useMemo(() => {
    const m = new Map<string, { util: number[]; gpus: NonNullable<typeof gpus.data> }>();
    for (const g of gpus.data ?? []) {
      const e = m.get(g.node) ?? { util: [], gpus: [] };
      e.gpus.push(g);
      if (g.utilization !== null && g.utilization !== undefined) e.util.push(g.utilization);
      m.set(g.node, e);
    }
    return m;
  }, [gpus.data]);
  if (nodes.isPending) return <Loading what="Loading nodes" />;
  if (nodes.isError) return <ErrorBox error={nodes.error} />;
  const list = [...nodes.data].sort((a, b) => naturalCompare(a.name, b.name));
  const down = list.filter((n) => !n.up).length;
  const withSlurm = list.some((n) => slurmOf(n));
  return (
    <div>
      <PageHeader title="Nodes" sub={`${list.length} nodes · ${list.length - down} up${down ? ` · ${down} down` : ""}`} />
      <Card className="overflow-x-auto">
        <table className="w-full text-sm" data-testid="nodes-table">
          <thead className="border-b border-slate-200 text-left text-xs whitespace-nowrap text-slate-500 dark:border-slate-800">
            <tr>
              <th className="px-2 py-2.5 font-medium sm:px-4">Node</th>
              <th className="px-2 py-2.5 font-medium sm:px-4">State</th>
              <th className={`px-4 py-2.5 font-medium ${wide}`}>Health</th>
              {withSlurm && <th className="px-2 py-2.5 font-medium sm:px-4">Slurm</th>}
              <th className={`px-4 py-2.5 font-medium ${wide}`}>Reason</th>
              <th className="px-2 py-2.5 text-right font-medium sm:px-4">GPUs up</th>
              <th className={`px-4 py-2.5 font-medium ${wide}`}>GPU states</th>
              <th className={`px-4 py-2.5 text-right font-medium ${wide}`}>Mean util</th>
              <th className={`px-4 py-2.5 text-right font-medium ${wide}`}>Cost</th>
              <th className={`px-4 py-2.5 font-medium ${wide}`}>Last scrape</th>
              {withSlurm && canAct && (
                <th aria-label="Actions" className="px-2 py-2.5 sm:px-4" />
              )}
            </tr>
          </thead>
          <tbody className="divide-y divide-slate-100 dark:divide-slate-800">
            {list.map((n) => {
              const e = byNode.get(n.name);
              const c = countStates(e?.gpus ?? []);
              const mean = e?.util.length ? e.util.reduce((a, b) => a + b, 0) / e.util.length : null;
              const sn = slurmOf(n);
              return (
                <tr key={n.name} data-testid={`node-row-${n.name}`} className="hover:bg-slate-50 dark:hover:bg-slate-800/40">
                  <td className="px-2 py-2.5 sm:px-4">
                    <Link to={`/nodes/${encodeURIComponent(n.name)}`} className="font-medium text-sky-700 hover:underline dark:text-sky-400">
                      {n.name}
                    </Link>
                    <div className="hidden text-xs text-slate-500 sm:block">
                      {n.hostname ?? n.url}
                      {n.backend && ` · ${n.backend}`}
                      {n.simulated && " (simulated)"}
                      {n.version && ` · gpuwarden ${n.version}`}
                    </div>
                  </td>
                  <td className="px-2 py-2.5 sm:px-4">
                    <Tone tone={n.up ? "ok" : "bad"}>{n.up ? "up" : "down"}</Tone>
                  </td>
                  <td className={`px-4 py-2.5 ${wide}`}>
                    <Health n={n} />
                  </td>
                  {withSlurm && (
                    <td className="px-2 py-2.5 sm:px-4" data-testid="node-slurm-state">
                      {sn ? <SlurmState s={sn} /> : <span className="text-xs text-slate-400">not in Slurm</span>}
                    </td>
                  )}
                  <td className={`max-w-xs px-4 py-2.5 text-xs text-slate-600 dark:text-slate-300 ${wide}`}>
                    {n.error ?? n.health_reason ?? (n.version_mismatch ? null : "–")}
                    {n.version_mismatch && (
                      <div data-testid="node-version-mismatch" className="text-amber-700 dark:text-amber-300">
                        {n.version_mismatch}
                      </div>
                    )}
                  </td>
                  <td className="tabular px-2 py-2.5 text-right sm:px-4">
                    {n.gpus_up} / {n.gpus}
                  </td>
                  <td className={`px-4 py-2.5 ${wide}`}>
                    <div className="flex flex-wrap gap-1">
                      {STATES.filter((s) => c[s]).map((s) => (
                        <Link key={s} to={`/gpus?node=${encodeURIComponent(n.name)}&state=${s}`}>
                          <StateBadge state={s} className="!gap-1" />
                          <span className="tabular ml-0.5 text-xs">{c[s]}</span>
                        </Link>
                      ))}
                    </div>
                  </td>
                  <td className={`tabular px-4 py-2.5 text-right ${wide}`}>{pct(mean)}</td>
                  <td className={`tabular px-4 py-2.5 text-right ${wide}`}>{perHour(n.cost_per_hour)}</td>
                  <td className={`px-4 py-2.5 text-xs text-slate-500 ${wide}`}>
                    {ago(n.last_success, now)}
                    {n.scrape_duration_seconds !== null && n.scrape_duration_seconds !== undefined && ` · ${(n.scrape_duration_seconds * 1000).toFixed(0)} ms`}
                  </td>
                  {withSlurm && canAct && (
                    <td className="px-2 py-2.5 text-right sm:px-4">{sn && <NodeActions node={sn} />}</td>
                  )}
                </tr>
              );
            })}
          </tbody>
        </table>
        {!list.length && <p className="p-6 text-center text-sm text-slate-500">No nodes configured: add a nodes: list to the serve config.</p>}
      </Card>
    </div>
  );
}

export function NodeDetailPage() {
  const { name = "" } = useParams();
  const node = useNode(name);
  const slurmOf = useSlurmNodeOf();
  const now = useNow(1000) / 1000;
  if (node.isPending) return <Loading what={`Loading ${name}`} />;
  if (node.isError) return <ErrorBox error={node.error} />;
  const n = node.data;
  const gpus = [...n.gpu_list].sort((a, b) => a.index - b.index);
  const sn = slurmOf(n);
  return (
    <div>
      <div className="mb-2 text-sm">
        <Link to="/nodes" className="text-sky-700 hover:underline dark:text-sky-400">
          Nodes
        </Link>
      </div>
      <PageHeader
        title={
          <span className="flex items-center gap-3">
            {n.name} <Tone tone={n.up ? "ok" : "bad"}>{n.up ? "up" : "down"}</Tone> <Health n={n} />
          </span>
        }
        sub={`${n.url} · ${n.role} · provider ${n.provider} · ${perHour(n.cost_per_hour)}`}
        right={
          sn && (
            <span className="flex items-center gap-2 text-sm" data-testid="node-slurm-state">
              <span className="text-slate-500">Slurm</span> <SlurmState s={sn} /> <NodeActions node={sn} />
            </span>
          )
        }
      />
      <div className="mb-4 grid grid-cols-2 gap-3 text-sm md:grid-cols-4">
        {[
          ["Hostname", n.hostname ?? "–"],
          ["GPU source", `${n.backend ?? "–"}${n.simulated ? " (simulated)" : ""}`],
          ["Last scrape", `${ago(n.last_success, now)}${n.scrape_duration_seconds ? ` · took ${duration(n.scrape_duration_seconds)}` : ""}`],
          ["Reason", n.error ?? n.health_reason ?? "–"],
        ].map(([k, v]) => (
          <Card key={k} className="p-3">
            <div className="text-xs text-slate-500">{k}</div>
            <div className="mt-0.5 truncate" title={v}>
              {v}
            </div>
          </Card>
        ))}
      </div>
      <div className="grid gap-3" style={{ gridTemplateColumns: "repeat(auto-fill, minmax(270px, 1fr))" }}>
        {gpus.map((g, i) => (
          <GpuCard key={g.index} gpu={g} flatIndex={i} sparkVersion={sparks.version} />
        ))}
      </div>
      {!gpus.length && <p className="text-sm text-slate-500">This node reports no GPUs.</p>}
      <NodeChecksPanel name={n.name} now={now} />
    </div>
  );
}

type NodeChecks = components["schemas"]["NodeChecks"];
const VERDICT_TONE = { pass: "ok", warn: "warn", fail: "bad", skip: "muted", error: "bad" } as const;

/** The node health checks: every check's last result with its figures, the run history,
 *  and (operators) a button that runs the quick checks now. */
function NodeChecksPanel({ name, now }: { name: string; now: number }) {
  const qc = useQueryClient();
  const canAct = useCanAct();
  const [running, setRunning] = useState<string | null>(null);
  const key = ["node-checks", name];
  const checks = useQuery({
    queryKey: key,
    queryFn: () => unwrap<NodeChecks>(api.GET("/api/v1/nodes/{name}/checks", { params: { path: { name } } })),
    refetchInterval: 30_000,
  });
  const run = async () => {
    setRunning("running");
    try {
      const done = await unwrap<NodeChecks>(
        api.POST("/api/v1/nodes/{name}/checks", { params: { path: { name } }, body: { level: "quick" } }),
      );
      qc.setQueryData(key, done);
      setRunning(done.reaction ?? null);
    } catch (e) {
      setRunning(e instanceof Error ? e.message : String(e));
    }
  };
  const last = checks.data?.last ?? [];
  const runs = checks.data?.runs ?? [];
  return (
    <Card className="mt-4 p-3" data-testid="node-checks">
      <div className="mb-2 flex items-center gap-3">
        <h2 className="text-sm font-semibold">Health checks</h2>
        {canAct && (
          <ActionButton onClick={() => void run()} disabled={running === "running"} data-testid="run-checks">
            {running === "running" ? "Running…" : "Run quick checks"}
          </ActionButton>
        )}
        {running && running !== "running" && <span className="text-xs text-slate-500">{running}</span>}
      </div>
      {checks.isError && <ErrorBox error={checks.error} />}
      {!checks.isError && !last.length && (
        <p className="text-sm text-slate-500">No check has run on this node yet.</p>
      )}
      {last.length > 0 && (
        <table className="w-full text-left text-sm">
          <thead className="text-xs text-slate-500">
            <tr>
              <th className="py-1">check</th>
              <th>verdict</th>
              <th>figure</th>
              <th>expected</th>
              <th>when</th>
            </tr>
          </thead>
          <tbody>
            {last.map((r) => (
              <tr key={r.name} className="border-t border-slate-100 dark:border-slate-800" title={r.description ?? ""}>
                <td className="py-1 font-mono text-xs">{r.name}</td>
                <td>
                  <Tone tone={VERDICT_TONE[r.verdict]}>{r.verdict}</Tone>
                </td>
                <td className="max-w-md truncate" title={r.figure}>
                  {r.figure}
                </td>
                <td className="text-slate-500">{r.expected}</td>
                <td className="text-slate-500">{ago(r.at, now)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {runs.length > 0 && (
        <div className="mt-2 flex flex-wrap gap-2 text-xs text-slate-500" data-testid="check-history">
          History:
          {runs.map((r) => (
            <span key={r.id} title={r.error ?? `${r.level} · ${r.trigger}`}>
              <Tone tone={VERDICT_TONE[r.verdict]}>{r.verdict}</Tone> {r.trigger} {ago(r.at, now)}
            </span>
          ))}
        </div>
      )}
    </Card>
  );
}
