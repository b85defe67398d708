"""Answers with no LLM: the question is matched to an analyzer by what it names (a job id, a
node, a user) and what it asks (pending, waste, health, efficiency).  What needs a model is
said plainly, with the questions that work without one."""

from __future__ import annotations

import re

from gpuwarden.agent import actions, analyzers
from gpuwarden.errors import GpuwardenError
from gpuwarden.services.context import ControlPlane

ANALYZERS = {
    "pending": "why is job 42 pending?",
    "outcome": "why did job 42 fail?",
    "waste": "which GPUs are wasted and what do they cost?",
    "node": "what is wrong with node3?",
    "efficiency": "how efficient are alice's jobs?",
    "overview": "how is the cluster doing?",
    "jobs": "how many jobs are running?",
    "alerts": "which alerts are firing?",
}
NO_TOOL = re.compile(r"\b(reboot|restart|reset|reinstall|upgrade|update the driver|ssh|"
                     r"shell|run the command|priority|requeue|resize|scale|delete file|"
                     r"format)\b", re.I)
JOB = re.compile(r"\bjob(?:\s+id)?\s*#?\s*(\d+)\b", re.I)
ENDED = re.compile(r"\b(fail(s|ed|ure)?|crash(ed|es)?|die[ds]?|killed|exit(ed)?|exit code|"
                   r"error|end(ed)?|finish(ed)?|complete[ds]?|succeed(ed)?|cancel+ed|"
                   r"time[ds]? ?out|oom|out of memory|stop(ped|s)?|abort(ed|s)?|what happened|"
                   r"how did)\b", re.I)
# a question about the queue itself: how many / which jobs, what is running, squeue
QUEUE = re.compile(r"\b(how many|list|show|which|what|who|count|any|anything|is there|"
                   r"are there)\b.*\b(jobs?|queue[ds]?|running|pending|waiting)\b|\bsqueue\b|"
                   r"\bthe queue\b", re.I)
# whose jobs: "user X", "X's jobs", "jobs of X" name a user; "what is X running" and "does X
# have" may name a word instead ("what is currently running"): X counts there only when it is
# someone with jobs or no common word
OWNER = re.compile(r"\b(?:user\s+([a-z_][\w.-]*)|([a-z_][\w.-]*)'s\s+jobs?|"
                   r"jobs?\s+(?:of|for|by|from)\s+(?:user\s+)?([a-z_][\w.-]*))", re.I)
OWNER_MAYBE = re.compile(r"\b(?:what\s+(?:is|does)\s+([a-z_][\w.-]*)\s+(?:running|run|have)|"
                         r"(?:does|has)\s+([a-z_][\w.-]*)\s+(?:have|got))", re.I)
NOT_A_USER = frozenset({"the", "it", "that", "this", "there", "here", "anything", "anyone",
                        "anybody", "someone", "somebody", "everyone", "everybody", "each",
                        "every", "my", "our", "all", "any", "slurm", "gpuwarden", "cluster",
                        "node", "gpu", "which", "what", "currently", "now", "still", "actually",
                        "really", "else", "even", "also", "already", "then", "so"})
STATE_WORDS = (
    (re.compile(r"\brunning\b|\bactive\b|\bin progress\b", re.I), ("RUNNING",)),
    (re.compile(r"\bpending\b|\bqueued\b|\bwaiting\b", re.I), ("PENDING",)),
    (re.compile(r"\bfail(ed|ing|ures?)?\b", re.I), ("FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                                                       "TIMEOUT", "BOOT_FAIL")),
    (re.compile(r"\b(complete[d]?|succeeded|successful|finished ok)\b", re.I), ("COMPLETED",)),
    (re.compile(r"\bcancel+ed\b", re.I), ("CANCELLED",)),
    (re.compile(r"\btim(ed|es)? ?out\b", re.I), ("TIMEOUT",)),
)
USER = re.compile(r"\b(?:user\s+([a-z_][a-z0-9_.-]*)|([a-z_][a-z0-9_.-]*)'s\s+jobs?)", re.I)


def examples(cp: ControlPlane) -> list[str]:
    """The analyzers' example questions, naming this cluster's own pending job, a failed (or
    else finished) job, a busy node and a running job of the user with the most running
    jobs, so each one has a real
    answer; the generic wording where the cluster has none (no Slurm, an empty queue)."""
    from gpuwarden.services import slurm

    asked = dict(ANALYZERS)
    try:
        jobs = slurm.jobs(cp)
    except GpuwardenError:
        jobs = []
    pending = [j for j in jobs if j.state == "PENDING"]
    running = [j for j in jobs if j.state == "RUNNING"]
    if pending:
        asked["pending"] = f"why is job {pending[0].job_id} pending?"
    failed = [j for j in jobs if j.state in ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")]
    if failed:
        asked["outcome"] = f"why did job {failed[-1].job_id} fail?"
    elif finished := [j for j in jobs if j.state in ("COMPLETED", "CANCELLED")]:
        asked["outcome"] = f"why did job {finished[-1].job_id} end?"
    nodes = [n.name for n in cp.inventory.nodes()]
    if nodes:
        busy = {n for j in running for n in j.nodes}
        asked["node"] = f"what is wrong with {next((n for n in nodes if n in busy), nodes[0])}?"
    users = [j.user for j in running if USER.fullmatch(f"{j.user}'s jobs")]
    if users:
        top = max(sorted(set(users)), key=users.count)
        job = next(j for j in running if j.user == top)
        asked["efficiency"] = f"how efficient is {top}'s job {job.job_id}?"
    elif running:
        asked["efficiency"] = f"how efficient is job {running[0].job_id}?"
    return list(asked.values())


def _help() -> str:
    lines = "\n".join(f"- {q}" for q in ANALYZERS.values())
    return ("No LLM is configured, so I answer from gpuwarden's analyzers only. They cover:\n"
            f"{lines}\nAnything else (free-form questions, correlating several facts, proposing "
            "actions) needs an LLM: set agent.model (and agent.base_url for vLLM, Ollama or "
            "another OpenAI-compatible server) in gpuwarden.yaml.")


async def answer(cp: ControlPlane, question: str) -> str:
    try:
        result = await route(cp, question)
    except GpuwardenError as exc:
        return f"I could not answer: {exc}"
    if result is None:
        return _help()
    if isinstance(result, str):
        return result
    return result.text()


def _queue(cp: ControlPlane, q: str, nodes: list[str]) -> analyzers.Analysis:
    """The job list the question asks for: its states, its user (``OWNER``'s phrasings, or
    the user of a job named as a word), its node."""
    from gpuwarden.services import slurm

    states = frozenset(s for pattern, named in STATE_WORDS if pattern.search(q) for s in named)
    snap = slurm._snapshot(cp)  # the typed snapshot: no view of every job just for names
    slurm_nodes = {n.name for n in snap.nodes}
    users = {j.user for j in snap.jobs}
    said = actions.words(q)
    name = None
    for pattern in (OWNER, OWNER_MAYBE):
        found = pattern.search(q)
        word = next((g for g in found.groups() if g), None) if found else None
        if word is not None and word not in slurm_nodes and (
                word in users or word.lower() not in NOT_A_USER):
            name = word
            break
    if name is None:
        name = next((u for u in sorted(users) if u in said), None)
    node = next((n for n in nodes if n in slurm_nodes), None) or next(
        (w for w in sorted(actions.words(q)) if w in slurm_nodes), None)
    return analyzers.job_list(cp, states=states, user=name, node=node)


async def route(cp: ControlPlane, q: str) -> analyzers.Analysis | str | None:
    low = q.lower()
    job = JOB.search(q)
    user = USER.search(q)
    nodes = [n.name for n in cp.inventory.nodes() if n.name in actions.words(q)]
    if NO_TOOL.search(q):
        return ("gpuwarden has no tool for that: its actions are "
                + ", ".join(actions.ACTIONS) + ". Do it on the machine or in Slurm directly.")
    asked = [name for name in actions.ACTIONS if actions.user_asked(name, q)
             and not re.search(r"\b(why|what|how|which|who)\b", low)]
    if asked:
        return ("Proposing actions needs the LLM agent (set agent.model in gpuwarden.yaml), or "
                "act directly: POST /api/v1/slurm/jobs/{id}/cancel|hold|release, "
                "/api/v1/slurm/nodes/{name}/drain|resume (operator role).")
    if re.search(r"efficien|utili[sz]ation of|how (well|much) .* (use|using)", low):
        if job:
            return await analyzers.job_efficiency(cp, job_id=int(job.group(1)))
        if user:
            return await analyzers.job_efficiency(cp, user=user.group(1) or user.group(2))
    if job and ENDED.search(q) and not re.search(r"pending|waiting|queued|not (start|run)",
                                                 low):
        return await analyzers.job_outcome(cp, int(job.group(1)))
    if job and re.search(r"pending|waiting|wait|queued|stuck|not (start|run)|why", low):
        return analyzers.explain_pending(cp, int(job.group(1)))
    total_cost = re.search(r"total cost|cost per hour|how much (does|do|is) .*\bcost|"
                           r"(cluster|fleet) cost", low)
    if re.search(r"wast|idle|spend|money|\$|unused", low) or (
            "cost" in low and not total_cost):
        return analyzers.waste_report(cp)
    if re.search(r"\balerts?\b|\bfiring\b|\balarms?\b", low) and not nodes \
            and not re.search(r"\bjobs?\b", low):  # a node's alerts: its doctor says them
        return analyzers.alert_list(cp)
    if not job and QUEUE.search(q) and not re.search(r"\bwhy\b.*\b(node|gpu)|how many (gpus|nodes)",
                                                     low):
        return _queue(cp, q, nodes)
    if nodes:
        return analyzers.node_doctor(cp, nodes[0])
    if job:
        return analyzers.explain_pending(cp, int(job.group(1)))
    if re.search(r"overview|status|summary|how is|how's|health|\bdown\b|offline|"
                 r"unreachable|not answering|how many (gpus|nodes)|\bdrain|sinfo", low) \
            or total_cost:
        return analyzers.cluster_summary(cp)
    return None
