import { useQueryClient } from "@tanstack/react-query";
import clsx from "clsx";
import { Link } from "react-router-dom";
import { api, unwrap } from "../api/client";
import { keys, useReclaimHistory } from "../api/queries";
import type { ReclaimCandidate, ReclaimEvent, ReclaimPlan } from "../api/types";
import { amount, perHour } from "../lib/money";
import {
  fullTime,
  lastWarnings,
  leverCommand,
  leverConfirm,
  leverHelp,
  leverLabel,
  levers,
  nodeStageText,
  stageText,
  stageTone,
  warnedAt,
  type ReclaimLever,
} from "../lib/reclaim";
import { ActionButton, ConfirmDialog, useCanAct, useOpenDialog } from "./Actions";
import { Card, Tone } from "./ui";

/** When each watched job got its latest warning; the history is read only while some job has one. */
export function useWarnedAt(plan: ReclaimPlan | undefined): (c: ReclaimCandidate) => number | null {
  const warned = !!plan?.candidates.some((c) => c.warnings_sent > 0);
  const history = useReclaimHistory(warned && !!plan?.mode);
  const seen = lastWarnings(history.data);
  return (c) => (plan ? warnedAt(c, plan, seen) : null);
}

function useRefreshReclaim() {
  const qc = useQueryClient();
  return () => {
    void qc.invalidateQueries({ queryKey: keys.reclaim });
    void qc.invalidateQueries({ queryKey: keys.overview });
    void qc.invalidateQueries({ queryKey: ["slurm"] });
  };
}

/** A job's reclaim stage: a tone dot and one line ("warned 20:31, cancels at 21:31"). */
export function ReclaimStage({
  cand,
  plan,
  warned,
  now,
  className,
}: {
  cand: ReclaimCandidate;
  plan: ReclaimPlan;
  warned: number | null;
  now: number;
  className?: string;
}) {
  const tone = stageTone(cand);
  const title = [cand.next_at ? `next: ${cand.next_event} at ${fullTime(cand.next_at)}` : null, `reclaim: ${cand.status}, ${cand.why}`]
    .filter(Boolean)
    .join(" · ");
  return (
    <span
      className={clsx("inline-flex items-baseline gap-1.5 text-xs", className)}
      data-testid={`reclaim-stage-${cand.key}`}
      data-status={cand.status}
      title={title}
    >
      <span
        aria-hidden="true"
        className={clsx(
          "h-1.5 w-1.5 shrink-0 translate-y-[-1px] rounded-full",
          tone === "warn" && "bg-amber-500",
          tone === "bad" && "bg-rose-500",
          tone === "ok" && "bg-emerald-500",
          tone === "busy" && "bg-sky-500",
          tone === "muted" && "bg-slate-400",
        )}
      />
      <span className={clsx(tone === "warn" ? "text-amber-800 dark:text-amber-300" : "text-slate-600 dark:text-slate-300")}>
        {plan.paused && !plan.enabled ? "reclaim paused · " : ""}
        {stageText(cand, plan, warned, now)}
      </span>
    </span>
  );
}

function LeverDialog({ cand, lever, plan, onClose }: { cand: ReclaimCandidate; lever: ReclaimLever; plan: ReclaimPlan; onClose: () => void }) {
  const refresh = useRefreshReclaim();
  const label = leverConfirm(lever, cand.key, plan.action);
  return (
    <ConfirmDialog
      title={lever === "exempt" ? `Exempt job ${cand.key} from reclaim?` : `${label}?`}
      what={
        <>
          <span className="font-medium">{cand.name}</span> ({cand.user}, {cand.gpus.length} GPU{cand.gpus.length === 1 ? "" : "s"},{" "}
          {perHour(cand.rate_per_hour)}). {leverHelp(lever, plan.action, plan.mode)}
        </>
      }
      commandLabel={lever === "exempt" ? "Equivalent command" : "Equivalent Slurm command"}
      command={leverCommand(lever, cand.key, plan.action)}
      confirmLabel={label}
      danger={lever === "act"}
      onClose={onClose}
      onConfirm={async () => {
        try {
          const e = await unwrap<ReclaimEvent>(
            api.POST("/api/v1/reclaim/jobs/{key}/{what}", { params: { path: { key: cand.key, what: lever } } }),
          );
          const result = typeof e.detail.result === "string" ? `: ${e.detail.result}` : "";
          // the answer is the job's latest reclaim event: anything but "acted" means it did not run
          if (lever === "act" && e.event !== "acted")
            throw new Error(`job ${cand.key}: the action did not run (reclaim's latest event: ${e.event}${result})`);
          return e.event === "exempted" ? `job ${cand.key} exempted by ${String(e.detail.by ?? "you")}` : `job ${cand.key}: ${e.event}${result}`;
        } finally {
          refresh();
        }
      }}
    />
  );
}

/** Exempt… and Cancel now… (the policy's action) for a job reclaim watches; nothing for viewers. */
export function ReclaimLevers({ cand, plan, className }: { cand: ReclaimCandidate; plan: ReclaimPlan; className?: string }) {
  const canAct = useCanAct();
  const openDialog = useOpenDialog();
  const offered = levers(cand);
  if (!canAct || !offered.length || !plan.mode) return null;
  return (
    <span className={clsx("inline-flex flex-wrap gap-1.5", className)}>
      {offered.map((l) => (
        <ActionButton
          key={l}
          danger={l === "act"}
          data-testid={`reclaim-${l}-${cand.key}`}
          onClick={() => openDialog((close) => <LeverDialog cand={cand} lever={l} plan={plan} onClose={close} />)}
        >
          {leverLabel(l, plan.action)}…
        </ActionButton>
      ))}
    </span>
  );
}

function SwitchDialog({ pause, onClose }: { pause: boolean; onClose: () => void }) {
  const refresh = useRefreshReclaim();
  return (
    <ConfirmDialog
      title={pause ? "Pause reclaim?" : "Resume reclaim?"}
      what={
        pause
          ? "The kill switch: no warning and no action goes out until reclaim is resumed. Idle jobs keep running."
          : "Reclaim watches again; idle streaks start over from now, so nobody is acted on without fresh warnings."
      }
      commandLabel="Equivalent command"
      command={`gpuwarden reclaim ${pause ? "pause" : "resume"}`}
      confirmLabel={pause ? "Pause reclaim" : "Resume reclaim"}
      danger={false}
      onClose={onClose}
      onConfirm={async () => {
        try {
          const p = await unwrap<ReclaimPlan>(api.POST("/api/v1/reclaim/{switch}", { params: { path: { switch: pause ? "pause" : "resume" } } }));
          return p.enabled ? "reclaim resumed" : `reclaim paused${p.paused ? `: ${p.paused}` : ""}`;
        } finally {
          refresh();
        }
      }}
    />
  );
}

/** Pause… / Resume… : reclaim's kill switch, for operators. */
export function ReclaimSwitch({ plan }: { plan: ReclaimPlan }) {
  const canAct = useCanAct();
  const openDialog = useOpenDialog();
  if (!canAct || !plan.mode) return null;
  const pause = plan.enabled;
  return (
    <ActionButton
      data-testid={pause ? "reclaim-pause" : "reclaim-resume"}
      aria-pressed={!pause}
      onClick={() => openDialog((close) => <SwitchDialog pause={pause} onClose={close} />)}
    >
      {pause ? "Pause…" : "Resume…"}
    </ActionButton>
  );
}

const th = "px-1.5 py-2 font-medium first:pl-3 last:pr-3 sm:px-4 sm:first:pl-4 sm:last:pr-4";
const td = "px-1.5 py-2 align-top first:pl-3 last:pr-3 sm:px-4 sm:first:pl-4 sm:last:pr-4";

function ladder(plan: ReclaimPlan): string {
  const secs = (s: number) => (s % 3600 === 0 ? `${s / 3600}h` : s % 60 === 0 ? `${s / 60}m` : `${s}s`);
  const warns = plan.warn_after_s.map(secs).join(", ");
  return `${plan.mode} · ${plan.action} after ${plan.act_after_s !== null ? secs(plan.act_after_s) : "–"} idle${
    warns ? `, warnings at ${warns}` : ""
  }${plan.idle_below !== null ? ` · idle: under ${plan.idle_below}%` : ""}`;
}

/**
 * Reclaim at a glance: the mode and ladder, the kill switch, every job it watches with its
 * stage (and each node of a cluster with autostop).
 */
export function ReclaimPanel({ plan, now }: { plan: ReclaimPlan; now: number }) {
  const warnedOf = useWarnedAt(plan);
  const canAct = useCanAct();
  const watched = [...plan.candidates].sort((a, b) => (a.next_at ?? Infinity) - (b.next_at ?? Infinity) || a.key.localeCompare(b.key));
  return (
    <Card className="mt-4 overflow-x-auto" data-testid="reclaim-panel" data-enabled={plan.enabled}>
      <div className="flex flex-wrap items-center gap-x-3 gap-y-1 border-b border-slate-100 px-4 py-2.5 dark:border-slate-800">
        <h2 className="text-sm font-semibold">Reclaim</h2>
        {plan.mode ? (
          <span className="text-xs text-slate-500" data-testid="reclaim-ladder">
            {ladder(plan)}
          </span>
        ) : null}
        <span className="ml-auto flex items-center gap-2">
          {plan.enabled ? (
            <Tone tone="ok">on</Tone>
          ) : (
            <span data-testid="reclaim-paused">
              <Tone tone="warn">paused</Tone>
            </span>
          )}
          <ReclaimSwitch plan={plan} />
        </span>
      </div>
      {plan.paused && (
        <p className="border-b border-amber-200 bg-amber-50 px-4 py-2 text-xs text-amber-900 dark:border-amber-900 dark:bg-amber-950/40 dark:text-amber-200">
          Standing still: {plan.paused}
        </p>
      )}
      {!watched.length && !plan.nodes.length ? (
        <p className="p-4 text-sm text-slate-500">No running GPU job to watch.</p>
      ) : null}
      {watched.length > 0 && (
        <table className="w-full text-sm" data-testid="reclaim-jobs">
          <thead className="text-left text-xs text-slate-500">
            <tr>
              <th className={th}>Job</th>
              <th className={th}>Stage</th>
              <th className={`${th} hidden text-right sm:table-cell`}>Rate</th>
              <th className={`${th} hidden text-right md:table-cell`}>Idle spend</th>
              {canAct && <th aria-label="Actions" className={th} />}
            </tr>
          </thead>
          <tbody className="divide-y divide-slate-100 dark:divide-slate-800">
            {watched.map((c) => (
              <tr key={c.key} data-testid={`reclaim-row-${c.key}`}>
                <td className={td}>
                  <Link to={`/slurm/jobs/${c.key.split("_")[0]}`} className="font-medium text-sky-700 hover:underline dark:text-sky-400">
                    {c.key}
                  </Link>
                  <div className="max-w-[9rem] truncate text-xs text-slate-500 sm:max-w-xs" title={`${c.name} · ${c.user} · ${c.gpus.join(", ")}`}>
                    {c.user} · {c.gpus.length} GPU{c.gpus.length === 1 ? "" : "s"} · {c.name}
                  </div>
                </td>
                <td className={td}>
                  <ReclaimStage cand={c} plan={plan} warned={warnedOf(c)} now={now} />
                </td>
                <td className={`${td} tabular hidden text-right sm:table-cell`}>{perHour(c.rate_per_hour)}</td>
                <td className={`${td} tabular hidden text-right md:table-cell`}>{c.burned ? amount(c.burned) : "–"}</td>
                {canAct && (
                  <td className={`${td} text-right`}>
                    <ReclaimLevers cand={c} plan={plan} className="justify-end" />
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {plan.nodes.length > 0 && (
        <table className="w-full border-t border-slate-100 text-sm dark:border-slate-800" data-testid="reclaim-nodes">
          <thead className="text-left text-xs text-slate-500">
            <tr>
              <th className={th}>Node (autostop)</th>
              <th className={th}>Stage</th>
              <th className={`${th} hidden text-right sm:table-cell`}>Rate</th>
            </tr>
          </thead>
          <tbody className="divide-y divide-slate-100 dark:divide-slate-800">
            {plan.nodes.map((n) => (
              <tr key={`${n.cluster}/${n.name}`} data-testid={`reclaim-node-${n.name}`}>
                <td className={td}>
                  {n.name}
                  <div className="text-xs text-slate-500">
                    {n.cluster} · {n.action} · {n.mode}
                  </div>
                </td>
                <td className={`${td} text-xs text-slate-600 dark:text-slate-300`}>{nodeStageText(n, now)}</td>
                <td className={`${td} tabular hidden text-right sm:table-cell`}>{perHour(n.rate_per_hour)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Card>
  );
}
