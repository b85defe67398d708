import { memo, useEffect, useRef } from "react";
import { sparkXs, type SparkSeries } from "../lib/spark";

/**
 * A tiny utilization sparkline (0..100) on a canvas: one draw call, no chart library, so a
 * thousand cards stay cheap. The time axis fits the samples that exist (first to last sample,
 * edge to edge).
 */
export const Sparkline = memo(function Sparkline({
  series,
  color,
  width = 120,
  height = 28,
  version,
}: {
  series: SparkSeries;
  color: string;
  width?: number;
  height?: number;
  version: number;
}) {
  const ref = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    const c = ref.current;
    if (!c) return;
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== width * dpr) {
      c.width = width * dpr;
      c.height = height * dpr;
    }
    const ctx = c.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const values = series.v;
    if (values.length < 2) return;
    const xs = sparkXs(series.t, width);
    const y = (v: number) => height - 1 - (Math.max(0, Math.min(100, v)) / 100) * (height - 2);
    ctx.beginPath();
    ctx.moveTo(xs[0], height);
    values.forEach((v, i) => ctx.lineTo(xs[i], y(v)));
    ctx.lineTo(xs[xs.length - 1], height);
    ctx.closePath();
    ctx.globalAlpha = 0.15;
    ctx.fillStyle = color;
    ctx.fill();
    ctx.globalAlpha = 1;
    ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(xs[i], y(v)) : ctx.moveTo(xs[0], y(v))));
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }, [series, color, width, height, version]);
  return <canvas ref={ref} style={{ width, height }} aria-hidden="true" />;
});
