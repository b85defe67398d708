import * as Tip from "@radix-ui/react-tooltip";
import clsx from "clsx";
import { useState, type ReactNode } from "react";
import type { GpuState } from "../api/types";
import { STATE_HELP, STATE_LABEL, STATE_STYLE } from "../lib/gpu";

export function Card({ className, children, ...rest }: React.HTMLAttributes<HTMLDivElement>) {
  return (
    <div
      className={clsx(
        "rounded-lg border border-slate-200 bg-white shadow-sm dark:border-slate-800 dark:bg-slate-900",
        className,
      )}
      {...rest}
    >
      {children}
    </div>
  );
}

export function PageHeader({ title, sub, right }: { title: ReactNode; sub?: ReactNode; right?: ReactNode }) {
  return (
    <div className="mb-5 flex flex-wrap items-end justify-between gap-3">
      <div>
        <h1 className="text-xl font-semibold tracking-tight">{title}</h1>
        {sub && <p className="mt-0.5 text-sm text-slate-500 dark:text-slate-400">{sub}</p>}
      </div>
      {right}
    </div>
  );
}

export function Stat({
  label,
  value,
  sub,
  tone,
  testid,
  children,
}: {
  label: string;
  value: ReactNode;
  sub?: ReactNode;
  tone?: "good" | "warn" | "bad" | "muted";
  testid?: string;
  children?: ReactNode;
}) {
  return (
    <Card className="p-4" data-testid={testid}>
      <div className="text-xs font-medium uppercase tracking-wide text-slate-500 dark:text-slate-400">{label}</div>
      <div
        className={clsx(
          "tabular mt-1 text-2xl font-semibold",
          tone === "good" && "text-emerald-600 dark:text-emerald-400",
          tone === "warn" && "text-amber-600 dark:text-amber-400",
          tone === "bad" && "text-rose-600 dark:text-rose-400",
          tone === "muted" && "text-slate-400",
        )}
        data-testid={testid ? `${testid}-value` : undefined}
      >
        {value}
      </div>
      {sub && <div className="tabular mt-1 text-xs text-slate-500 dark:text-slate-400">{sub}</div>}
      {children}
    </Card>
  );
}

export function StateBadge({ state, className }: { state: GpuState; className?: string }) {
  return (
    <span
      title={STATE_HELP[state]}
      className={clsx(
        "inline-flex items-center gap-1.5 rounded-full px-2 py-0.5 text-xs font-medium whitespace-nowrap",
        STATE_STYLE[state].badge,
        className,
      )}
      data-state={state}
    >
      <span className={clsx("h-1.5 w-1.5 rounded-full", STATE_STYLE[state].dot)} />
      {STATE_LABEL[state]}
    </span>
  );
}

export function Tone({ tone, children }: { tone: "ok" | "warn" | "bad" | "busy" | "muted"; children: ReactNode }) {
  return (
    <span
      className={clsx(
        "inline-flex items-center gap-1.5 rounded-full px-2 py-0.5 text-xs font-medium whitespace-nowrap",
        tone === "ok" && "bg-emerald-100 text-emerald-800 dark:bg-emerald-500/15 dark:text-emerald-300",
        tone === "busy" && "bg-sky-100 text-sky-800 dark:bg-sky-500/15 dark:text-sky-300",
        tone === "warn" && "bg-amber-100 text-amber-900 dark:bg-amber-500/15 dark:text-amber-300",
        tone === "bad" && "bg-rose-100 text-rose-800 dark:bg-rose-500/15 dark:text-rose-300",
        tone === "muted" && "bg-slate-100 text-slate-600 dark:bg-slate-800 dark:text-slate-400",
      )}
    >
      {children}
    </span>
  );
}

/** A thin horizontal meter, 0..1. */
export function Meter({ value, className, color }: { value: number | null; className?: string; color?: string }) {
  const v = value === null ? 0 : Math.max(0, Math.min(1, value));
  return (
    <div className={clsx("h-1.5 w-full overflow-hidden rounded-full bg-slate-200 dark:bg-slate-800", className)}>
      <div
        className={clsx("h-full rounded-full", color ?? "bg-sky-500")}
        style={{ width: `${(v * 100).toFixed(1)}%` }}
      />
    </div>
  );
}

export function Empty({ title, children, testid }: { title: string; children?: ReactNode; testid?: string }) {
  return (
    <Card className="p-8 text-center" data-testid={testid}>
      <div className="text-base font-medium">{title}</div>
      {children && <div className="mx-auto mt-2 max-w-xl text-sm text-slate-500 dark:text-slate-400">{children}</div>}
    </Card>
  );
}

export function ErrorBox({ error }: { error: unknown }) {
  const msg = error instanceof Error ? error.message : String(error);
  return (
    <div
      role="alert"
      className="rounded-lg border border-rose-200 bg-rose-50 p-4 text-sm text-rose-800 dark:border-rose-900 dark:bg-rose-950/50 dark:text-rose-200"
    >
      {msg}
    </div>
  );
}

export function Loading({ what = "Loading" }: { what?: string }) {
  return (
    <div className="flex items-center gap-2 p-6 text-sm text-slate-500" role="status">
      <span className="h-3 w-3 animate-spin rounded-full border-2 border-slate-300 border-t-sky-500" />
      {what}…
    </div>
  );
}

export function Kbd({ children }: { children: ReactNode }) {
  return (
    <kbd className="rounded border border-slate-300 bg-slate-100 px-1.5 py-0.5 font-mono text-[11px] text-slate-700 dark:border-slate-700 dark:bg-slate-800 dark:text-slate-300">
      {children}
    </kbd>
  );
}

export function Segmented<T extends string>({
  value,
  options,
  onChange,
  label,
}: {
  value: T | null;
  options: readonly T[];
  onChange: (v: T) => void;
  label: string;
}) {
  return (
    <div role="group" aria-label={label} className="inline-flex rounded-md border border-slate-300 bg-white p-0.5 dark:border-slate-700 dark:bg-slate-900">
      {options.map((o) => (
        <button
          key={o}
          type="button"
          aria-pressed={o === value}
          onClick={() => onChange(o)}
          className={clsx(
            "rounded px-2.5 py-1 text-xs font-medium",
            o === value
              ? "bg-slate-900 text-white dark:bg-slate-100 dark:text-slate-900"
              : "text-slate-600 hover:bg-slate-100 dark:text-slate-300 dark:hover:bg-slate-800",
          )}
        >
          {o}
        </button>
      ))}
    </div>
  );
}

/**
 * A small "i" that shows `text` on hover, focus or tap (phones have no hover); the text is
 * also its accessible name.
 */
export function Hint({ text, testid, className }: { text: string; testid?: string; className?: string }) {
  const [open, setOpen] = useState(false);
  return (
    <Tip.Provider delayDuration={150}>
      <Tip.Root open={open} onOpenChange={setOpen}>
        <Tip.Trigger asChild>
          <button
            type="button"
            aria-label={text}
            data-testid={testid}
            onClick={() => setOpen((o) => !o)}
            className={clsx(
              "inline-grid h-4 w-4 shrink-0 place-items-center rounded-full border border-slate-300 align-middle text-[10px] leading-none font-semibold text-slate-500 hover:bg-slate-100 dark:border-slate-600 dark:text-slate-400 dark:hover:bg-slate-800",
              className,
            )}
          >
            i
          </button>
        </Tip.Trigger>
        <Tip.Portal>
          <Tip.Content
            side="top"
            sideOffset={4}
            collisionPadding={8}
            data-testid={testid ? `${testid}-text` : undefined}
            className="z-50 max-w-xs rounded-md bg-slate-900 px-2.5 py-1.5 text-xs leading-snug font-normal normal-case tracking-normal text-white shadow-lg dark:bg-slate-700"
          >
            {text}
            <Tip.Arrow className="fill-slate-900 dark:fill-slate-700" />
          </Tip.Content>
        </Tip.Portal>
      </Tip.Root>
    </Tip.Provider>
  );
}
