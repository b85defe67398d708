import clsx from "clsx";
import { useMemo, type ReactNode } from "react";
import { Link, useParams } from "react-router-dom";
import { ApiError } from "../api/client";
import { useJobReport } from "../api/queries";
import type { JobReport as Report, ReportGrade } from "../api/types";
import { TimeChart } from "../components/TimeChart";
import { Card, Empty, ErrorBox, Loading, Meter, PageHeader, Stat, Tone } from "../components/ui";
import { dateTime, duration, gpuHours, memPair, mib, pct } from "../lib/format";
import { amount, perHour, wasteShare } from "../lib/money";

const GRADE_TONE = { good: "ok", fair: "warn", poor: "bad", unknown: "muted" } as const;
const METRIC = { gpu_utilization: "GPU utilization", time_efficiency: "Time efficiency" } as const;

export function stateTone(state: string): "ok" | "warn" | "bad" | "muted" | "busy" {
  const s = state.toUpperCase();
  if (s === "RUNNING" || s === "COMPLETED") return "ok";
  if (s === "PENDING") return "warn";
  if (s === "COMPLETING") return "busy";
  if (["FAILED", "NODE_FAIL", "TIMEOUT", "OUT_OF_MEMORY", "BOOT_FAIL", "CANCELLED", "PREEMPTED"].includes(s.split(" ")[0])) return "bad";
  return "muted";
}

function Fact({ label, children, testid }: { label: string; children: ReactNode; testid?: string }) {
  return (
    <div className="min-w-0">
      <dt className="text-xs text-slate-500 dark:text-slate-400">{label}</dt>
      <dd className="tabular truncate text-sm font-medium" data-testid={testid}>
        {children}
      </dd>
    </div>
  );
}

function GradeBadge({ g }: { g: ReportGrade }) {
  return (
    <li className="flex flex-wrap items-center gap-2 text-sm" data-testid={`grade-${g.metric}`} data-grade={g.grade}>
      <span className="text-slate-600 dark:text-slate-300">{METRIC[g.metric]}</span>
      <span className="tabular font-semibold">{pct(g.value)}</span>
      <Tone tone={GRADE_TONE[g.grade]}>{g.grade}</Tone>
      <span className="text-xs text-slate-500">
        poor under {g.poor_below}%, fair under {g.fair_below}%
      </span>
    </li>
  );
}

function Notes({ r }: { r: Report }) {
  if (!r.notes.length) return null;
  return (
    <ul className="flex flex-col gap-2" data-testid="report-notes">
      {r.notes.map((n, i) => (
        <li
          key={i}
          data-kind={n.kind}
          className={clsx(
            "rounded-md border px-3 py-2 text-sm",
            n.severity === "warning"
              ? "border-rose-200 bg-rose-50 text-rose-900 dark:border-rose-900 dark:bg-rose-950/40 dark:text-rose-200"
              : "border-slate-200 bg-slate-50 text-slate-700 dark:border-slate-700 dark:bg-slate-800/50 dark:text-slate-200",
          )}
        >
          {n.text}
          {n.saving_per_hour ? <span className="ml-1 font-medium">(saves {perHour(n.saving_per_hour)})</span> : null}
        </li>
      ))}
    </ul>
  );
}

function PerGpu({ r }: { r: Report }) {
  const th = "px-1.5 py-2 font-medium first:pl-3 last:pr-3 sm:px-4 sm:first:pl-4 sm:last:pr-4";
  const td = "px-1.5 py-2 align-top first:pl-3 last:pr-3 sm:px-4 sm:first:pl-4 sm:last:pr-4";
  const wide = "hidden md:table-cell";
  return (
    <Card className="mt-4 overflow-x-auto" data-testid="report-gpus">
      <h2 className="border-b border-slate-100 px-4 py-2.5 text-sm font-semibold dark:border-slate-800">GPUs ({r.per_gpu.length})</h2>
      {r.per_gpu.length ? (
        <table className="w-full text-sm">
          <thead className="text-left text-xs text-slate-500">
            <tr>
              <th className={th}>GPU</th>
              <th className={`${th} w-24 sm:w-36`}>Utilization</th>
              <th className={`${th} ${wide}`}>Peak memory</th>
              <th className={`${th} ${wide} text-right`}>Idle</th>
              <th className={`${th} ${wide} text-right`}>GPU-hours</th>
              <th className={`${th} text-right`}>Cost</th>
              <th className={`${th} ${wide} text-right`}>Wasted</th>
            </tr>
          </thead>
          <tbody className="divide-y divide-slate-100 dark:divide-slate-800">
            {r.per_gpu.map((g) => (
              <tr key={`${g.node}/${g.index}`} data-testid={`report-gpu-${g.node}/${g.index}`}>
                <td className={td}>
                  <Link to={`/gpus/${encodeURIComponent(g.node)}/${g.index}`} className="font-medium text-sky-700 hover:underline dark:text-sky-400">
                    {g.node}/{g.index}
                  </Link>
                  {g.never_used && (
                    <span className="ml-1.5">
                      <Tone tone="bad">never used</Tone>
                    </span>
                  )}
                  <div className="max-w-[10rem] truncate text-xs text-slate-500 sm:max-w-xs" title={g.model ?? undefined}>
                    {g.model ?? "–"}
                  </div>
                  {/* a phone folds the memory and idle share under the GPU */}
                  <div className="tabular text-xs text-slate-500 md:hidden">
                    peak {memPair(g.peak_memory_used_mib, g.memory_total_mib)} · idle {pct(g.idle_percent)}
                  </div>
                </td>
                <td className={td}>
                  <div className="tabular text-xs">{pct(g.mean_utilization)}</div>
                  <Meter className="mt-1" value={g.mean_utilization === null ? null : g.mean_utilization / 100} color="bg-emerald-500" />
                </td>
                <td className={`${td} ${wide} tabular`}>
                  {memPair(g.peak_memory_used_mib, g.memory_total_mib)}
                  <div className="text-xs text-slate-500">mean {mib(g.mean_memory_used_mib)}</div>
                </td>
                <td className={`${td} ${wide} tabular text-right`}>{pct(g.idle_percent)}</td>
                <td className={`${td} ${wide} tabular text-right`}>{gpuHours(g.gpu_hours)}</td>
                <td className={`${td} tabular text-right`}>
                  {amount(g.cost)}
                  <div className="text-xs text-slate-500 md:hidden">wasted {amount(g.wasted)}</div>
                </td>
                <td className={`${td} ${wide} tabular text-right`}>{amount(g.wasted)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        <p className="p-4 text-sm text-slate-500">No GPU measurement of this job is stored.</p>
      )}
    </Card>
  );
}

export default function JobReportPage() {
  const { id = "" } = useParams();
  const q = useJobReport(Number(id));
  const chart = useMemo(() => {
    const pts = q.data?.utilization ?? [];
    return [pts.map((p) => p[0]), pts.map((p) => p[1])] as [number[], (number | null)[]];
  }, [q.data]);
  const back = (
    <div className="mb-2 flex gap-3 text-sm">
      <Link to="/slurm" className="text-sky-700 hover:underline dark:text-sky-400">
        Slurm
      </Link>
      <Link to={`/slurm/jobs/${id}`} className="text-sky-700 hover:underline dark:text-sky-400">
        Job {id}
      </Link>
    </div>
  );
  if (q.isPending) return <Loading what={`Loading the report of job ${id}`} />;
  if (q.isError) {
    const e = q.error;
    return (
      <div>
        {back}
        <PageHeader title={`Job ${id}: report`} />
        {e instanceof ApiError && (e.status === 404 || e.status === 409) ? (
          <Empty title={e.status === 404 ? `No report of job ${id}` : `Job ${id} has no report yet`} testid="report-missing">
            {e.message}
          </Empty>
        ) : (
          <ErrorBox error={e} />
        )}
      </div>
    );
  }
  const r = q.data;
  const share = wasteShare(r.wasted, r.cost);
  const util = r.grades.find((g) => g.metric === "gpu_utilization");
  return (
    <div data-testid="job-report" data-source={r.source}>
      {back}
      <PageHeader
        title={
          <span className="flex flex-wrap items-center gap-x-3 gap-y-1" data-testid="report-title">
            Job {r.job_id} <span className="font-normal text-slate-500">{r.name}</span>
            <Tone tone={stateTone(r.state)}>{r.state.toLowerCase()}</Tone>
          </span>
        }
        sub={
          <>
            {[r.user, r.account && `account ${r.account}`, r.partition && `partition ${r.partition}`, r.nodes.join(", ")].filter(Boolean).join(" · ")}
            {r.exit_code !== null && ` · exit code ${r.exit_code}${r.signal ? `, signal ${r.signal}` : ""}`}
          </>
        }
        right={
          <span className="text-xs text-slate-500" data-testid="report-source" title={r.stored_at ? `stored ${dateTime(r.stored_at)}` : undefined}>
            {r.source === "stored" ? "Summary stored when the job ended" : `Computed now (${r.finished ? "ended" : "running"})`}
            {r.coverage !== null && ` · measured ${pct(r.coverage * 100)} of its GPU time`}
          </span>
        }
      />
      <Card className="p-4">
        <dl className="grid grid-cols-2 gap-x-4 gap-y-3 sm:grid-cols-3 lg:grid-cols-6">
          <Fact label="Start" testid="report-start">
            {dateTime(r.start_time)}
          </Fact>
          <Fact label="End" testid="report-end">
            {r.end_time ? dateTime(r.end_time) : "running"}
          </Fact>
          <Fact label="Elapsed" testid="report-elapsed">
            {duration(r.elapsed_s)}
          </Fact>
          <Fact label="Time limit" testid="report-limit">
            {r.time_limit_s ? duration(r.time_limit_s) : "–"}
            {r.time_efficiency !== null && <span className="font-normal text-slate-500"> · used {pct(r.time_efficiency)}</span>}
          </Fact>
          <Fact label="GPUs">{r.gpus}</Fact>
          <Fact label="Rate">{perHour(r.cost_per_hour)}</Fact>
        </dl>
      </Card>
      <div className="mt-4 grid grid-cols-2 gap-4 lg:grid-cols-4">
        <Stat label="GPU-hours" testid="report-gpu-hours" value={<span data-value={r.gpu_hours}>{gpuHours(r.gpu_hours)}</span>} sub={`${r.gpus} GPU × ${duration(r.elapsed_s)}`} />
        <Stat label="Cost" testid="report-cost" value={<span data-value={r.cost}>{amount(r.cost)}</span>} sub={`at ${perHour(r.cost_per_hour)}`} />
        <Stat
          label="Wasted"
          testid="report-wasted"
          tone={r.wasted > 0 ? "warn" : "good"}
          value={<span data-value={r.wasted}>{amount(r.wasted)}</span>}
          sub={`${share === null ? "–" : pct(share * 100)} of it under ${r.idle_threshold_percent}% utilization`}
        />
        <Stat
          label="Mean utilization"
          testid="report-util"
          tone={util?.grade === "poor" ? "bad" : util?.grade === "fair" ? "warn" : undefined}
          value={<span data-value={r.mean_utilization ?? ""}>{pct(r.mean_utilization)}</span>}
          sub={`peak memory ${mib(r.peak_memory_used_mib)}`}
        >
          <Meter className="mt-2" value={r.mean_utilization === null ? null : r.mean_utilization / 100} color="bg-emerald-500" />
        </Stat>
      </div>
      {(r.grades.length > 0 || r.notes.length > 0) && (
        <Card className="mt-4 p-4" data-testid="report-grades">
          {r.grades.length > 0 && (
            <ul className="mb-3 flex flex-col gap-1.5 sm:flex-row sm:flex-wrap sm:gap-x-8">
              {r.grades.map((g) => (
                <GradeBadge key={g.metric} g={g} />
              ))}
            </ul>
          )}
          <Notes r={r} />
        </Card>
      )}
      {chart[0].length > 0 && (
        <Card className="mt-4 p-4" data-testid="report-chart">
          <h2 className="mb-2 text-sm font-semibold">Mean utilization of its GPUs over the job's life</h2>
          <TimeChart xs={chart[0]} ys={chart[1]} label="Mean utilization" unit="%" color="#10b981" max={100} height={200} />
        </Card>
      )}
      <PerGpu r={r} />
      {r.per_node.length > 1 && (
        <p className="mt-2 text-xs text-slate-500" data-testid="report-nodes">
          Per node:{" "}
          {r.per_node.map((n) => `${n.node} ${n.gpus} GPU, ${pct(n.mean_utilization)}, ${amount(n.cost)} (${amount(n.wasted)} wasted)`).join(" · ")}
        </p>
      )}
    </div>
  );
}
