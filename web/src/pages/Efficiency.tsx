import { Fragment } from "react";
import { useSearchParams } from "react-router-dom";
import { useEfficiency, type EfficiencyBy } from "../api/queries";
import type { EfficiencyReport } from "../api/types";
import { Card, Empty, ErrorBox, Loading, Meter, PageHeader, Segmented } from "../components/ui";
import { dateTime, gpuHours, int, pct } from "../lib/format";
import { amount, wasteShare } from "../lib/money";

const BY: readonly EfficiencyBy[] = ["user", "account", "partition"];
const SINCE = ["24h", "7d", "2w", "30d", "90d"] as const;
type Since = (typeof SINCE)[number];

const th = "px-1.5 py-2 font-medium first:pl-3 last:pr-3 sm:px-4 sm:first:pl-4 sm:last:pr-4";
const td = "px-1.5 py-2 align-top first:pl-3 last:pr-3 sm:px-4 sm:first:pl-4 sm:last:pr-4";
const wide = "hidden md:table-cell";

/** The CSV of the same report (the route's CSV form); the session cookie authenticates it. */
export function csvHref(since: string, by: EfficiencyBy): string {
  return `/api/v1/reports/efficiency?${new URLSearchParams({ since, by, format: "csv" })}`;
}

function Totals({ r }: { r: EfficiencyReport }) {
  const share = wasteShare(r.wasted, r.cost);
  const cells: [string, string, string?][] = [
    ["Jobs", int(r.jobs)],
    ["GPU-hours", gpuHours(r.gpu_hours)],
    ["Mean utilization", pct(r.mean_utilization)],
    ["Spent", amount(r.cost)],
    ["Wasted", amount(r.wasted), share !== null ? `${pct(share * 100)} of spend` : undefined],
  ];
  return (
    <Card className="mb-4 grid grid-cols-2 gap-x-4 gap-y-3 p-4 sm:grid-cols-5" data-testid="eff-totals">
      {cells.map(([label, value, sub]) => (
        <div key={label}>
          <div className="text-xs text-slate-500 dark:text-slate-400">{label}</div>
          <div className="tabular text-lg font-semibold">
            {value}
            {sub && <span className="ml-1.5 text-xs font-normal text-slate-500">{sub}</span>}
          </div>
        </div>
      ))}
    </Card>
  );
}

export default function Efficiency() {
  const [params, setParams] = useSearchParams();
  const b = params.get("by");
  const s = params.get("since");
  const by: EfficiencyBy = BY.includes(b as EfficiencyBy) ? (b as EfficiencyBy) : "user";
  const since: Since = SINCE.includes(s as Since) ? (s as Since) : "7d";
  const report = useEfficiency(since, by);
  const set = (next: { by?: EfficiencyBy; since?: Since }) => {
    const v = { by, since, ...next };
    setParams({ ...(v.since !== "7d" && { since: v.since }), ...(v.by !== "user" && { by: v.by }) }, { replace: true });
  };
  const r = report.data;
  const label = by[0].toUpperCase() + by.slice(1);
  return (
    <div>
      <PageHeader
        title="Efficiency"
        sub={
          r
            ? `GPU jobs that ended between ${dateTime(r.since).slice(0, 16)} and ${dateTime(r.until).slice(0, 16)}, ranked by GPU-hours`
            : "GPU use of the jobs that ended, ranked by GPU-hours"
        }
        right={
          <div className="flex flex-wrap items-center gap-2" data-testid="eff-controls">
            <span className="flex items-center gap-1.5 text-xs text-slate-500">
              by <Segmented<EfficiencyBy> label="Group by" value={by} options={BY} onChange={(v) => set({ by: v })} />
            </span>
            <span className="flex items-center gap-1.5 text-xs text-slate-500">
              last <Segmented<Since> label="Since" value={since} options={SINCE} onChange={(v) => set({ since: v })} />
            </span>
            <a
              href={csvHref(since, by)}
              download
              data-testid="eff-csv"
              className="rounded-md border border-slate-300 px-2.5 py-1 text-xs font-medium whitespace-nowrap text-slate-700 hover:bg-slate-100 dark:border-slate-700 dark:text-slate-200 dark:hover:bg-slate-800"
            >
              ↓ CSV
            </a>
          </div>
        }
      />
      {report.isPending ? (
        <Loading what="Loading the efficiency report" />
      ) : report.isError ? (
        <ErrorBox error={report.error} />
      ) : !r || !r.rows.length ? (
        <Empty title={`No GPU job ended in the last ${since}`} testid="eff-empty">
          A job's figures are stored when it ends (its report); they show here from then on.
        </Empty>
      ) : (
        <>
          <Totals r={r} />
          <Card className="overflow-x-auto" data-testid="eff-report" data-by={r.by}>
            <table className="w-full text-sm" data-testid="eff-table">
              <thead className="text-left text-xs text-slate-500">
                <tr>
                  <th className={`${th} text-right`}>#</th>
                  <th className={th}>{label}</th>
                  <th className={`${th} ${wide} text-right`}>Jobs</th>
                  <th className={`${th} text-right`}>GPU-hours</th>
                  <th className={`${th} w-24 sm:w-40`}>Mean utilization</th>
                  <th className={`${th} text-right`}>Spent</th>
                  <th className={`${th} text-right`}>Wasted</th>
                  <th className={`${th} ${wide}`}>Rank</th>
                </tr>
              </thead>
              <tbody>
                {r.rows.map((row) => {
                  const share = wasteShare(row.wasted, row.cost);
                  return (
                    <Fragment key={row.key}>
                      <tr data-testid={`eff-row-${row.key}`} className="border-t border-slate-100 dark:border-slate-800">
                        <td className={`${td} tabular text-right text-slate-500`}>{row.rank}</td>
                        <td className={td}>
                          <span className="font-medium break-all">{row.key || "(none)"}</span>
                          <div className="text-xs text-slate-500 md:hidden">
                            {row.jobs} job{row.jobs === 1 ? "" : "s"}
                          </div>
                        </td>
                        <td className={`${td} ${wide} tabular text-right`}>{int(row.jobs)}</td>
                        <td className={`${td} tabular text-right`} data-testid="eff-gpu-hours" data-value={row.gpu_hours}>
                          {gpuHours(row.gpu_hours)}
                        </td>
                        <td className={td}>
                          <div className="tabular text-xs">{pct(row.mean_utilization)}</div>
                          <Meter className="mt-1" value={row.mean_utilization === null ? null : row.mean_utilization / 100} color="bg-emerald-500" />
                        </td>
                        <td className={`${td} tabular text-right`} data-testid="eff-cost" data-value={row.cost}>
                          {amount(row.cost)}
                        </td>
                        <td className={`${td} tabular text-right`} data-testid="eff-wasted" data-value={row.wasted}>
                          <span className={row.wasted > 0 ? "text-amber-700 dark:text-amber-400" : undefined}>{amount(row.wasted)}</span>
                          {share !== null && <div className="text-xs text-slate-500">{pct(share * 100)}</div>}
                        </td>
                        <td className={`${td} ${wide} text-xs text-slate-600 dark:text-slate-300`} data-testid="eff-rank-text">
                          {row.rank_text}
                        </td>
                      </tr>
                      {/* a phone has no room for the rank column: its text gets a line of its own */}
                      <tr className="md:hidden">
                        <td />
                        <td colSpan={5} className="px-1.5 pb-2 pr-3 text-xs text-slate-600 dark:text-slate-300">
                          {row.rank_text}
                        </td>
                      </tr>
                    </Fragment>
                  );
                })}
              </tbody>
            </table>
          </Card>
        </>
      )}
    </div>
  );
}
