import clsx from "clsx";
import { memo } from "react";
import { Link } from "react-router-dom";
import type { GpuView } from "../api/types";
import { celsius, memFraction, memPair, mhz, pct, watts } from "../lib/format";
import { gpuKey, harmfulThrottles, STATE_STYLE, throttleWords } from "../lib/gpu";
import { perHour } from "../lib/money";
import { sparks } from "../lib/spark";
import { Sparkline } from "./Sparkline";
import { Meter, StateBadge } from "./ui";

export const CARD_HEIGHT = 192;

export const GpuCard = memo(function GpuCard({
  gpu: g,
  flatIndex,
  sparkVersion,
}: {
  gpu: GpuView;
  flatIndex: number;
  sparkVersion: number;
}) {
  const key = gpuKey(g);
  const throttles = harmfulThrottles(g.throttle_reasons);
  const hot = (g.temperature_c ?? 0) >= 85;
  const style = STATE_STYLE[g.state];
  return (
    <Link
      to={`/gpus/${encodeURIComponent(g.node)}/${g.index}`}
      data-card={flatIndex}
      data-testid={`gpu-card-${key}`}
      data-state={g.state}
      data-util={g.utilization ?? ""}
      aria-label={`GPU ${key}, ${g.state.replace("_", " ")}, utilization ${pct(g.utilization)}`}
      className={clsx(
        "group flex flex-col rounded-lg border border-l-4 border-slate-200 bg-white p-3 hover:border-slate-400 focus-visible:ring-2 focus-visible:ring-sky-500 dark:border-slate-800 dark:bg-slate-900 dark:hover:border-slate-700",
        style.ring,
        g.state === "down" && "bg-rose-50/50 dark:bg-rose-950/20",
      )}
      style={{ height: CARD_HEIGHT - 12 }}
    >
      <div className="flex items-start justify-between gap-2">
        <div className="min-w-0">
          <div className="truncate text-sm font-semibold">
            {g.node} <span className="text-slate-400">/</span> GPU {g.index}
          </div>
          <div className="truncate text-xs text-slate-500" title={g.name}>
            {g.name}
          </div>
        </div>
        <StateBadge state={g.state} />
      </div>
      {g.state === "down" ? (
        <div className="mt-3 flex-1 text-xs text-rose-700 dark:text-rose-300">{g.error ?? "not answering"}</div>
      ) : (
        <div className="mt-2 grid grid-cols-2 gap-x-3 gap-y-1 text-xs">
          <div>
            <div className="flex justify-between">
              <span className="text-slate-500">Util</span>
              <span className="tabular font-semibold" data-testid="card-util">
                {pct(g.utilization)}
              </span>
            </div>
            <Meter value={g.utilization === null || g.utilization === undefined ? null : g.utilization / 100} color={style.dot} />
          </div>
          <div>
            <div className="flex justify-between">
              <span className="text-slate-500">Mem</span>
              <span className="tabular" data-testid="card-mem">{memPair(g.memory_used_mib, g.memory_total_mib)}</span>
            </div>
            <Meter value={memFraction(g.memory_used_mib, g.memory_total_mib)} color="bg-violet-500" />
          </div>
          <div className="flex justify-between">
            <span className="text-slate-500">Temp</span>
            <span className={clsx("tabular", hot && "font-semibold text-rose-600 dark:text-rose-400")} data-testid="card-temp">
              {celsius(g.temperature_c)}
            </span>
          </div>
          <div className="flex justify-between">
            <span className="text-slate-500">Power</span>
            <span className="tabular" data-testid="card-power" title={g.power_limit_w ? `limit ${watts(g.power_limit_w)}` : undefined}>
              {watts(g.power_w)}
            </span>
          </div>
          <div className="flex justify-between">
            <span className="text-slate-500">SM clock</span>
            <span className="tabular">{mhz(g.sm_clock_mhz)}</span>
          </div>
          <div className="flex justify-between">
            <span className="text-slate-500">Cost</span>
            <span className="tabular">{perHour(g.cost_per_hour)}</span>
          </div>
        </div>
      )}
      <div className="mt-1.5 flex min-h-5 flex-wrap gap-1 overflow-hidden text-[11px]" data-testid="card-flags">
        {throttles.slice(0, 2).map((r) => (
          <span key={r} className="rounded bg-amber-100 px-1.5 py-0.5 text-amber-900 dark:bg-amber-500/15 dark:text-amber-300" title={`throttled: ${r}`}>
            ⚠ {throttleWords(r)}
          </span>
        ))}
        {throttles.length > 2 && <span className="text-amber-700">+{throttles.length - 2}</span>}
        {g.xid_errors > 0 && (
          <span className="rounded bg-rose-100 px-1.5 py-0.5 text-rose-800 dark:bg-rose-500/15 dark:text-rose-300">
            XID ×{g.xid_errors}
            {g.last_xid ? ` (last ${g.last_xid})` : ""}
          </span>
        )}
      </div>
      <div className="mt-auto flex items-end justify-between gap-2">
        <div className="min-w-0 truncate text-xs" data-testid="card-job">
          {g.jobs.length ? (
            <>
              <span className="font-medium">job {g.jobs[0].job_id}</span>
              <span className="text-slate-500"> · {g.jobs[0].user || "?"}</span>
              {g.jobs.length > 1 && <span className="text-slate-500"> +{g.jobs.length - 1}</span>}
            </>
          ) : (
            <span className="text-slate-400">no job</span>
          )}
        </div>
        <Sparkline series={sparks.series(key)} color={style.hex} version={sparkVersion} width={96} height={26} />
      </div>
    </Link>
  );
});
