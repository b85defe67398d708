import { memo, useEffect, useMemo, useRef, useState } from "react";
import { useNavigate } from "react-router-dom";
import type { GpuView } from "../api/types";
import { pct } from "../lib/format";
import { groupByNode, gpuKey, STATE_LABEL, STATE_STYLE, type NodeGroup } from "../lib/gpu";
import { useTheme } from "../lib/theme";

interface Cell {
  x: number;
  y: number;
  g: GpuView;
}
interface Layout {
  height: number;
  size: number;
  cells: Cell[];
  labels: { x: number; y: number; text: string }[];
}

const LABEL = 16;
const GAP = 3;

/** Node blocks flowing left to right, each a grid of squares (at most 8 per row). */
export function layoutFleet(groups: NodeGroup[], width: number, total: number): Layout {
  const size = total > 256 ? 12 : 20;
  const cells: Cell[] = [];
  const labels: Layout["labels"] = [];
  let x = 0;
  let y = 0;
  let lineHeight = 0;
  for (const grp of groups) {
    const cols = Math.min(8, Math.max(1, grp.gpus.length));
    const rows = Math.ceil(grp.gpus.length / cols);
    const w = Math.max(cols * (size + GAP) - GAP, 40);
    const h = LABEL + rows * (size + GAP) - GAP;
    if (x > 0 && x + w > width) {
      x = 0;
      y += lineHeight + 12;
      lineHeight = 0;
    }
    labels.push({ x, y: y + 11, text: grp.node });
    grp.gpus.forEach((g, i) =>
      cells.push({ x: x + (i % cols) * (size + GAP), y: y + LABEL + Math.floor(i / cols) * (size + GAP), g }),
    );
    x += w + 18;
    lineHeight = Math.max(lineHeight, h);
  }
  return { height: y + lineHeight, size, cells, labels };
}

/**
 * Every GPU as a square coloured by state, grouped by node — drawn on one canvas so a
 * 1,000-GPU fleet costs one draw, not 1,000 DOM nodes. Hover names a GPU; click opens it.
 */
export const FleetMap = memo(function FleetMap({ gpus }: { gpus: GpuView[] }) {
  const box = useRef<HTMLDivElement>(null);
  const canvas = useRef<HTMLCanvasElement>(null);
  const [width, setWidth] = useState(0);
  const [hover, setHover] = useState<Cell | null>(null);
  const navigate = useNavigate();
  const [theme] = useTheme();
  const layout = useMemo(() => layoutFleet(groupByNode(gpus), width, gpus.length), [gpus, width]);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    setWidth(el.clientWidth);
    const ro = new ResizeObserver(() => setWidth(el.clientWidth));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  useEffect(() => {
    const c = canvas.current;
    if (!c || !width) return;
    const dpr = window.devicePixelRatio || 1;
    c.width = width * dpr;
    c.height = Math.max(1, layout.height) * dpr;
    const ctx = c.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, layout.height);
    ctx.font = "11px ui-sans-serif, system-ui, sans-serif";
    ctx.fillStyle = theme === "dark" ? "#94a3b8" : "#64748b";
    for (const l of layout.labels) ctx.fillText(l.text, l.x, l.y);
    const s = layout.size;
    for (const { x, y, g } of layout.cells) {
      ctx.globalAlpha = g.state === "busy" ? 0.45 + 0.55 * Math.min(1, (g.utilization ?? 0) / 100) : 1;
      ctx.fillStyle = STATE_STYLE[g.state].hex;
      ctx.beginPath();
      ctx.roundRect(x, y, s, s, 2);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
  }, [layout, width, theme]);

  const at = (e: React.MouseEvent) => {
    const r = (e.target as HTMLCanvasElement).getBoundingClientRect();
    const px = e.clientX - r.left;
    const py = e.clientY - r.top;
    const s = layout.size;
    return layout.cells.find((c) => px >= c.x && px < c.x + s && py >= c.y && py < c.y + s) ?? null;
  };

  return (
    <div ref={box} className="relative" data-testid="fleet-map">
      <canvas
        ref={canvas}
        role="img"
        aria-label={`${gpus.length} GPUs by node, coloured by state`}
        style={{ width: "100%", height: layout.height, cursor: hover ? "pointer" : "default" }}
        onMouseMove={(e) => setHover(at(e))}
        onMouseLeave={() => setHover(null)}
        onClick={(e) => {
          const c = at(e);
          if (c) navigate(`/gpus/${encodeURIComponent(c.g.node)}/${c.g.index}`);
        }}
      />
      {hover && (
        <div
          className="pointer-events-none absolute z-10 rounded-md bg-slate-900 px-2 py-1 text-xs whitespace-nowrap text-white shadow dark:bg-slate-100 dark:text-slate-900"
          style={{ left: hover.x, top: hover.y + layout.size + 4 }}
        >
          {gpuKey(hover.g)} · {STATE_LABEL[hover.g.state]} · {pct(hover.g.utilization)}
          {hover.g.jobs[0] ? ` · job ${hover.g.jobs[0].job_id} (${hover.g.jobs[0].user || "?"})` : ""}
        </div>
      )}
    </div>
  );
});
