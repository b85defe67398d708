import { useWindowVirtualizer } from "@tanstack/react-virtual";
import clsx from "clsx";
import { memo, useCallback, useEffect, useLayoutEffect, useMemo, useState } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { useGpus, useNodes, useOverview, useSlurmJobs } from "../api/queries";
import type { GpuView } from "../api/types";
import { CARD_HEIGHT, GpuCard } from "../components/GpuCard";
import { FilterSelect } from "../components/Select";
import { ErrorBox, Loading, PageHeader } from "../components/ui";
import {
  countStates,
  filterGpus,
  groupByNode,
  isGpuState,
  jobsAndUsers,
  naturalCompare,
  STATE_LABEL,
  STATE_STYLE,
  STATES,
  type GpuFilter,
} from "../lib/gpu";
import { useDebounced } from "../lib/hooks";
import { sparks } from "../lib/spark";

const HEADER_HEIGHT = 44;
const MIN_CARD_WIDTH = 270;
const GAP = 12;

type Row =
  | { kind: "header"; node: string; counts: ReturnType<typeof countStates>; down?: string }
  | { kind: "cards"; gpus: GpuView[]; first: number };

function useFilters(): [GpuFilter, (patch: Partial<Record<keyof GpuFilter, string>>) => void] {
  const [params, setParams] = useSearchParams();
  const filter: GpuFilter = {
    node: params.get("node") || undefined,
    state: isGpuState(params.get("state")) ? (params.get("state") as GpuFilter["state"]) : undefined,
    job: params.get("job") || undefined,
    user: params.get("user") || undefined,
    q: params.get("q") || undefined,
  };
  const update = useCallback(
    (patch: Partial<Record<keyof GpuFilter, string>>) =>
      setParams(
        (prev) => {
          const next = new URLSearchParams(prev);
          for (const [k, v] of Object.entries(patch)) {
            if (v) next.set(k, v);
            else next.delete(k);
          }
          return next;
        },
        { replace: true },
      ),
    [setParams],
  );
  return [filter, update];
}

function useColumns(el: HTMLElement | null): number {
  const [cols, setCols] = useState(4);
  useLayoutEffect(() => {
    if (!el) return;
    const measure = () => setCols(Math.max(1, Math.floor((el.clientWidth + GAP) / (MIN_CARD_WIDTH + GAP))));
    measure();
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    return () => ro.disconnect();
  }, [el]);
  return cols;
}

export default function Gpus() {
  const gpus = useGpus();
  const nodes = useNodes();
  const [filter, update] = useFilters();
  const [text, setText] = useState(filter.q ?? "");
  const debounced = useDebounced(text, 150);
  useEffect(() => {
    if ((filter.q ?? "") !== debounced) update({ q: debounced });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [debounced]);

  // Job names come from Slurm's queue (the GPU list carries job ids only): search finds them too.
  const overview = useOverview();
  const slurmJobs = useSlurmJobs(!!overview.data?.slurm);
  const jobNames = useMemo(() => new Map((slurmJobs.data ?? []).map((j) => [String(j.job_id), j.name])), [slurmJobs.data]);
  const all = gpus.data ?? [];
  const filtered = useMemo(() => filterGpus(all, filter, jobNames), [all, jobNames, filter.node, filter.state, filter.job, filter.user, filter.q]); // eslint-disable-line react-hooks/exhaustive-deps
  const counts = useMemo(() => countStates(filterGpus(all, { ...filter, state: undefined }, jobNames)), [all, jobNames, filter.node, filter.job, filter.user, filter.q]); // eslint-disable-line react-hooks/exhaustive-deps
  const { jobs, users } = useMemo(() => jobsAndUsers(all), [all]);
  const nodeNames = useMemo(() => {
    const s = new Set<string>(all.map((g) => g.node));
    for (const n of nodes.data ?? []) s.add(n.name);
    return [...s].sort(naturalCompare);
  }, [all, nodes.data]);

  const downNodes = useMemo(
    () =>
      (nodes.data ?? [])
        .filter(
          (n) =>
            !n.up &&
            !all.some((g) => g.node === n.name) &&
            (!filter.node || filter.node === n.name) &&
            (!filter.state || filter.state === "down") &&
            !filter.job &&
            !filter.user &&
            !filter.q,
        )
        .map((n) => ({ name: n.name, error: n.error ?? "not answering" })),
    [nodes.data, all, filter.node, filter.state, filter.job, filter.user, filter.q],
  );
  const active = Object.values(filter).some(Boolean);
  const sparkVersion = sparks.version;

  return (
    <div>
      <PageHeader
        title="GPUs"
        sub={
          gpus.data ? (
            <span data-testid="gpus-shown">
              {filtered.length === all.length ? `${all.length} GPUs` : `${filtered.length} of ${all.length} GPUs`} on{" "}
              {new Set(filtered.map((g) => g.node)).size} nodes
            </span>
          ) : undefined
        }
      />
      <div className="z-20 -mx-3 mb-4 border-b border-slate-200 bg-slate-50 px-3 py-3 sm:-mx-4 sm:px-4 md:sticky md:top-12 md:-mx-6 md:px-6 dark:border-slate-800 dark:bg-slate-950">
        <div className="flex flex-wrap items-end gap-3">
          <label className="flex w-full flex-col gap-1 text-xs font-medium text-slate-500 sm:w-auto dark:text-slate-400">
            Search
            <input
              data-search
              data-testid="filter-q"
              type="search"
              value={text}
              onChange={(e) => setText(e.target.value)}
              onKeyDown={(e) => {
                if (e.key === "Escape") (e.target as HTMLInputElement).blur();
                if (e.key === "ArrowDown") document.querySelector<HTMLElement>("[data-card]")?.focus();
              }}
              placeholder="job 4, job name, node, user…  ( / )"
              className="h-8 w-full rounded-md sm:w-72 border border-slate-300 bg-white px-2.5 text-sm text-slate-900 placeholder:text-slate-400 dark:border-slate-700 dark:bg-slate-900 dark:text-slate-100"
            />
          </label>
          <FilterSelect
            label="Node"
            testid="filter-node"
            value={filter.node ?? ""}
            onChange={(v) => update({ node: v })}
            anyLabel="All nodes"
            options={nodeNames.map((n) => ({ value: n, label: n }))}
          />
          <FilterSelect
            label="Job"
            testid="filter-job"
            value={filter.job ?? ""}
            onChange={(v) => update({ job: v })}
            anyLabel="Any job"
            options={jobs.map((j) => ({ value: j, label: j }))}
          />
          <FilterSelect
            label="User"
            testid="filter-user"
            value={filter.user ?? ""}
            onChange={(v) => update({ user: v })}
            anyLabel="Any user"
            options={users.map((u) => ({ value: u, label: u }))}
          />
          {active && (
            <button
              type="button"
              data-testid="filter-clear"
              onClick={() => {
                setText("");
                update({ node: "", state: "", job: "", user: "", q: "" });
              }}
              className="h-8 rounded-md px-2 text-sm text-sky-700 hover:bg-sky-50 dark:text-sky-400 dark:hover:bg-sky-950"
            >
              Clear filters
            </button>
          )}
        </div>
        <div className="mt-3 flex flex-wrap gap-2" role="group" aria-label="Filter by state">
          {STATES.map((s) => (
            <button
              key={s}
              type="button"
              data-testid={`filter-state-${s}`}
              aria-pressed={filter.state === s}
              onClick={() => update({ state: filter.state === s ? "" : s })}
              className={clsx(
                "inline-flex items-center gap-1.5 rounded-full border px-2.5 py-1 text-xs font-medium",
                filter.state === s
                  ? "border-slate-900 bg-slate-900 text-white dark:border-slate-100 dark:bg-slate-100 dark:text-slate-900"
                  : "border-slate-300 bg-white text-slate-700 hover:border-slate-400 dark:border-slate-700 dark:bg-slate-900 dark:text-slate-300",
              )}
            >
              <span className={clsx("h-2 w-2 rounded-full", STATE_STYLE[s].dot)} />
              {STATE_LABEL[s]}
              <span className="tabular opacity-70">{counts[s]}</span>
            </button>
          ))}
        </div>
      </div>

      {gpus.isPending ? (
        <Loading what="Loading GPUs" />
      ) : gpus.isError ? (
        <ErrorBox error={gpus.error} />
      ) : (
        <GpuGrid gpus={filtered} downNodes={downNodes} sparkVersion={sparkVersion} emptyText={all.length ? "No GPU matches these filters." : "No GPUs reported yet: are the nodes up?"} />
      )}
    </div>
  );
}

/** The virtualized grid; its own component so scrolling re-renders only this. */
const GpuGrid = memo(function GpuGrid({
  gpus,
  downNodes,
  sparkVersion,
  emptyText,
}: {
  gpus: GpuView[];
  downNodes: { name: string; error: string }[];
  sparkVersion: number;
  emptyText: string;
}) {
  const [container, setContainer] = useState<HTMLDivElement | null>(null);
  const cols = useColumns(container);
  const { rows, flat } = useMemo(() => {
    const rows: Row[] = [];
    const flat: GpuView[] = [];
    // A node that is down and never reported GPUs still gets a line: it is missing capacity.
    for (const n of downNodes) rows.push({ kind: "header", node: n.name, counts: countStates([]), down: n.error });
    for (const g of groupByNode(gpus)) {
      rows.push({ kind: "header", node: g.node, counts: g.counts });
      for (let i = 0; i < g.gpus.length; i += cols) {
        const chunk = g.gpus.slice(i, i + cols);
        rows.push({ kind: "cards", gpus: chunk, first: flat.length });
        flat.push(...chunk);
      }
    }
    return { rows, flat };
  }, [gpus, downNodes, cols]);

  const [margin, setMargin] = useState(0);
  useLayoutEffect(() => {
    if (!container) return;
    const measure = () => setMargin(container.getBoundingClientRect().top + window.scrollY);
    measure();
    window.addEventListener("resize", measure);
    return () => window.removeEventListener("resize", measure);
  }, [container]);
  const virtualizer = useWindowVirtualizer({
    count: rows.length,
    estimateSize: (i) => (rows[i].kind === "header" ? HEADER_HEIGHT : CARD_HEIGHT),
    overscan: 3,
    scrollMargin: margin,
  });
  useEffect(() => virtualizer.measure(), [rows, virtualizer]);

  const rowOfCard = (idx: number) =>
    rows.findIndex((r) => r.kind === "cards" && idx >= r.first && idx < r.first + r.gpus.length);
  const onKeyDown = (e: React.KeyboardEvent) => {
    const at = (e.target as HTMLElement).dataset.card;
    if (at === undefined) return;
    const delta = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols }[e.key];
    if (delta === undefined) return;
    e.preventDefault();
    const j = Math.max(0, Math.min(flat.length - 1, Number(at) + delta));
    const find = () => container?.querySelector<HTMLElement>(`[data-card="${j}"]`);
    const el = find();
    if (el) el.focus();
    else {
      virtualizer.scrollToIndex(rowOfCard(j), { align: "center" });
      requestAnimationFrame(() => requestAnimationFrame(() => find()?.focus()));
    }
  };

  return (
    <div ref={setContainer} onKeyDown={onKeyDown} data-testid="gpu-grid">
      {!rows.length && (
        <p className="p-8 text-center text-sm text-slate-500" data-testid="gpus-empty">
          {emptyText}
        </p>
      )}
      <div style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
        {virtualizer.getVirtualItems().map((v) => {
          const row = rows[v.index];
          return (
            <div
              key={v.key}
              style={{
                position: "absolute",
                top: 0,
                left: 0,
                width: "100%",
                height: v.size,
                transform: `translateY(${v.start - virtualizer.options.scrollMargin}px)`,
              }}
            >
              {row.kind === "header" ? (
                <div className="flex h-full items-end gap-3 pb-2" data-testid={`node-group-${row.node}`}>
                  <Link to={`/nodes/${encodeURIComponent(row.node)}`} className="text-sm font-semibold hover:underline">
                    {row.node}
                  </Link>
                  {row.down && (
                    <span className="text-xs text-rose-600 dark:text-rose-400">down, no GPUs reported · {row.down}</span>
                  )}
                  <span className="text-xs text-slate-500">
                    {STATES.filter((s) => row.counts[s]).map((s) => `${row.counts[s]} ${STATE_LABEL[s].toLowerCase()}`).join(" · ")}
                  </span>
                </div>
              ) : (
                <div className="grid" style={{ gridTemplateColumns: `repeat(${cols}, minmax(0, 1fr))`, gap: GAP }}>
                  {row.gpus.map((g, k) => (
                    <GpuCard key={`${g.node}/${g.index}`} gpu={g} flatIndex={row.first + k} sparkVersion={sparkVersion} />
                  ))}
                </div>
              )}
            </div>
          );
        })}
      </div>
    </div>
  );
});
