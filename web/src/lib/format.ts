// Units and number formatting. Every value the API gives may be null (a field the GPU does not
// support is absent, never a sentinel): null shows as an en dash.

export const DASH = "–";

const isNum = (v: number | null | undefined): v is number =>
  typeof v === "number" && Number.isFinite(v);

export function pct(v: number | null | undefined, digits = 0): string {
  return isNum(v) ? `${v.toFixed(digits)}%` : DASH;
}

/** MiB (DCGM's FB_USED unit) in the largest unit that keeps the number readable. */
export function mib(v: number | null | undefined): string {
  if (!isNum(v)) return DASH;
  if (Math.abs(v) >= 1024 * 1024) return `${(v / 1024 / 1024).toFixed(2)} TiB`;
  if (Math.abs(v) >= 1024) return `${(v / 1024).toFixed(1)} GiB`;
  return `${Math.round(v)} MiB`;
}

/** used / total memory, e.g. "37.5 / 80.0 GiB". */
export function memPair(used: number | null | undefined, total: number | null | undefined): string {
  if (!isNum(total)) return mib(used);
  if (!isNum(used)) return `${DASH} / ${mib(total)}`;
  const unit = total >= 1024 ? "GiB" : "MiB";
  const f = (x: number) => (unit === "GiB" ? (x / 1024).toFixed(1) : String(Math.round(x)));
  return `${f(used)} / ${f(total)} ${unit}`;
}

export function memFraction(used: number | null | undefined, total: number | null | undefined) {
  return isNum(used) && isNum(total) && total > 0 ? Math.min(1, Math.max(0, used / total)) : null;
}

export function watts(v: number | null | undefined): string {
  if (!isNum(v)) return DASH;
  if (Math.abs(v) >= 10_000) return `${(v / 1000).toFixed(1)} kW`;
  return `${Math.round(v)} W`;
}

export function celsius(v: number | null | undefined): string {
  return isNum(v) ? `${Math.round(v)} °C` : DASH;
}

export function mhz(v: number | null | undefined): string {
  if (!isNum(v)) return DASH;
  return v >= 10_000 ? `${(v / 1000).toFixed(2)} GHz` : `${Math.round(v)} MHz`;
}

export function int(v: number | null | undefined): string {
  return isNum(v) ? Math.round(v).toLocaleString("en-US") : DASH;
}

/** Seconds → "3s", "4m", "2h 5m", "3d 4h". */
export function duration(seconds: number | null | undefined): string {
  if (!isNum(seconds)) return DASH;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d}d ${h % 24}h` : `${d}d`;
}

/** A unix time as "12s ago" relative to `now` (both seconds). */
export function ago(t: number | null | undefined, now: number = Date.now() / 1000): string {
  if (!isNum(t)) return "never";
  const d = now - t;
  if (d < 1.5) return "just now";
  return `${duration(d)} ago`;
}

export function clockTime(t: number): string {
  return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** GPU-hours with the precision their size deserves: "0.0042", "0.42", "12.5", "1,234". */
export function gpuHours(v: number | null | undefined): string {
  if (!isNum(v)) return DASH;
  const a = Math.abs(v);
  if (a > 0 && a < 0.1) return v.toPrecision(2); // a short job is not "0.00"
  if (a < 10) return v.toFixed(2);
  if (a < 100) return v.toFixed(1);
  return Math.round(v).toLocaleString("en-US");
}

/** A unix time as the local date and time, "2025-01-15 20:31:05" (sorts and reads alike). */
export function dateTime(t: number | null | undefined): string {
  if (!isNum(t)) return DASH;
  const d = new Date(t * 1000);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
