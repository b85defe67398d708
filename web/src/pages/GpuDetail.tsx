import { useMemo } from "react";
import { Link, useParams, useSearchParams } from "react-router-dom";
import { useGpu, useGpuHistory, type HistoryWindow } from "../api/queries";
import type { GpuHistory } from "../api/types";
import { TimeChart } from "../components/TimeChart";
import { Card, ErrorBox, Loading, Meter, PageHeader, Segmented, StateBadge, Tone } from "../components/ui";
import { celsius, clockTime, duration, memFraction, memPair, mhz, mib, pct, watts } from "../lib/format";
import { STATE_STYLE, throttleWords } from "../lib/gpu";
import { perHour } from "../lib/money";
import { CHARTS, fitWindow, isRange, RANGES, seriesOf, stats, toColumns, type Range } from "../lib/series";

const COLORS = ["#10b981", "#8b5cf6", "#f97316", "#0ea5e9", "#eab308", "#ec4899"];

function useWindow(): [HistoryWindow, (w: HistoryWindow) => void] {
  const [params, setParams] = useSearchParams();
  const start = Number(params.get("start"));
  const end = Number(params.get("end"));
  const range = params.get("range");
  const w: HistoryWindow =
    start > 0 && end > start ? { start, end } : { range: isRange(range) ? range : "1h" };
  const set = (next: HistoryWindow) =>
    setParams(
      (prev) => {
        const p = new URLSearchParams(prev);
        p.delete("start");
        p.delete("end");
        p.delete("range");
        if ("range" in next) {
          if (next.range !== "1h") p.set("range", next.range);
        } else {
          p.set("start", String(Math.floor(next.start)));
          p.set("end", String(Math.ceil(next.end)));
        }
        return p;
      },
      { replace: false },
    );
  return [w, set];
}

type Fit = ReturnType<typeof fitWindow>;
const fitOf = (h: GpuHistory): Fit => fitWindow(h as Parameters<typeof fitWindow>[0]);

/**
 * The window's history, fitted to the data that exists: when the samples begin late in the
 * window (a fresh cluster, a long range), the part that has data is fetched again at a step
 * that suits its length, so two minutes of data in a 24 h range are 2 minutes of detail.
 */
function useFittedHistory(node: string, index: number, w: HistoryWindow) {
  const base = useGpuHistory(node, index, w);
  const fit = base.data ? fitOf(base.data) : null;
  const fine =
    base.data && fit?.fitted && fit.first !== null && (fit.end - fit.start) / base.data.step < 120
      ? { start: Math.floor(Math.min(fit.first, fit.end - 60)), end: Math.ceil(fit.end) }
      : null;
  const refined = useGpuHistory(node, index, fine ?? { start: 0, end: 1 }, !!fine);
  const h = fine && refined.data ? refined.data : base.data;
  return { ...base, data: h, fit };
}

function Charts({ h, fitted, onZoom }: { h: GpuHistory; fitted: Fit | null; onZoom: (s: number, e: number) => void }) {
  // Every chart shares one window (their cursors are synced): from the first sample there is.
  const fit = useMemo(() => {
    const f = fitOf(h);
    // The refined fetch knows the first sample better than the coarse one that asked for it.
    return { ...f, fitted: f.fitted || !!fitted?.fitted };
  }, [h, fitted?.fitted]);
  const cols = useMemo(
    () => CHARTS.map((c) => ({ c, data: toColumns(seriesOf(h, c.metric), fit.start, fit.end, h.step, c.scale) })),
    [h, fit],
  );
  return (
    <>
    {fit.fitted && fit.first !== null && (
      <p className="-mt-1 mb-2 text-xs text-slate-500" data-testid="history-fit" data-first={fit.first}>
        Data since {clockTime(fit.first)} ({duration(fit.end - fit.first)} ago): the charts start at the first sample.
      </p>
    )}
    <div className="grid grid-cols-1 gap-4 lg:grid-cols-2">
      {cols.map(({ c, data }, i) => {
        const st = stats(data[1]);
        return (
          <Card key={c.metric} className="p-3" data-testid={`chart-${c.metric}`}>
            <div className="mb-1 flex items-baseline justify-between">
              <h3 className="text-sm font-semibold">{c.title}</h3>
              <span className="tabular text-xs text-slate-500">
                {st
                  ? `min ${st.min.toFixed(1)} · mean ${st.mean.toFixed(1)} · max ${st.max.toFixed(1)} ${c.unit}`
                  : "no samples in this window"}
              </span>
            </div>
            <TimeChart xs={data[0]} ys={data[1]} label={c.title} unit={c.unit} color={COLORS[i]} max={c.max} syncKey="gpu" onZoom={onZoom} />
          </Card>
        );
      })}
    </div>
    </>
  );
}

export default function GpuDetail() {
  const { node = "", index: idx = "0" } = useParams();
  const index = Number(idx);
  const gpu = useGpu(node, index);
  const [w, setW] = useWindow();
  const history = useFittedHistory(node, index, w);

  if (gpu.isPending) return <Loading what={`Loading ${node}/GPU ${index}`} />;
  if (gpu.isError) return <ErrorBox error={gpu.error} />;
  const g = gpu.data;
  const active = Object.entries(g.clock_events).filter(([r, on]) => on && r !== "gpu_idle");
  const zoomed = !("range" in w);

  return (
    <div>
      <div className="mb-2 text-sm">
        <Link to="/gpus" className="text-sky-700 hover:underline dark:text-sky-400">
          GPUs
        </Link>
        <span className="text-slate-400"> / </span>
        <Link to={`/gpus?node=${encodeURIComponent(node)}`} className="text-sky-700 hover:underline dark:text-sky-400">
          {node}
        </Link>
      </div>
      <PageHeader
        title={
          <span className="flex items-center gap-3">
            <span data-testid="gpu-title">
              {node} / GPU {index}
            </span>
            <StateBadge state={g.state} />
          </span>
        }
        sub={
          <>
            {g.name} · <span className="font-mono text-xs">{g.uuid}</span>
            {g.simulated && " · simulated"}
          </>
        }
      />
      {g.error && (
        <div className="mb-4">
          <ErrorBox error={g.error} />
        </div>
      )}
      <div className="grid grid-cols-2 gap-3 md:grid-cols-4 xl:grid-cols-7">
        {[
          ["Utilization", pct(g.utilization), g.utilization === null || g.utilization === undefined ? null : g.utilization / 100, "detail-util"],
          ["Memory", memPair(g.memory_used_mib, g.memory_total_mib), memFraction(g.memory_used_mib, g.memory_total_mib), "detail-mem"],
          ["Temperature", celsius(g.temperature_c), null, "detail-temp"],
          [g.power_limit_w ? `Power (limit ${watts(g.power_limit_w)})` : "Power", watts(g.power_w), g.power_w && g.power_limit_w ? g.power_w / g.power_limit_w : null, "detail-power"],
          ["SM clock", mhz(g.sm_clock_mhz), null, "detail-clock"],
          ["Cost", perHour(g.cost_per_hour), null, "detail-cost"],
          ["XID errors", String(g.xid_errors) + (g.last_xid ? ` (last ${g.last_xid})` : ""), null, "detail-xid"],
        ].map(([label, value, frac, id]) => (
          <Card key={label as string} className="p-3">
            <div className="text-xs text-slate-500">{label as string}</div>
            <div className="tabular mt-0.5 truncate text-base font-semibold whitespace-nowrap" data-testid={id as string} title={value as string}>
              {value as string}
            </div>
            {frac !== null && <Meter className="mt-1.5" value={frac as number} color={STATE_STYLE[g.state].dot} />}
          </Card>
        ))}
      </div>

      <div className="mt-4 grid grid-cols-1 gap-4 lg:grid-cols-3">
        <Card className="p-4" data-testid="gpu-job">
          <h2 className="mb-2 text-sm font-semibold">Job</h2>
          {g.jobs.length ? (
            <ul className="space-y-2 text-sm">
              {g.jobs.map((j) => (
                <li key={j.job_id} className="flex flex-wrap items-center gap-x-2">
                  <Link to={`/slurm/jobs/${encodeURIComponent(j.job_id)}`} className="font-medium text-sky-700 hover:underline dark:text-sky-400">
                    job {j.job_id}
                  </Link>
                  <span className="text-slate-500">
                    {j.user || "unknown user"}
                    {j.partition && ` · ${j.partition}`}
                  </span>
                  {!j.has_process && <Tone tone="warn">no process on this GPU</Tone>}
                  <Link to={`/gpus?job=${encodeURIComponent(j.job_id)}`} className="ml-auto text-xs text-sky-700 hover:underline dark:text-sky-400">
                    all its GPUs →
                  </Link>
                </li>
              ))}
            </ul>
          ) : (
            <p className="text-sm text-slate-500">No job holds this GPU.</p>
          )}
        </Card>
        <Card className="p-4" data-testid="gpu-throttle">
          <h2 className="mb-2 text-sm font-semibold">Clock events (throttling)</h2>
          {active.length ? (
            <ul className="flex flex-wrap gap-1.5">
              {active.map(([r]) => (
                <li key={r}>
                  <Tone tone={r.includes("thermal") || r.includes("hw_") ? "bad" : "warn"}>{throttleWords(r)}</Tone>
                </li>
              ))}
            </ul>
          ) : (
            <p className="text-sm text-slate-500">
              {Object.keys(g.clock_events).length ? "Not throttled." : "This GPU does not report clock events."}
            </p>
          )}
        </Card>
        <Card className="p-4" data-testid="gpu-processes">
          <h2 className="mb-2 text-sm font-semibold">Processes ({g.process_list.length})</h2>
          {g.process_list.length ? (
            <table className="w-full text-sm">
              <thead className="text-left text-xs text-slate-500">
                <tr>
                  <th className="py-1 font-medium">PID</th>
                  <th className="py-1 font-medium">Kind</th>
                  <th className="py-1 text-right font-medium">GPU memory</th>
                </tr>
              </thead>
              <tbody>
                {g.process_list.map((p) => (
                  <tr key={p.pid} className="border-t border-slate-100 dark:border-slate-800">
                    <td className="tabular py-1 font-mono">{p.pid}</td>
                    <td className="py-1">{p.kind}</td>
                    <td className="tabular py-1 text-right">{mib(p.used_memory_mib)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : (
            <p className="text-sm text-slate-500">No processes on this GPU.</p>
          )}
        </Card>
      </div>

      <div className="mt-6 mb-3 flex flex-wrap items-center justify-between gap-3">
        <h2 className="text-base font-semibold">History</h2>
        <div className="flex items-center gap-3">
          {zoomed ? (
            <span className="text-xs text-slate-500" data-testid="zoom-window">
              {clockTime(w.start)} – {clockTime(w.end)} ({duration(w.end - w.start)})
              <button type="button" onClick={() => setW({ range: "1h" })} className="ml-2 text-sky-700 hover:underline dark:text-sky-400">
                Reset zoom
              </button>
            </span>
          ) : (
            <span className="text-xs text-slate-500">drag across a chart to zoom</span>
          )}
          <Segmented<Range> label="Time range" value={zoomed ? null : w.range} options={RANGES} onChange={(r) => setW({ range: r })} />
        </div>
      </div>
      {history.isError ? (
        <ErrorBox error={history.error} />
      ) : history.data ? (
        <Charts h={history.data} fitted={history.fit} onZoom={(s, e) => setW({ start: s, end: e })} />
      ) : (
        <Loading what="Loading history" />
      )}
      {Object.keys(g.fields).length > 0 && (
        <details className="mt-6">
          <summary className="cursor-pointer text-sm font-medium text-slate-600 dark:text-slate-300">All fields ({Object.keys(g.fields).length})</summary>
          <table className="mt-2 text-xs">
            <tbody>
              {Object.entries(g.fields)
                .sort()
                .map(([k, v]) => (
                  <tr key={k}>
                    <td className="py-0.5 pr-6 font-mono text-slate-500">{k}</td>
                    <td className="tabular py-0.5">{v}</td>
                  </tr>
                ))}
            </tbody>
          </table>
        </details>
      )}
    </div>
  );
}
