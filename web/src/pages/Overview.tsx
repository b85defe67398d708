import clsx from "clsx";
import { useMemo } from "react";
import { Link } from "react-router-dom";
import { useGpus, useOverview, useReclaim } from "../api/queries";
import type { GpuView, Overview as OverviewT, ReclaimPlan } from "../api/types";
import { ReclaimLevers, ReclaimPanel, ReclaimStage, useWarnedAt } from "../components/Reclaim";
import { Card, ErrorBox, Hint, Loading, Meter, PageHeader, Stat, StateBadge } from "../components/ui";
import { ago, memFraction, memPair, pct, watts } from "../lib/format";
import { gpuKey, STATE_LABEL, STATE_STYLE, STATES } from "../lib/gpu";
import { FleetMap } from "../components/FleetMap";
import { useNow } from "../lib/hooks";
import { amount, dollars, perDayAtRate, perHour, wasteShare } from "../lib/money";
import { candidateFor, SAVED_ASSUMPTION } from "../lib/reclaim";

function GpuStateBar({ o }: { o: OverviewT }) {
  const total = o.gpus.total || 1;
  return (
    <div className="mt-3">
      <div className="flex h-2 overflow-hidden rounded-full bg-slate-200 dark:bg-slate-800">
        {STATES.map((s) => (
          <div key={s} className={STATE_STYLE[s].dot} style={{ width: `${(o.gpus[s] / total) * 100}%` }} />
        ))}
      </div>
      <ul className="mt-2 grid grid-cols-2 gap-x-3 gap-y-1 text-xs">
        {STATES.map((s) => (
          <li key={s}>
            <Link
              to={`/gpus?state=${s}`}
              className="flex items-center gap-1.5 rounded hover:underline"
              data-testid={`ov-gpus-${s}`}
              data-value={o.gpus[s]}
            >
              <span className={clsx("h-2 w-2 rounded-sm", STATE_STYLE[s].dot)} />
              <span className="text-slate-600 dark:text-slate-300">{STATE_LABEL[s]}</span>
              <span className="tabular ml-auto font-semibold">{o.gpus[s]}</span>
            </Link>
          </li>
        ))}
      </ul>
    </div>
  );
}

function SlurmCard({ o }: { o: OverviewT }) {
  if (!o.slurm)
    return (
      <Stat label="Slurm queue" value="–" tone="muted" testid="ov-slurm" sub={o.slurm_error ?? "Slurm not configured"} />
    );
  const q = o.slurm;
  const rows: [keyof typeof q, string, string][] = [
    ["running", "Running", "text-emerald-600 dark:text-emerald-400"],
    ["pending", "Pending", "text-amber-600 dark:text-amber-400"],
    ["completed", "Completed", "text-slate-600 dark:text-slate-300"],
    ["failed", "Failed", "text-rose-600 dark:text-rose-400"],
  ];
  return (
    <Card className="p-4" data-testid="ov-slurm">
      <div className="flex items-center justify-between">
        <div className="text-xs font-medium uppercase tracking-wide text-slate-500 dark:text-slate-400">Slurm queue</div>
        <Link to="/slurm" className="text-xs text-sky-600 hover:underline dark:text-sky-400">
          Queue →
        </Link>
      </div>
      <div className="mt-2 grid grid-cols-4 gap-2">
        {rows.map(([k, label, cls]) => (
          <div key={k}>
            <div className={clsx("tabular text-xl font-semibold", cls)} data-testid={`ov-slurm-${k}`} data-value={q[k]}>
              {q[k]}
            </div>
            <div className="text-xs text-slate-500">{label}</div>
          </div>
        ))}
      </div>
      {q.completing > 0 && <div className="mt-1 text-xs text-slate-500">{q.completing} completing</div>}
      {o.slurm_error && <div className="mt-1 text-xs text-amber-600">{o.slurm_error}</div>}
    </Card>
  );
}

/** A job id the Slurm pages can open ("42"; an array task "42_3" opens its array job). */
function jobPath(id: string): string | null {
  const m = /^(\d+)(_\d+)?$/.exec(id);
  return m ? `/slurm/jobs/${m[1]}` : null;
}

function Wasters({ gpus, plan, now }: { gpus: GpuView[]; plan: ReclaimPlan | undefined; now: number }) {
  const warnedOf = useWarnedAt(plan);
  const rows = useMemo(
    () =>
      gpus
        .filter((g) => g.state === "allocated_idle" || g.state === "idle")
        .sort((a, b) => (a.state === b.state ? b.cost_per_hour - a.cost_per_hour : a.state === "allocated_idle" ? -1 : 1))
        .slice(0, 8),
    [gpus],
  );
  if (!rows.length) return <p className="p-4 text-sm text-slate-500">No idle GPUs: nothing is being wasted right now.</p>;
  // a job holding several idle GPUs shows its stage and levers once, on its first row
  const shown = new Set<string>();
  return (
    <table className="w-full text-sm" data-testid="wasters">
      <thead className="text-left text-xs text-slate-500">
        <tr>
          <th className="px-3 py-2 font-medium sm:px-4">GPU</th>
          <th className="hidden px-1.5 py-2 font-medium sm:table-cell sm:px-4">State</th>
          <th className="px-1.5 py-2 font-medium sm:px-4">Job · user</th>
          <th className="px-3 py-2 text-right font-medium sm:px-4">Cost</th>
        </tr>
      </thead>
      <tbody className="divide-y divide-slate-100 dark:divide-slate-800">
        {rows.map((g) => {
          const cand = candidateFor(plan, g, g.jobs.map((j) => j.job_id));
          const first = cand && !shown.has(cand.key);
          if (cand) shown.add(cand.key);
          return (
            <tr key={gpuKey(g)} data-testid={`waster-${gpuKey(g)}`} data-job={cand?.key}>
              <td className="px-3 py-2 align-top sm:px-4">
                <Link className="font-medium text-sky-700 hover:underline dark:text-sky-400" to={`/gpus/${encodeURIComponent(g.node)}/${g.index}`}>
                  {gpuKey(g)}
                </Link>
                {/* a phone has no room for the state column: the badge goes under the GPU */}
                <div className="mt-1 sm:hidden">
                  <StateBadge state={g.state} />
                </div>
              </td>
              <td className="hidden px-1.5 py-2 align-top sm:table-cell sm:px-4">
                <StateBadge state={g.state} />
              </td>
              <td className="px-1.5 py-2 align-top text-slate-600 sm:px-4 dark:text-slate-300">
                {g.jobs.length
                  ? g.jobs.map((j, i) => {
                      const to = jobPath(j.job_id);
                      return (
                        <span key={j.job_id}>
                          {i > 0 && ", "}
                          {to ? (
                            <Link to={to} className="text-sky-700 hover:underline dark:text-sky-400">
                              {j.job_id}
                            </Link>
                          ) : (
                            j.job_id
                          )}{" "}
                          · {j.user || "?"}
                        </span>
                      );
                    })
                  : "–"}
                {cand && plan && (
                  <div className="mt-1 flex flex-col items-start gap-1">
                    {first ? (
                      <>
                        <ReclaimStage cand={cand} plan={plan} warned={warnedOf(cand)} now={now} />
                        <ReclaimLevers cand={cand} plan={plan} />
                      </>
                    ) : (
                      <span className="text-xs text-slate-500">reclaim: see job {cand.key} above</span>
                    )}
                  </div>
                )}
              </td>
              <td className="tabular px-3 py-2 text-right align-top sm:px-4">{perHour(g.cost_per_hour)}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function NodeHealth({ o }: { o: OverviewT }) {
  const { burn_in, failing } = o.checks;
  return (
    <div className="mt-2 text-xs text-slate-500 dark:text-slate-400" data-testid="ov-node-health">
      <span data-testid="ov-burn-in" data-value={burn_in} className={clsx(burn_in > 0 && "font-medium text-amber-600 dark:text-amber-400")}>
        {burn_in} in burn-in
      </span>
      {" · "}
      <Link
        to="/nodes"
        data-testid="ov-checks-failing"
        data-value={failing}
        className={clsx("hover:underline", failing > 0 && "font-medium text-rose-600 dark:text-rose-400")}
      >
        {failing === 1 ? "1 node failing checks" : `${failing} nodes failing checks`}
      </Link>
    </div>
  );
}

function Saved({ o }: { o: OverviewT }) {
  return (
    <div className="tabular mt-2 border-t border-slate-100 pt-2 text-xs text-slate-600 dark:border-slate-800 dark:text-slate-300" data-testid="ov-saved">
      <div className="flex items-center gap-1.5 text-slate-500 dark:text-slate-400">
        Saved by reclaim <Hint text={SAVED_ASSUMPTION} testid="ov-saved-hint" />
      </div>
      <div>
        <span className="font-semibold text-emerald-700 dark:text-emerald-400" data-testid="ov-saved-today" data-value={o.reclaim_saved_today}>
          {amount(o.reclaim_saved_today)}
        </span>{" "}
        today ·{" "}
        <span className="font-semibold text-emerald-700 dark:text-emerald-400" data-testid="ov-saved-month" data-value={o.reclaim_saved_month}>
          {amount(o.reclaim_saved_month)}
        </span>{" "}
        this month
      </div>
    </div>
  );
}

export default function Overview() {
  const q = useOverview();
  const gpus = useGpus();
  const reclaim = useReclaim();
  const now = useNow(1000) / 1000;
  if (q.isPending) return <Loading what="Loading the cluster overview" />;
  if (q.isError) return <ErrorBox error={q.error} />;
  const o = q.data;
  const share = wasteShare(o.waste_per_hour, o.cost_per_hour);
  const memFrac = memFraction(o.memory_used_mib, o.memory_total_mib);
  const plan = reclaim.data;

  return (
    <div>
      <PageHeader
        title="Overview"
        sub={
          <>
            Cluster <span className="font-medium text-slate-700 dark:text-slate-200">{o.cluster}</span> · updated{" "}
            <span data-testid="ov-updated">{ago(o.generated_at, now)}</span>
          </>
        }
      />
      <div className="grid grid-cols-1 gap-4 sm:grid-cols-2 xl:grid-cols-4">
        <Stat
          label="Nodes up"
          testid="ov-nodes"
          value={
            <span>
              <span data-testid="ov-nodes-up" data-value={o.nodes.up}>{o.nodes.up}</span>
              <span className="text-base font-normal text-slate-400"> / {o.nodes.total}</span>
            </span>
          }
          tone={o.nodes.down ? "bad" : o.checks.failing ? "warn" : o.nodes.total ? "good" : "muted"}
          sub={
            <span data-testid="ov-nodes-down" data-value={o.nodes.down}>
              {o.nodes.down ? `${o.nodes.down} down` : o.nodes.total ? "all nodes answering" : "no nodes configured"}
            </span>
          }
        >
          <NodeHealth o={o} />
        </Stat>
        <Stat label="GPUs" testid="ov-gpus" value={<span data-testid="ov-gpus-total" data-value={o.gpus.total}>{o.gpus.total}</span>}>
          <GpuStateBar o={o} />
        </Stat>
        <Stat
          label="Mean utilization"
          testid="ov-util"
          value={<span data-testid="ov-util-mean" data-value={o.utilization_mean ?? ""}>{pct(o.utilization_mean)}</span>}
          sub="of the GPUs that are up"
        >
          <Meter className="mt-3" value={o.utilization_mean === null || o.utilization_mean === undefined ? null : o.utilization_mean / 100} color="bg-emerald-500" />
        </Stat>
        <Stat
          label="GPU memory"
          testid="ov-mem"
          value={<span data-testid="ov-mem-pct" data-value={memFrac ?? ""}>{memFrac === null ? "–" : pct(memFrac * 100)}</span>}
          sub={<span data-testid="ov-mem-pair">{memPair(o.memory_used_mib, o.memory_total_mib)}</span>}
        >
          <Meter className="mt-2" value={memFrac} color="bg-violet-500" />
        </Stat>
        <Stat label="Power draw" testid="ov-power" value={<span data-testid="ov-power-w" data-value={o.power_w}>{watts(o.power_w)}</span>} sub="all GPUs, now" />
        <Stat
          label="Spend"
          testid="ov-cost"
          value={<span data-testid="ov-cost-hr" data-value={o.cost_per_hour}>{perHour(o.cost_per_hour)}</span>}
          sub={`≈ ${dollars(perDayAtRate(o.cost_per_hour))}/day at this rate`}
        />
        <Stat
          label="Wasted on idle GPUs"
          testid="ov-waste"
          tone={o.waste_per_hour > 0 ? "warn" : "good"}
          value={<span data-testid="ov-waste-hr" data-value={o.waste_per_hour}>{perHour(o.waste_per_hour)}</span>}
          sub={
            <>
              {o.waste_today !== null && (
                <span data-testid="ov-waste-today" data-value={o.waste_today}>
                  {dollars(o.waste_today)} wasted today ·{" "}
                </span>
              )}
              {share === null ? "nothing is being spent" : `${pct(share * 100)} of spend`}
            </>
          }
        >
          {!!(plan?.mode || plan?.nodes.length || o.reclaim_saved_month > 0) && <Saved o={o} />}
        </Stat>
        <Stat
          label="Active alerts"
          testid="ov-alerts"
          tone={o.alerts_active ? "bad" : "good"}
          value={
            <Link to="/alerts" className="hover:underline" data-testid="ov-alerts-count" data-value={o.alerts_active}>
              {o.alerts_active}
            </Link>
          }
          sub={o.alerts_active ? "firing now" : "none firing"}
        />
      </div>
      <div className="mt-4 grid grid-cols-1 gap-4 xl:grid-cols-3">
        <SlurmCard o={o} />
        <Card className="xl:col-span-2">
          <div className="flex items-center justify-between border-b border-slate-100 px-4 py-2.5 dark:border-slate-800">
            <h2 className="text-sm font-semibold">Wasting money now</h2>
            <Link to="/gpus?state=allocated_idle" className="text-xs text-sky-600 hover:underline dark:text-sky-400">
              All allocated-but-idle GPUs →
            </Link>
          </div>
          {gpus.data ? <Wasters gpus={gpus.data} plan={plan} now={now} /> : <Loading />}
        </Card>
      </div>
      {plan && (plan.mode || plan.nodes.length > 0) && <ReclaimPanel plan={plan} now={now} />}
      <Card className="mt-4 p-4">
        <div className="mb-3 flex items-center justify-between">
          <h2 className="text-sm font-semibold">Fleet</h2>
          <div className="flex gap-3 text-xs text-slate-500">
            {STATES.map((s) => (
              <span key={s} className="flex items-center gap-1">
                <span className={clsx("h-2.5 w-2.5 rounded-sm", STATE_STYLE[s].dot)} /> {STATE_LABEL[s]}
              </span>
            ))}
          </div>
        </div>
        {gpus.data ? gpus.data.length ? <FleetMap gpus={gpus.data} /> : <p className="text-sm text-slate-500">No GPUs reported yet.</p> : <Loading />}
      </Card>
    </div>
  );
}
