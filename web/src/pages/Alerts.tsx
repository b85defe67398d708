import { useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useSearchParams } from "react-router-dom";
import { api, unwrap } from "../api/client";
import { keys, useAlerts, useMe, useOverview, type AlertFilter } from "../api/queries";
import type { AlertView } from "../api/types";
import { SilenceButton } from "../components/Actions";
import { Card, Empty, ErrorBox, Loading, PageHeader, Segmented, Tone } from "../components/ui";
import { ago, clockTime } from "../lib/format";
import { roleAtLeast } from "../lib/roles";

const FILTERS: AlertFilter[] = ["firing", "pending", "resolved", "all"];

function tone(a: AlertView): "bad" | "warn" | "muted" {
  if (a.state === "firing") return a.severity === "critical" ? "bad" : "warn";
  if (a.state === "pending") return "warn";
  return "muted";
}

function Ack({ a }: { a: AlertView }) {
  const qc = useQueryClient();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  if (a.acknowledged_by) return <span className="text-xs text-slate-500">acknowledged by {a.acknowledged_by}</span>;
  if (a.state === "resolved") return null;
  return (
    <span className="flex items-center gap-2">
      {error && <span className="text-xs text-rose-600">{error}</span>}
      <button
        type="button"
        disabled={busy}
        data-testid={`ack-${a.id}`}
        onClick={async () => {
          setBusy(true);
          setError(null);
          try {
            await unwrap(api.POST("/api/v1/alerts/{alert_id}/acknowledge", { params: { path: { alert_id: a.id } } }));
          } catch (e) {
            setError(e instanceof Error ? e.message : String(e));
          } finally {
            setBusy(false);
            void qc.invalidateQueries({ queryKey: keys.alerts });
          }
        }}
        className="rounded-md border border-slate-300 px-2 py-0.5 text-xs font-medium text-slate-700 hover:bg-slate-100 disabled:opacity-50 dark:border-slate-700 dark:text-slate-200 dark:hover:bg-slate-800"
      >
        Acknowledge
      </button>
    </span>
  );
}

export default function Alerts() {
  const [params, setParams] = useSearchParams();
  const f = params.get("state");
  const filter: AlertFilter = FILTERS.includes(f as AlertFilter) ? (f as AlertFilter) : "firing";
  const alerts = useAlerts(filter);
  const overview = useOverview();
  const me = useMe();
  const canAct = roleAtLeast(me.data?.role, "operator");
  const now = Date.now() / 1000;
  return (
    <div>
      <PageHeader
        title="Alerts"
        sub={overview.data ? `${overview.data.alerts_active} active` : undefined}
        right={
          <Segmented<AlertFilter>
            label="Alert state"
            value={filter}
            options={FILTERS}
            onChange={(v) => setParams(v === "firing" ? {} : { state: v }, { replace: true })}
          />
        }
      />
      {alerts.isPending ? (
        <Loading />
      ) : alerts.isError ? (
        <ErrorBox error={alerts.error} />
      ) : alerts.data.length === 0 ? (
        <Empty title={filter === "all" ? "No alerts yet" : `No ${filter} alerts`} testid="alerts-empty">
          {filter === "firing" ? "No rule is firing right now." : "Nothing in this state."}
        </Empty>
      ) : (
        <Card>
          <ul className="divide-y divide-slate-100 dark:divide-slate-800" data-testid="alerts-list">
            {alerts.data.map((a) => (
              <li key={a.id} className="flex flex-wrap items-center gap-x-3 gap-y-1 px-4 py-3 text-sm" data-testid={`alert-${a.id}`}>
                <Tone tone={tone(a)}>
                  {a.state}
                  {a.severity ? ` · ${a.severity}` : ""}
                </Tone>
                <span className="font-medium">{a.rule}</span>
                <span className="text-slate-500">{a.subject}</span>
                <span className="basis-full text-slate-700 md:basis-auto dark:text-slate-300">{a.summary}</span>
                {a.silenced && <Tone tone="muted">silenced</Tone>}
                <span className="ml-auto flex flex-wrap items-center gap-2 text-xs text-slate-500 sm:gap-3" title={clockTime(a.started_at)}>
                  {a.state === "resolved" && a.resolved_at ? `resolved ${ago(a.resolved_at, now)}` : `since ${ago(a.started_at, now)}`}
                  {canAct ? <Ack a={a} /> : a.acknowledged_by ? <span>acknowledged by {a.acknowledged_by}</span> : null}
                  {canAct && a.state !== "resolved" && !a.silenced && <SilenceButton alert={a} />}
                </span>
              </li>
            ))}
          </ul>
        </Card>
      )}
    </div>
  );
}
