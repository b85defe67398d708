import * as Menu from "@radix-ui/react-dropdown-menu";
import { useQueryClient } from "@tanstack/react-query";
import clsx from "clsx";
import { createContext, useCallback, useContext, useEffect, useId, useRef, useState, type ReactNode } from "react";
import { createPortal } from "react-dom";
import { api, unwrap } from "../api/client";
import { keys, useMe } from "../api/queries";
import type { ActionResult, AlertView, SilenceView } from "../api/types";
import {
  durationProblem,
  JOB_ACTION_HELP,
  JOB_ACTION_LABEL,
  jobActions,
  jobCommand,
  nodeAction,
  nodeCommand,
  reasonProblem,
  silenceDraft,
  silenceSummary,
  type JobAction,
  type NodeAction,
  type SilenceDraft,
} from "../lib/actions";
import { roleAtLeast } from "../lib/roles";

type Open = (render: (close: () => void) => ReactNode) => void;
const DialogContext = createContext<Open | null>(null);

/**
 * Holds the one open action dialog above the pages, so it outlives the row that opened it
 * (a cancelled job leaves the queue while its result is still on screen).
 */
export function DialogHost({ children }: { children: ReactNode }) {
  const [dialog, setDialog] = useState<ReactNode>(null);
  const open = useCallback<Open>((render) => setDialog(render(() => setDialog(null))), []);
  return (
    <DialogContext.Provider value={open}>
      {children}
      {dialog && createPortal(dialog, document.body)}
    </DialogContext.Provider>
  );
}

export function useOpenDialog(): Open {
  const ctx = useContext(DialogContext);
  if (!ctx) throw new Error("an action button needs a <DialogHost> above it (Layout has one)");
  return ctx;
}

/** Operators and admins act; viewers see no action at all. */
export function useCanAct(): boolean {
  const me = useMe();
  return roleAtLeast(me.data?.role, "operator");
}

/** The small bordered button the UI uses for actions (Acknowledge, Cancel, Drain…). */
export function ActionButton({
  danger,
  className,
  children,
  ...rest
}: React.ButtonHTMLAttributes<HTMLButtonElement> & { danger?: boolean }) {
  return (
    <button
      type="button"
      className={clsx(
        "inline-flex items-center gap-1 rounded-md border px-2 py-0.5 text-xs font-medium whitespace-nowrap disabled:opacity-50",
        danger
          ? "border-rose-300 text-rose-700 hover:bg-rose-50 dark:border-rose-800 dark:text-rose-300 dark:hover:bg-rose-950/50"
          : "border-slate-300 text-slate-700 hover:bg-slate-100 dark:border-slate-700 dark:text-slate-200 dark:hover:bg-slate-800",
        className,
      )}
      {...rest}
    >
      {children}
    </button>
  );
}

type Phase = { kind: "confirm" } | { kind: "running" } | { kind: "done"; text: string } | { kind: "error"; text: string };

/**
 * A confirmation dialog that shows exactly what will run, then the API's answer (its result,
 * or the problem's `detail`). `problem` disables the confirm button and says why.
 */
export function ConfirmDialog({
  title,
  what,
  command,
  commandLabel = "Equivalent Slurm command",
  confirmLabel,
  danger,
  problem,
  onConfirm,
  onClose,
  children,
  testid = "action-dialog",
}: {
  title: string;
  what?: ReactNode;
  command: string;
  commandLabel?: string;
  confirmLabel: string;
  danger?: boolean;
  problem?: string | null;
  onConfirm: () => Promise<string>;
  onClose: () => void;
  children?: (locked: boolean) => ReactNode;
  testid?: string;
}) {
  const [phase, setPhase] = useState<Phase>({ kind: "confirm" });
  const ref = useRef<HTMLDivElement>(null);
  const titleId = useId();
  useEffect(() => {
    // Focus the first field, or the dialog itself; a menu that opened us may try to take it back.
    const id = requestAnimationFrame(() => {
      const el = ref.current;
      if (!el) return;
      (el.querySelector<HTMLElement>("input,textarea") ?? el).focus();
    });
    return () => cancelAnimationFrame(id);
  }, []);
  const locked = phase.kind === "running" || phase.kind === "done";
  const go = async () => {
    if (problem || locked) return;
    setPhase({ kind: "running" });
    try {
      setPhase({ kind: "done", text: await onConfirm() });
    } catch (e) {
      setPhase({ kind: "error", text: e instanceof Error ? e.message : String(e) });
    }
  };
  return (
    <div className="fixed inset-0 z-50 flex items-end justify-center bg-black/40 p-0 sm:items-center sm:p-4" onClick={() => phase.kind !== "running" && onClose()}>
      <div
        ref={ref}
        tabIndex={-1}
        role="dialog"
        aria-modal="true"
        aria-labelledby={titleId}
        data-testid={testid}
        data-phase={phase.kind}
        onKeyDown={(e) => {
          if (e.key === "Escape" && phase.kind !== "running") {
            e.stopPropagation();
            onClose();
          }
        }}
        onClick={(e) => e.stopPropagation()}
        className="max-h-[90vh] w-full max-w-lg overflow-y-auto rounded-t-lg bg-white p-5 shadow-xl outline-none sm:rounded-lg dark:bg-slate-900"
      >
        <h2 id={titleId} className="text-base font-semibold">
          {title}
        </h2>
        {what && <div className="mt-1 text-sm text-slate-600 dark:text-slate-300">{what}</div>}
        <form
          className="mt-3 flex flex-col gap-3"
          onSubmit={(e) => {
            e.preventDefault();
            void go();
          }}
        >
          {children?.(locked)}
          <div>
            <div className="text-xs font-medium text-slate-500 dark:text-slate-400">{commandLabel}</div>
            <pre
              data-testid="action-command"
              className="mt-1 overflow-x-auto rounded-md bg-slate-900 px-3 py-2 font-mono text-xs whitespace-pre-wrap break-words text-slate-100 dark:bg-black"
            >
              {command}
            </pre>
          </div>
          {problem && phase.kind !== "done" && (
            <p className="text-xs text-amber-700 dark:text-amber-300" data-testid="action-problem">
              {problem}
            </p>
          )}
          {phase.kind === "done" && (
            <p
              role="status"
              data-testid="action-result"
              className="rounded-md border border-emerald-200 bg-emerald-50 px-3 py-2 text-sm text-emerald-900 dark:border-emerald-900 dark:bg-emerald-950/50 dark:text-emerald-200"
            >
              ✓ {phase.text}
            </p>
          )}
          {phase.kind === "error" && (
            <p
              role="alert"
              data-testid="action-error"
              className="rounded-md border border-rose-200 bg-rose-50 px-3 py-2 text-sm text-rose-800 dark:border-rose-900 dark:bg-rose-950/50 dark:text-rose-200"
            >
              {phase.text}
            </p>
          )}
          <div className="flex justify-end gap-2">
            <button
              type="button"
              onClick={onClose}
              disabled={phase.kind === "running"}
              data-testid="action-close"
              className="rounded-md px-3 py-1.5 text-sm text-slate-600 hover:bg-slate-100 disabled:opacity-50 dark:text-slate-300 dark:hover:bg-slate-800"
            >
              Close
            </button>
            {phase.kind !== "done" && (
              <button
                type="submit"
                data-testid="action-confirm"
                disabled={!!problem || phase.kind === "running"}
                className={clsx(
                  "rounded-md px-3 py-1.5 text-sm font-medium text-white disabled:opacity-50",
                  danger ? "bg-rose-600 hover:bg-rose-700" : "bg-slate-900 hover:bg-slate-700 dark:bg-slate-100 dark:text-slate-900 dark:hover:bg-white",
                )}
              >
                {phase.kind === "running" ? "Working…" : phase.kind === "error" ? `Retry: ${confirmLabel}` : confirmLabel}
              </button>
            )}
          </div>
        </form>
      </div>
    </div>
  );
}

const input =
  "h-8 w-full rounded-md border border-slate-300 bg-white px-2.5 text-sm text-slate-900 placeholder:text-slate-400 disabled:bg-slate-100 disabled:text-slate-500 dark:border-slate-700 dark:bg-slate-950 dark:text-slate-100 dark:disabled:bg-slate-800";

function Field({ label, children }: { label: string; children: ReactNode }) {
  return (
    <label className="flex flex-col gap-1 text-xs font-medium text-slate-500 dark:text-slate-400">
      {label}
      {children}
    </label>
  );
}

function useRefreshSlurm() {
  const qc = useQueryClient();
  return () => {
    void qc.invalidateQueries({ queryKey: ["slurm"] });
    void qc.invalidateQueries({ queryKey: keys.overview });
  };
}

export function JobActionDialog({
  job,
  action,
  onClose,
}: {
  job: { job_id: number; name?: string; user?: string };
  action: JobAction;
  onClose: () => void;
}) {
  const refresh = useRefreshSlurm();
  const label = `${JOB_ACTION_LABEL[action]} job ${job.job_id}`;
  return (
    <ConfirmDialog
      title={`${label}?`}
      what={
        <>
          {job.name ? (
            <>
              <span className="font-medium">{job.name}</span>
              {job.user ? ` (${job.user})` : ""}.{" "}
            </>
          ) : null}
          {JOB_ACTION_HELP[action]}
        </>
      }
      command={jobCommand(action, job.job_id)}
      confirmLabel={label}
      danger={action === "cancel"}
      onClose={onClose}
      onConfirm={async () => {
        try {
          const r = await unwrap<ActionResult>(
            api.POST("/api/v1/slurm/jobs/{job_id}/{action}", { params: { path: { job_id: job.job_id, action } } }),
          );
          return r.detail || `${label}: done`;
        } finally {
          refresh();
        }
      }}
    />
  );
}

export function NodeActionDialog({ node, action, onClose }: { node: string; action: NodeAction; onClose: () => void }) {
  const refresh = useRefreshSlurm();
  const [reason, setReason] = useState("");
  const drain = action === "drain";
  return (
    <ConfirmDialog
      title={drain ? `Drain ${node}?` : `Resume ${node}?`}
      what={
        drain
          ? "Running jobs finish; Slurm starts no new job on it until it is resumed. The reason shows in sinfo -R."
          : "Slurm may start jobs on it again."
      }
      command={nodeCommand(action, node, reason)}
      confirmLabel={drain ? `Drain ${node}` : `Resume ${node}`}
      danger={drain}
      problem={drain ? reasonProblem(reason) : null}
      onClose={onClose}
      onConfirm={async () => {
        try {
          const path = { params: { path: { name: node } } };
          const r = drain
            ? await unwrap<ActionResult>(api.POST("/api/v1/slurm/nodes/{name}/drain", { ...path, body: { reason: reason.trim() } }))
            : await unwrap<ActionResult>(api.POST("/api/v1/slurm/nodes/{name}/resume", path));
          return r.detail || "done";
        } finally {
          refresh();
        }
      }}
    >
      {(locked) =>
        drain && (
          <Field label="Reason (required)">
            <input
              data-testid="drain-reason"
              className={input}
              value={reason}
              maxLength={200}
              disabled={locked}
              onChange={(e) => setReason(e.target.value)}
              placeholder="e.g. fan noise, replacing GPU 3"
            />
          </Field>
        )
      }
    </ConfirmDialog>
  );
}

export function SilenceDialog({ alert, onClose }: { alert: Pick<AlertView, "rule" | "subject" | "summary">; onClose: () => void }) {
  const qc = useQueryClient();
  const [s, setS] = useState<SilenceDraft>(() => silenceDraft(alert));
  const set = (k: keyof SilenceDraft) => (e: React.ChangeEvent<HTMLInputElement>) => setS({ ...s, [k]: e.target.value });
  const problem = durationProblem(s.duration) ?? (s.subject.trim() ? null : "A subject is needed (* for every subject).");
  return (
    <ConfirmDialog
      title="Silence this alert?"
      what={<>Matching alerts still fire and show, but send no notification until the silence ends. {alert.summary}</>}
      commandLabel="Silence to create"
      command={`rule: ${s.rule.trim() || "* (every rule)"}\nsubject: ${s.subject.trim()}\nduration: ${s.duration.trim()}${
        s.comment.trim() ? `\ncomment: ${s.comment.trim()}` : ""
      }`}
      confirmLabel="Create silence"
      problem={problem}
      onClose={onClose}
      onConfirm={async () => {
        try {
          const v = await unwrap<SilenceView>(
            api.POST("/api/v1/silences", {
              body: { rule: s.rule.trim() || null, subject: s.subject.trim(), duration: s.duration.trim(), comment: s.comment.trim() },
            }),
          );
          return `silence ${v.id} created by ${v.author}: ${silenceSummary(s)}, until ${new Date(v.expires_at * 1000).toLocaleString()}`;
        } finally {
          void qc.invalidateQueries({ queryKey: keys.alerts });
        }
      }}
    >
      {(locked) => (
        <div className="grid grid-cols-1 gap-3 sm:grid-cols-2">
          <Field label="Rule">
            <input data-testid="silence-rule" className={input} value={s.rule} disabled={locked} onChange={set("rule")} />
          </Field>
          <Field label="Subject (glob)">
            <input data-testid="silence-subject" className={input} value={s.subject} disabled={locked} onChange={set("subject")} />
          </Field>
          <Field label="Duration">
            <input data-testid="silence-duration" className={input} value={s.duration} disabled={locked} onChange={set("duration")} />
          </Field>
          <Field label="Comment">
            <input data-testid="silence-comment" className={input} value={s.comment} disabled={locked} onChange={set("comment")} placeholder="why" />
          </Field>
        </div>
      )}
    </ConfirmDialog>
  );
}

type JobLike = { job_id: number; name?: string; user?: string; state: string; reason?: string | null };

/**
 * A job's actions. `menu`: one compact "Actions" button opening a menu (queue rows, phones);
 * otherwise a button per action (the job's own page). Nothing for viewers or finished jobs.
 */
export function JobActions({ job, menu }: { job: JobLike; menu?: boolean }) {
  const canAct = useCanAct();
  const openDialog = useOpenDialog();
  const actions = jobActions(job);
  if (!canAct || !actions.length) return null;
  const snapshot = { job_id: job.job_id, name: job.name, user: job.user };
  const setOpen = (a: JobAction) => openDialog((close) => <JobActionDialog job={snapshot} action={a} onClose={close} />);
  if (!menu)
    return (
      <span className="flex flex-wrap gap-2" data-testid={`job-actions-${job.job_id}`}>
        {actions.map((a) => (
          <ActionButton key={a} danger={a === "cancel"} data-testid={`job-${a}-${job.job_id}`} onClick={() => setOpen(a)} className="px-3 py-1 text-sm">
            {JOB_ACTION_LABEL[a]}…
          </ActionButton>
        ))}
      </span>
    );
  return (
    <>
      <Menu.Root modal={false}>
        <Menu.Trigger asChild>
          <ActionButton data-testid={`job-actions-${job.job_id}`} aria-label={`Actions for job ${job.job_id}`}>
            <span aria-hidden="true" className="sm:hidden">
              ⋯
            </span>
            <span className="hidden sm:inline">Actions ▾</span>
          </ActionButton>
        </Menu.Trigger>
        <Menu.Portal>
          <Menu.Content
            align="end"
            sideOffset={4}
            onCloseAutoFocus={(e) => e.preventDefault()}
            className="z-40 min-w-36 rounded-md border border-slate-200 bg-white p-1 shadow-lg dark:border-slate-700 dark:bg-slate-900"
          >
            {actions.map((a) => (
              <Menu.Item
                key={a}
                data-testid={`job-${a}-${job.job_id}`}
                onSelect={() => setOpen(a)}
                className={clsx(
                  "cursor-pointer rounded px-2 py-1.5 text-sm outline-none select-none data-[highlighted]:bg-sky-100 dark:data-[highlighted]:bg-sky-900/50",
                  a === "cancel" ? "text-rose-700 dark:text-rose-300" : "text-slate-800 dark:text-slate-200",
                )}
              >
                {JOB_ACTION_LABEL[a]} job {job.job_id}…
              </Menu.Item>
            ))}
          </Menu.Content>
        </Menu.Portal>
      </Menu.Root>
    </>
  );
}

/** Drain… or Resume for a Slurm node, whichever applies to its state; nothing for viewers. */
export function NodeActions({ node, className }: { node: { name: string; state: string; flags?: readonly string[] }; className?: string }) {
  const canAct = useCanAct();
  const openDialog = useOpenDialog();
  if (!canAct) return null;
  const action = nodeAction(node);
  return (
    <span className={className}>
      <ActionButton
        danger={action === "drain"}
        data-testid={`node-${action}-${node.name}`}
        onClick={() => openDialog((close) => <NodeActionDialog node={node.name} action={action} onClose={close} />)}
      >
        {action === "drain" ? "Drain…" : "Resume…"}
      </ActionButton>
    </span>
  );
}

/** "Silence…" on an alert: opens the silence dialog prefilled from it; nothing for viewers. */
export function SilenceButton({ alert }: { alert: Pick<AlertView, "id" | "rule" | "subject" | "summary"> }) {
  const canAct = useCanAct();
  const openDialog = useOpenDialog();
  if (!canAct) return null;
  return (
    <ActionButton data-testid={`silence-${alert.id}`} onClick={() => openDialog((close) => <SilenceDialog alert={alert} onClose={close} />)}>
      Silence…
    </ActionButton>
  );
}
