// Money: the API prices GPUs per hour (a GPU's share of its node's $/hr).

const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const usdRound = new Intl.NumberFormat("en-US", {
  style: "currency",
  currency: "USD",
  maximumFractionDigits: 0,
});

export function dollars(v: number | null | undefined): string {
  if (typeof v !== "number" || !Number.isFinite(v)) return "–";
  return Math.abs(v) >= 10_000 ? usdRound.format(v) : usd.format(v);
}

export function perHour(v: number | null | undefined): string {
  return `${dollars(v)}/hr`;
}

/** Share of spend that is wasted, 0..1, or null when nothing is spent. */
export function wasteShare(waste: number, cost: number): number | null {
  return cost > 0 ? Math.min(1, Math.max(0, waste / cost)) : null;
}

/** What a steady hourly rate comes to over a day — a projection, labelled as such in the UI. */
export function perDayAtRate(hourly: number): number {
  return hourly * 24;
}

/** Dollars that never show a real, tiny amount as "$0.00" (a short job, a few seconds saved). */
export function amount(v: number | null | undefined): string {
  return typeof v === "number" && v > 0 && v < 0.005 ? "<$0.01" : dollars(v);
}
