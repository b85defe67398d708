import clsx from "clsx";
import { useEffect, useRef, useState, type ReactNode } from "react";
import { NavLink, useLocation, useNavigate } from "react-router-dom";
import { api } from "../api/client";
import { useMe, useOverview, useStatus } from "../api/queries";
import type { StreamStatus } from "../api/stream";
import { ago } from "../lib/format";
import { useNow } from "../lib/hooks";
import { useTheme } from "../lib/theme";
import { DialogHost } from "./Actions";
import { Kbd } from "./ui";

const NAV = [
  { to: "/", label: "Overview", key: "o", icon: "◧" },
  { to: "/gpus", label: "GPUs", key: "g", icon: "▦" },
  { to: "/nodes", label: "Nodes", key: "n", icon: "▤" },
  { to: "/slurm", label: "Slurm", key: "s", icon: "≣" },
  { to: "/efficiency", label: "Efficiency", key: "e", icon: "$" },
  { to: "/alerts", label: "Alerts", key: "a", icon: "△" },
  { to: "/agent", label: "Ask", key: "k", icon: "◇" },
];

export function StreamBanner({ status }: { status: StreamStatus }) {
  const now = useNow(1000);
  if (status.state === "down")
    return (
      <div
        role="alert"
        data-testid="stream-banner"
        data-stream="down"
        className="flex items-center gap-2 border-b border-rose-300 bg-rose-100 px-4 py-2 text-sm text-rose-900 dark:border-rose-900 dark:bg-rose-950 dark:text-rose-200"
      >
        <span className="h-2 w-2 animate-pulse rounded-full bg-rose-500" />
        Live updates lost {Math.round((now - status.since) / 1000)}s ago — reconnecting. Figures below may be stale
        {status.lastEvent ? ` (last update ${ago(status.lastEvent / 1000, now / 1000)})` : ""}.
      </div>
    );
  if (status.state === "recovered")
    return (
      <div
        role="status"
        data-testid="stream-banner"
        data-stream="recovered"
        className="flex items-center gap-2 border-b border-emerald-300 bg-emerald-50 px-4 py-2 text-sm text-emerald-900 dark:border-emerald-900 dark:bg-emerald-950 dark:text-emerald-200"
      >
        <span className="h-2 w-2 rounded-full bg-emerald-500" />
        Live updates restored.
      </div>
    );
  return null;
}

/** The store cannot write (a full disk, say): what is shown stops moving, so say so and why. */
export function StoreBanner() {
  const status = useStatus();
  const ingest = status.data?.ingest;
  if (!ingest?.write_error) return null;
  return (
    <div
      role="alert"
      data-testid="store-banner"
      className="flex items-center gap-2 border-b border-amber-300 bg-amber-50 px-4 py-2 text-sm text-amber-900 dark:border-amber-900 dark:bg-amber-950 dark:text-amber-200"
    >
      <span className="h-2 w-2 rounded-full bg-amber-500" />
      {ingest.write_error} — {ingest.failed_batches} batch{ingest.failed_batches === 1 ? "" : "es"} dropped so far. Figures
      below stop at the last stored sample; writing resumes by itself once there is space.
    </div>
  );
}

function LivePill({ status }: { status: StreamStatus }) {
  const now = useNow(1000);
  const live = status.state === "live" || status.state === "recovered";
  return (
    <span
      data-testid="live-pill"
      data-stream={status.state}
      title={status.lastEvent ? `last update ${ago(status.lastEvent / 1000, now / 1000)}` : "waiting for the first update"}
      className={clsx(
        "inline-flex shrink-0 items-center gap-1.5 rounded-full px-2 py-0.5 text-xs font-medium whitespace-nowrap",
        live && "bg-emerald-100 text-emerald-800 dark:bg-emerald-500/15 dark:text-emerald-300",
        status.state === "connecting" && "bg-slate-100 text-slate-600 dark:bg-slate-800 dark:text-slate-300",
        status.state === "down" && "bg-rose-100 text-rose-800 dark:bg-rose-500/15 dark:text-rose-300",
      )}
    >
      <span
        className={clsx(
          "h-1.5 w-1.5 rounded-full",
          live ? "bg-emerald-500" : status.state === "down" ? "bg-rose-500" : "bg-slate-400",
        )}
      />
      {live ? "Live" : status.state === "down" ? "Offline" : "Connecting"}
      {live && status.lastEvent ? <span className="tabular opacity-70">· {ago(status.lastEvent / 1000, now / 1000)}</span> : null}
    </span>
  );
}

function Help({ onClose }: { onClose: () => void }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => ref.current?.focus(), []);
  const rows: [string, string][] = [
    ...NAV.map((n) => [`g ${n.key}`, `go to ${n.label}`] as [string, string]),
    ["/", "focus the search / filter box (the question box on Ask)"],
    ["← ↑ → ↓", "move between GPU cards; Enter opens one"],
    ["t", "switch light / dark theme"],
    ["?", "this help"],
    ["Esc", "close"],
  ];
  return (
    <div className="fixed inset-0 z-50 flex items-center justify-center bg-black/40 p-4" onClick={onClose}>
      <div
        ref={ref}
        tabIndex={-1}
        role="dialog"
        aria-modal="true"
        aria-label="Keyboard shortcuts"
        onKeyDown={(e) => e.key === "Escape" && onClose()}
        onClick={(e) => e.stopPropagation()}
        className="w-full max-w-sm rounded-lg bg-white p-5 shadow-xl dark:bg-slate-900"
      >
        <h2 className="mb-3 text-base font-semibold">Keyboard shortcuts</h2>
        <table className="w-full text-sm">
          <tbody>
            {rows.map(([k, v]) => (
              <tr key={k}>
                <td className="py-1 pr-4">
                  <Kbd>{k}</Kbd>
                </td>
                <td className="py-1 text-slate-600 dark:text-slate-300">{v}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}

function useShortcuts(onHelp: () => void, toggleTheme: () => void) {
  const navigate = useNavigate();
  useEffect(() => {
    let pendingG = 0;
    const onKey = (e: KeyboardEvent) => {
      const t = e.target as HTMLElement | null;
      if (e.metaKey || e.ctrlKey || e.altKey) return;
      if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
      if (document.querySelector("[role=listbox],[role=menu],[role=dialog]")) return;
      if (pendingG && Date.now() - pendingG < 1200) {
        pendingG = 0;
        const hit = NAV.find((n) => n.key === e.key);
        if (hit) {
          e.preventDefault();
          navigate(hit.to);
        }
        return;
      }
      if (e.key === "g") pendingG = Date.now();
      else if (e.key === "?") onHelp();
      else if (e.key === "t") toggleTheme();
      else if (e.key === "/") {
        const box = document.querySelector<HTMLInputElement>("[data-search]");
        if (box) {
          e.preventDefault();
          box.focus();
        }
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [navigate, onHelp, toggleTheme]);
}

export function Layout({ status, children }: { status: StreamStatus; children: ReactNode }) {
  const [theme, toggleTheme] = useTheme();
  const [help, setHelp] = useState(false);
  const me = useMe();
  const overview = useOverview();
  const loc = useLocation();
  const main = useRef<HTMLElement>(null);
  useShortcuts(() => setHelp(true), toggleTheme);

  useEffect(() => {
    const page = NAV.find((n) => (n.to === "/" ? loc.pathname === "/" : loc.pathname.startsWith(n.to)));
    const cluster = overview.data?.cluster;
    document.title = [page?.label, cluster, "gpuwarden"].filter(Boolean).join(" · ");
  }, [loc.pathname, overview.data?.cluster]);

  const signOut = async () => {
    await api.POST("/api/v1/logout");
    window.location.assign("/signin");
  };

  const alerts = overview.data?.alerts_active ?? 0;

  return (
    <div className="flex min-h-screen">
      <a href="#main" className="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:z-50 focus:rounded focus:bg-white focus:px-3 focus:py-2">
        Skip to content
      </a>
      <div className="hidden w-52 shrink-0 border-r border-slate-200 bg-white md:block dark:border-slate-800 dark:bg-slate-900">
      <nav aria-label="Main" className="sticky top-0 flex h-screen flex-col px-3 py-4">
        <div className="mb-6 flex items-center gap-2 px-2">
          <span className="grid h-7 w-7 place-items-center rounded-md bg-emerald-500 text-sm font-bold text-white">gw</span>
          <div className="leading-tight">
            <div className="text-sm font-semibold">gpuwarden</div>
            <div className="text-xs text-slate-500" data-testid="cluster-name">
              {overview.data?.cluster ?? "…"}
            </div>
          </div>
        </div>
        <ul className="flex flex-col gap-0.5">
          {NAV.map((n) => (
            <li key={n.to}>
              <NavLink
                to={n.to}
                end={n.to === "/"}
                className={({ isActive }) =>
                  clsx(
                    "flex items-center gap-2.5 rounded-md px-2 py-1.5 text-sm",
                    isActive
                      ? "bg-slate-100 font-medium text-slate-900 dark:bg-slate-800 dark:text-white"
                      : "text-slate-600 hover:bg-slate-50 dark:text-slate-400 dark:hover:bg-slate-800/60",
                  )
                }
              >
                <span aria-hidden="true" className="w-4 text-center text-slate-400">
                  {n.icon}
                </span>
                {n.label}
                {n.to === "/alerts" && alerts > 0 && (
                  <span className="ml-auto rounded-full bg-rose-500 px-1.5 text-xs font-semibold text-white">{alerts}</span>
                )}
              </NavLink>
            </li>
          ))}
        </ul>
        <div className="mt-auto px-2 text-xs text-slate-400">
          Press <Kbd>?</Kbd> for shortcuts
        </div>
      </nav>
      </div>
      <div className="flex min-w-0 flex-1 flex-col">
        <header className="sticky top-0 z-30 border-b border-slate-200 bg-white dark:border-slate-800 dark:bg-slate-900">
          <div className="flex h-12 items-center gap-2 px-3 md:gap-3 md:px-4">
            <span aria-hidden="true" className="grid h-7 w-7 shrink-0 place-items-center rounded-md bg-emerald-500 text-sm font-bold text-white md:hidden">
              gw
            </span>
            <LivePill status={status} />
            <div className="ml-auto flex min-w-0 items-center gap-1.5 text-sm md:gap-3">
              {me.data && (
                <span className="hidden truncate text-slate-500 sm:inline" data-testid="whoami">
                  {me.data.name || "token"} · <span data-testid="role">{me.data.role}</span>
                </span>
              )}
              <button
                type="button"
                onClick={toggleTheme}
                aria-label={`Switch to ${theme === "dark" ? "light" : "dark"} theme`}
                title="Theme (t)"
                className="shrink-0 rounded-md border border-slate-300 px-2 py-1 text-xs whitespace-nowrap hover:bg-slate-100 dark:border-slate-700 dark:hover:bg-slate-800"
              >
                {theme === "dark" ? "☀" : "☾"}
                <span className="hidden sm:inline">{theme === "dark" ? " Light" : " Dark"}</span>
              </button>
              <button
                type="button"
                onClick={signOut}
                className="shrink-0 rounded-md px-2 py-1 text-xs whitespace-nowrap text-slate-600 hover:bg-slate-100 dark:text-slate-300 dark:hover:bg-slate-800"
              >
                Sign out
              </button>
            </div>
          </div>
          <nav
            aria-label="Main (compact)"
            data-testid="compact-nav"
            className="flex gap-0.5 overflow-x-auto border-t border-slate-100 px-1 py-1 whitespace-nowrap md:hidden dark:border-slate-800"
          >
            {NAV.map((n) => (
              <NavLink
                key={n.to}
                to={n.to}
                end={n.to === "/"}
                className={({ isActive }) =>
                  clsx(
                    "flex shrink-0 items-center gap-1 rounded px-[7px] py-1 text-[13px] sm:px-2.5 sm:text-sm",
                    isActive
                      ? "bg-slate-100 font-medium text-slate-900 dark:bg-slate-800 dark:text-white"
                      : "text-slate-600 dark:text-slate-400",
                  )
                }
              >
                {n.label}
                {n.to === "/alerts" && alerts > 0 && (
                  <span className="rounded-full bg-rose-500 px-1.5 text-xs font-semibold text-white">{alerts}</span>
                )}
              </NavLink>
            ))}
          </nav>
          <StreamBanner status={status} />
          <StoreBanner />
        </header>
        <main id="main" ref={main} className="mx-auto w-full max-w-[1600px] min-w-0 flex-1 p-3 sm:p-4 md:p-6">
          <DialogHost>{children}</DialogHost>
        </main>
      </div>
      {help && <Help onClose={() => setHelp(false)} />}
    </div>
  );
}
