import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { useTheme } from "../lib/theme";

/**
 * A time-series chart (uPlot: canvas, columnar arrays, ~50 KB; draws 10k+ points in a few ms).
 * Drag across it to zoom: `onZoom(start, end)` (unix seconds) — the page puts it in the URL and
 * fetches that window at a finer step. The x axis spans the xs it is given (callers fit them to
 * the data that exists: see fitWindow); the box carries it as data-xmin / data-xmax.
 */
export function TimeChart({
  xs,
  ys,
  label,
  unit,
  color,
  max,
  height = 180,
  syncKey,
  onZoom,
  testid,
}: {
  xs: number[];
  ys: (number | null)[];
  label: string;
  unit: string;
  color: string;
  max?: number;
  height?: number;
  syncKey?: string;
  onZoom?: (start: number, end: number) => void;
  testid?: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const zoomRef = useRef(onZoom);
  zoomRef.current = onZoom;
  const [theme] = useTheme();

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const dark = theme === "dark";
    const axis = {
      stroke: dark ? "#94a3b8" : "#64748b",
      grid: { stroke: dark ? "rgba(148,163,184,0.12)" : "rgba(100,116,139,0.15)", width: 1 },
      ticks: { stroke: dark ? "rgba(148,163,184,0.2)" : "rgba(100,116,139,0.25)", width: 1 },
      font: "11px ui-sans-serif, system-ui, sans-serif",
    };
    const fmt = (v: number | null) => (v === null || v === undefined ? "–" : `${v.toFixed(v >= 100 ? 0 : 1)} ${unit}`);
    const opts: uPlot.Options = {
      width: el.clientWidth || 400,
      height,
      cursor: {
        sync: syncKey ? { key: syncKey } : undefined,
        drag: { x: true, y: false, setScale: false },
      },
      legend: { show: true, live: true },
      scales: { x: { time: true }, y: { range: (_u, lo, hi) => [Math.min(0, lo ?? 0), Math.max(max ?? 0, (hi ?? 1) * 1.05, 1)] } },
      axes: [
        { ...axis },
        { ...axis, size: 56, values: (_u, ticks) => ticks.map((t) => `${t}${unit === "%" ? "%" : ""}`) },
      ],
      series: [
        {},
        {
          label,
          stroke: color,
          width: 1.5,
          fill: color + "22",
          spanGaps: false,
          // uPlot draws the points themselves only while they are few (a fresh chart).
          points: { size: 5 },
          value: (_u, v) => fmt(v),
        },
      ],
      hooks: {
        setScale: [
          (u, key) => {
            if (key !== "x") return;
            el.dataset.xmin = String(u.scales.x.min ?? "");
            el.dataset.xmax = String(u.scales.x.max ?? "");
          },
        ],
        setSelect: [
          (u) => {
            if (u.select.width < 4) return;
            const a = u.posToVal(u.select.left, "x");
            const b = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            zoomRef.current?.(Math.floor(a), Math.ceil(b));
          },
        ],
      },
    };
    const p = new uPlot(opts, [xs, ys] as uPlot.AlignedData, el);
    plot.current = p;
    const ro = new ResizeObserver(() => p.setSize({ width: el.clientWidth, height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      p.destroy();
      plot.current = null;
    };
    // Rebuild only when the look changes; data updates go through setData below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [theme, label, unit, color, height, syncKey, max]);

  useEffect(() => {
    plot.current?.setData([xs, ys] as uPlot.AlignedData);
  }, [xs, ys]);

  return <div ref={box} data-testid={testid} className="w-full" />;
}
