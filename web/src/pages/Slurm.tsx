import { useMemo } from "react";
import { Link, useParams } from "react-router-dom";
import { ApiError } from "../api/client";
import { useOverview, useSlurmJob, useSlurmJobs, useSlurmNodes, useSlurmPartitions } from "../api/queries";
import type { SlurmJob } from "../api/types";
import { JobActions, NodeActions, useCanAct } from "../components/Actions";
import { GpuCard } from "../components/GpuCard";
import { TimeChart } from "../components/TimeChart";
import { Card, Empty, ErrorBox, Loading, PageHeader, Tone } from "../components/ui";
import { ago, duration, mib, pct } from "../lib/format";
import { sparks } from "../lib/spark";
import { nodeStateTone } from "../lib/slurm";

function Section({ title, children, testid }: { title: string; children: React.ReactNode; testid?: string }) {
  return (
    <Card className="mt-4 overflow-x-auto" data-testid={testid}>
      <h2 className="border-b border-slate-100 px-4 py-2.5 text-sm font-semibold dark:border-slate-800">{title}</h2>
      {children}
    </Card>
  );
}

const th = "px-1.5 py-2 font-medium first:pl-3 last:pr-3 sm:px-4 sm:first:pl-4 sm:last:pr-4";
const td = "px-1.5 py-2 first:pl-3 last:pr-3 sm:px-4 sm:first:pl-4 sm:last:pr-4";
/** Columns a phone does without (their content folds under the job's name). */
const wide = "hidden md:table-cell";

function jobTone(state: string): "ok" | "warn" | "bad" | "muted" | "busy" {
  const s = state.toUpperCase();
  if (s === "RUNNING") return "ok";
  if (s === "PENDING") return "warn";
  if (s === "COMPLETING") return "busy";
  if (["FAILED", "NODE_FAIL", "TIMEOUT", "OUT_OF_MEMORY", "BOOT_FAIL"].includes(s)) return "bad";
  return "muted";
}

/** Why a job waits, in words: the API's text (gpuwarden.slurm.reasons), else Slurm's code. */
export function why(j: SlurmJob): string {
  return j.reason_text || j.reason || "–";
}

/** Why it waits, or where it runs. */
function where(j: SlurmJob): string {
  return j.state === "PENDING" ? why(j) : j.nodes.join(", ") || "–";
}

export default function Slurm() {
  const overview = useOverview();
  const configured = !!overview.data?.slurm;
  const partitions = useSlurmPartitions(configured);
  const nodes = useSlurmNodes(configured);
  const jobs = useSlurmJobs(configured);
  const canAct = useCanAct();
  const now = Date.now() / 1000;

  if (overview.isPending) return <Loading what="Loading" />;
  if (overview.isError) return <ErrorBox error={overview.error} />;
  const o = overview.data;
  if (!o.slurm)
    return (
      <div>
        <PageHeader title="Slurm" />
        <Empty title="Slurm not configured" testid="slurm-not-configured">
          {o.slurm_error ??
            "No node in this cluster has role: controller, so there is no Slurm queue to show. GPU metrics work without it."}
        </Empty>
      </div>
    );
  const q = o.slurm;
  const sorted = [...(jobs.data ?? [])].sort((a, b) => {
    const rank = (j: SlurmJob) => (j.state === "PENDING" ? 0 : j.state === "RUNNING" ? 1 : 2);
    return rank(a) - rank(b) || a.job_id - b.job_id;
  });
  return (
    <div>
      <PageHeader
        title="Slurm"
        sub={`${q.running} running · ${q.pending} pending · ${q.completing} completing · ${q.completed} completed · ${q.failed} failed`}
      />
      {o.slurm_error && <ErrorBox error={o.slurm_error} />}
      <Section title={`Queue${jobs.data ? ` (${jobs.data.length})` : ""}`} testid="slurm-queue">
        {jobs.isError ? (
          <ErrorBox error={jobs.error} />
        ) : !jobs.data ? (
          <Loading />
        ) : !jobs.data.length ? (
          <p className="p-4 text-sm text-slate-500">The queue is empty.</p>
        ) : (
          <table className="w-full text-sm" data-testid="queue-table">
            <thead className="text-left text-xs text-slate-500">
              <tr>
                <th className={th}>Job</th>
                <th className={th}>User</th>
                <th className={`${th} ${wide}`}>Partition</th>
                <th className={th}>State</th>
                <th className={`${th} ${wide}`}>Why it waits / where it runs</th>
                <th className={`${th} text-right`}>GPUs</th>
                <th className={`${th} ${wide}`}>Submitted</th>
                <th className={`${th} ${wide}`}>Report</th>
                {canAct && (
                  <th aria-label="Actions" className={th} />
                )}
              </tr>
            </thead>
            <tbody className="divide-y divide-slate-100 dark:divide-slate-800">
              {sorted.map((j) => (
                <tr key={j.job_id} data-testid={`job-row-${j.job_id}`}>
                  <td className={td}>
                    <div className="flex max-w-[8.5rem] items-baseline gap-1.5 sm:max-w-xs">
                      <Link to={`/slurm/jobs/${j.job_id}`} className="font-medium text-sky-700 hover:underline dark:text-sky-400">
                        {j.job_id}
                      </Link>
                      <span className="truncate text-slate-500" title={j.name}>
                        {j.name}
                      </span>
                    </div>
                    {/* On a phone the wide columns fold into one line under the job. */}
                    <div className="max-w-[8.5rem] truncate text-xs text-slate-500 md:hidden" title={where(j)}>
                      {j.start_time ? (
                        <>
                          <Link to={`/slurm/jobs/${j.job_id}/report`} className="text-sky-700 dark:text-sky-400" data-testid={`job-report-link-${j.job_id}`}>
                            report
                          </Link>{" "}
                          ·{" "}
                        </>
                      ) : null}
                      {j.partition} · {where(j)}
                    </div>
                  </td>
                  <td className={`${td} max-w-[5rem] truncate sm:max-w-none`} title={j.user}>
                    {j.user}
                  </td>
                  <td className={`${td} ${wide}`}>{j.partition}</td>
                  <td className={td}>
                    <Tone tone={jobTone(j.state)}>{j.state.toLowerCase()}</Tone>
                  </td>
                  <td className={`${td} ${wide} text-xs`}>
                    {j.state === "PENDING" ? <span title={j.reason}>{why(j)}</span> : j.nodes.join(", ") || "–"}
                  </td>
                  <td className={`${td} tabular text-right`}>{j.state === "PENDING" ? j.gpus_requested : j.gpus_allocated}</td>
                  <td className={`${td} ${wide} text-xs text-slate-500`}>{ago(j.submit_time, now)}</td>
                  <td className={`${td} ${wide} text-xs`}>
                    {j.start_time ? (
                      <Link
                        to={`/slurm/jobs/${j.job_id}/report`}
                        className="text-sky-700 hover:underline dark:text-sky-400"
                        data-testid={`job-report-${j.job_id}`}
                        title={`GPU-hours, $ and utilization of job ${j.job_id}`}
                      >
                        {j.finished ? "Report" : "Report so far"}
                      </Link>
                    ) : (
                      <span className="text-slate-400">–</span>
                    )}
                  </td>
                  {canAct && (
                    <td className={`${td} text-right`}>
                      <JobActions job={j} menu />
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <div className="grid grid-cols-1 gap-x-4 xl:grid-cols-2">
        <Section title="Partitions" testid="slurm-partitions">
          {partitions.isError ? (
            <ErrorBox error={partitions.error} />
          ) : !partitions.data ? (
            <Loading />
          ) : (
            <table className="w-full text-sm">
              <thead className="text-left text-xs text-slate-500">
                <tr>
                  <th className={th}>Partition</th>
                  <th className={th}>State</th>
                  <th className={`${th} text-right`}>Nodes</th>
                  <th className={th}>Time limit</th>
                  <th className={`${th} text-right`}>GPUs in use</th>
                </tr>
              </thead>
              <tbody className="divide-y divide-slate-100 dark:divide-slate-800">
                {partitions.data.map((p) => (
                  <tr key={p.name}>
                    <td className={td}>
                      {p.name}
                      {p.default && <span className="ml-1 text-xs text-slate-500">(default)</span>}
                    </td>
                    <td className={td}>
                      <Tone tone={p.available.toLowerCase() === "up" ? "ok" : "bad"}>{p.available.toLowerCase()}</Tone>
                    </td>
                    <td className={`${td} tabular text-right`}>{p.nodes.length}</td>
                    <td className={`${td} text-xs`}>{p.time_limit}</td>
                    <td className={`${td} tabular text-right`}>
                      {p.gpus_alloc} / {p.gpus_total}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </Section>
        <Section title="Nodes" testid="slurm-nodes">
          {nodes.isError ? (
            <ErrorBox error={nodes.error} />
          ) : !nodes.data ? (
            <Loading />
          ) : (
            <table className="w-full text-sm">
              <thead className="text-left text-xs text-slate-500">
                <tr>
                  <th className={th}>Node</th>
                  <th className={th}>State</th>
                  <th className={th}>Reason</th>
                  <th className={`${th} ${wide} text-right`}>CPUs</th>
                  <th className={`${th} text-right`}>GPUs in use</th>
                  {canAct && (
                    <th aria-label="Actions" className={th} />
                  )}
                </tr>
              </thead>
              <tbody className="divide-y divide-slate-100 dark:divide-slate-800">
                {nodes.data.map((n) => (
                  <tr key={n.name} data-testid={`slurm-node-${n.name}`}>
                    <td className={td}>
                      <Link to={`/nodes/${encodeURIComponent(n.name)}`} className="text-sky-700 hover:underline dark:text-sky-400">
                        {n.name}
                      </Link>
                      <div className="text-xs text-slate-500">{n.partitions.join(", ")}</div>
                    </td>
                    <td className={td}>
                      <Tone tone={nodeStateTone(n.state)}>{[n.state, ...n.flags].join("+").toLowerCase()}</Tone>
                    </td>
                    <td className={`${td} text-xs break-words`} data-testid="slurm-node-reason">
                      {n.reason || "–"}
                      {n.reason && n.reason_time ? <span className="text-slate-500"> · {ago(n.reason_time, now)}</span> : null}
                    </td>
                    <td className={`${td} ${wide} tabular text-right`}>
                      {n.cpus_alloc} / {n.cpus_total}
                    </td>
                    <td className={`${td} tabular text-right`}>
                      {n.gpus_alloc} / {n.gpus_total}
                    </td>
                    {canAct && (
                      <td className={`${td} text-right`}>
                        <NodeActions node={n} />
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </Section>
      </div>
    </div>
  );
}

export function SlurmJobPage() {
  const { id = "" } = useParams();
  const job = useSlurmJob(Number(id));
  const chart = useMemo(() => {
    const pts = job.data?.efficiency?.utilization ?? [];
    return [pts.map((p) => p[0]), pts.map((p) => p[1])] as [number[], (number | null)[]];
  }, [job.data]);
  const now = Date.now() / 1000;
  if (job.isPending) return <Loading what={`Loading job ${id}`} />;
  if (job.isError)
    return (
      <div>
        <PageHeader title={`Job ${id}`} />
        <ErrorBox error={job.error} />
        {job.error instanceof ApiError && job.error.status === 404 && (
          <p className="mt-3 text-sm">
            <Link to={`/slurm/jobs/${id}/report`} className="text-sky-700 hover:underline dark:text-sky-400" data-testid="job-report-link">
              Its stored report, if gpuwarden kept one →
            </Link>
          </p>
        )}
      </div>
    );
  const j = job.data;
  const eff = j.efficiency;
  return (
    <div>
      <div className="mb-2 text-sm">
        <Link to="/slurm" className="text-sky-700 hover:underline dark:text-sky-400">
          Slurm
        </Link>
      </div>
      <PageHeader
        title={
          <span className="flex flex-wrap items-center gap-x-3 gap-y-1" data-testid="job-title">
            Job {j.job_id} <span className="font-normal text-slate-500">{j.name}</span>
            <Tone tone={jobTone(j.state)}>{j.state.toLowerCase()}</Tone>
          </span>
        }
        sub={`${j.user} · ${j.partition} · ${j.num_nodes} node${j.num_nodes === 1 ? "" : "s"} · ${j.num_cpus} CPUs · ${j.gpus_allocated || j.gpus_requested} GPUs${
          j.start_time ? ` · running ${duration(now - j.start_time)}` : ""
        }${j.time_limit_s ? ` of ${duration(j.time_limit_s)}` : ""}`}
        right={
          <span className="flex flex-wrap items-center gap-3">
            {j.start_time ? (
              <Link to={`/slurm/jobs/${j.job_id}/report`} className="text-sm text-sky-700 hover:underline dark:text-sky-400" data-testid="job-report-link">
                GPU report ($, grades) →
              </Link>
            ) : null}
            <JobActions job={j} />
          </span>
        }
      />
      {j.state === "PENDING" && (
        <Card className="mb-4 border-amber-300 bg-amber-50 p-4 text-sm text-amber-900 dark:border-amber-800 dark:bg-amber-950/40 dark:text-amber-200">
          Pending: {why(j)}
        </Card>
      )}
      {eff && (
        <Card className="mb-4 p-4" data-testid="job-efficiency">
          <div className="mb-2 flex flex-wrap items-baseline justify-between gap-2">
            <h2 className="text-sm font-semibold">Utilization of its GPUs over the job's life</h2>
            <span className="text-xs text-slate-500">
              mean {pct(eff.mean_utilization)} · memory {mib(eff.mean_memory_used_mib)}
            </span>
          </div>
          {chart[0].length ? (
            <TimeChart xs={chart[0]} ys={chart[1]} label="Mean utilization" unit="%" color="#10b981" max={100} height={200} />
          ) : (
            <p className="text-sm text-slate-500">No samples yet.</p>
          )}
        </Card>
      )}
      <h2 className="mb-2 text-sm font-semibold">GPUs ({j.gpus.length})</h2>
      {j.gpus.length ? (
        <div className="grid gap-3" style={{ gridTemplateColumns: "repeat(auto-fill, minmax(270px, 1fr))" }}>
          {j.gpus.map((g, i) => (
            <GpuCard key={`${g.node}/${g.index}`} gpu={g} flatIndex={i} sparkVersion={sparks.version} />
          ))}
        </div>
      ) : (
        <p className="text-sm text-slate-500">{j.state === "PENDING" ? "No GPUs yet: the job has not started." : "No GPU of this job is known to the control plane."}</p>
      )}
      {j.comment && <p className="mt-4 text-xs text-slate-500">Comment (from the job, untrusted): {j.comment}</p>}
    </div>
  );
}
