import { memo, useEffect, useRef } from "react";

/**
 * A tiny utilization sparkline (0..100) on a canvas: one draw call, no chart library, so a
 * thousand cards stay cheap.
 */
export const Sparkline = memo(function Sparkline({
  values,
  color,
  width = 120,
  height = 28,
  version,
}: {
  values: readonly number[];
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
    if (values.length < 2) return;
    const step = width / (Math.max(values.length, 30) - 1);
    const x0 = width - (values.length - 1) * step;
    const y = (v: number) => height - 1 - (Math.max(0, Math.min(100, v)) / 100) * (height - 2);
    ctx.beginPath();
    ctx.moveTo(x0, height);
    values.forEach((v, i) => ctx.lineTo(x0 + i * step, y(v)));
    ctx.lineTo(width, height);
    ctx.closePath();
    ctx.globalAlpha = 0.15;
    ctx.fillStyle = color;
    ctx.fill();
    ctx.globalAlpha = 1;
    ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(x0 + i * step, y(v)) : ctx.moveTo(x0, y(v))));
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }, [values, color, width, height, version]);
  return <canvas ref={ref} style={{ width, height }} aria-hidden="true" />;
});
