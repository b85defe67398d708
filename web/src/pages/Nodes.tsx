import { useMemo } from "react";
import { Link, useParams } from "react-router-dom";
import { useGpus, useNode, useNodes, useOverview, useSlurmNodes } from "../api/queries";
import type { NodeView, SlurmNode } from "../api/types";
import { NodeActions, useCanAct } from "../components/Actions";
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
                  <td className={`max-w-xs px-4 py-2.5 text-xs text-slate-600 dark:text-slate-300 ${wide}`}>{n.error ?? n.health_reason ?? "–"}</td>
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
    </div>
  );
}
