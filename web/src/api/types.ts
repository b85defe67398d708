// Types of the control plane's API, generated from web/openapi.json (npm run gen:api).
// An API change that breaks the UI fails `npm run typecheck`.
import type { components } from "./schema";

// The control plane serializes every field of a response model (defaults included), but the
// OpenAPI marks defaulted fields optional (pydantic's json_schema_serialization_defaults_required
// is off). `Out` states what the wire carries: every key present, nulls where the API allows.
type Out<T> = T extends readonly [infer A, infer B]
  ? [Out<A>, Out<B>]
  : T extends readonly (infer U)[]
    ? Out<U>[]
    : T extends object
      ? { [K in keyof T]-?: Out<T[K]> }
      : T;
type S = { [K in keyof components["schemas"]]: Out<components["schemas"][K]> };
export type Overview = S["Overview"];
export type GpuView = S["GpuView"];
export type GpuDetail = S["GpuDetail"];
export type GpuHistory = S["GpuHistory"];
export type NodeView = S["NodeView"];
export type NodeDetail = S["NodeDetail"];
export type QueryResult = S["QueryResult"];
export type Status = S["Status"];
export type Me = S["Me"];
export type SlurmQueue = S["SlurmQueue"];
export type JobRef = S["JobRef"];
export type ProcessView = S["ProcessView"];
export type GpuState = GpuView["state"];
export type Problem = S["Problem"];
export type SlurmSummary = S["SlurmSummary"];
export type SlurmJob = S["SlurmJobView"];
export type SlurmJobDetail = S["SlurmJobDetail"];
export type SlurmNode = S["SlurmNodeView"];
export type SlurmPartition = S["SlurmPartitionView"];
export type AlertView = S["AlertView"];
export type ActionResult = S["ActionResult"];
export type SilenceView = S["SilenceView"];
export type JobReport = S["JobReport"];
export type GpuUsage = S["GpuUsage"];
export type ReportGrade = S["Grade"];
export type ReportNote = S["ReportNote"];
export type EfficiencyReport = S["EfficiencyReport"];
export type EfficiencyRow = S["EfficiencyRow"];
export type ReclaimPlan = S["ReclaimPlan"];
export type ReclaimCandidate = S["ReclaimCandidate"];
export type ReclaimNode = S["ReclaimNode"];
export type ReclaimEvent = S["ReclaimEvent"];
