"""Slurm actions (submit, cancel, hold, release, requeue, drain, resume), validated before anything
runs. Arguments travel as single argv elements (``--name=value``); the job script goes to
sbatch on stdin; nothing reaches a shell."""

from __future__ import annotations

import math
import pwd
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from gpuwarden.slurm.adapter import SlurmAdapter
from gpuwarden.slurm.errors import CommandFailed, ValidationError, classify_failure
from gpuwarden.slurm.gres import parse_gres
from gpuwarden.slurm.model import NodeInfo
from gpuwarden.slurm.runner import CommandResult

_JOB_ID_RE = re.compile(r"^[1-9][0-9]{0,9}(?:_[0-9]{1,7})?$")
_MPI_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_GRES_RE = re.compile(r"^[A-Za-z0-9_:,()-]{1,200}$")
_TIME_RE = re.compile(r"^(?:\d+-\d{1,2}(?::\d{1,2}){0,2}|\d+(?::\d{1,2}){0,2}|UNLIMITED|INFINITE)$")
_MEM_RE = re.compile(r"^\d+[KMGT]?$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_TEXT = 256
MAX_SCRIPT = 1_000_000


@dataclass(frozen=True)
class SubmitOptions:
    """sbatch options gpuwarden lets callers set."""

    name: str | None = None
    partition: str | None = None
    nodes: int | None = None
    ntasks: int | None = None
    cpus_per_task: int | None = None
    gres: str | None = None
    gpus: int | None = None
    gpus_per_node: int | None = None
    time: str | None = None
    mem: str | None = None
    comment: str | None = None
    workdir: str | None = None
    output: str | None = None
    nodelist: tuple[str, ...] = field(default_factory=tuple)
    hold: bool = False
    user: str | None = None  # run the job as this Unix user (sbatch --uid; the submitter is root)
    account: str | None = None  # the Slurm account to charge (sbatch --account)
    qos: str | None = None  # the QOS to run under (sbatch --qos)
    exclusive: bool = False  # the whole node(s), shared with no other job (sbatch --exclusive)


def validate_job_id(value: object, field_name: str = "job_id") -> str:
    """A positive integer job id (or ``123_4`` for one array task), as a string."""
    if isinstance(value, bool):
        value = None
    text = str(value).strip() if isinstance(value, int | str) else ""
    if not _JOB_ID_RE.match(text):
        raise ValidationError(field_name, f"{value!r} is not a job id",
                              "give a positive integer such as 1234 (or 1234_5 for an "
                              "array task)")
    return text


def validate_text(value: str, field_name: str, *, max_len: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise ValidationError(field_name, f"{value!r} is not text", "give a string")
    if _CONTROL_RE.search(value):
        raise ValidationError(field_name, "contains control characters or newlines",
                              "use a single line of printable text")
    if len(value) > max_len:
        raise ValidationError(field_name, f"is {len(value)} characters long",
                              f"keep it under {max_len} characters")
    return value


def _positive(value: object, field_name: str, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(field_name, f"{value!r} is not a positive integer",
                              "give a whole number of 1 or more")
    if upper is not None and value > upper:
        raise ValidationError(field_name, f"{value} is more than the cluster has ({upper})",
                              f"ask for at most {upper}")
    return value


class SlurmActions:
    """Validated Slurm actions for one cluster."""

    def __init__(self, adapter: SlurmAdapter, *, submit_timeout: float = 30.0) -> None:
        self.adapter = adapter
        self.submit_timeout = submit_timeout

    # ---- jobs -------------------------------------------------------------------------
    def submit(self, script: str, options: SubmitOptions | None = None) -> int:
        """Submit ``script`` (passed on stdin) and return the job id."""
        opts = options or SubmitOptions()
        args = self.submit_args(script, opts)
        result = self.adapter.run("sbatch", args, stdin=script, timeout=self.submit_timeout)
        first = result.stdout.strip().split(";", 1)[0]
        if not first.isdigit():
            raise CommandFailed(f"sbatch returned no job id: {result.stdout.strip()!r}",
                                command="sbatch", stderr=result.stderr)
        return int(first)

    def submit_args(self, script: str, opts: SubmitOptions) -> list[str]:
        """Validate and build the sbatch argv (without the command itself)."""
        if not isinstance(script, str) or not script.startswith("#!"):
            raise ValidationError("script", "does not start with an interpreter line",
                                  "begin the script with #!/bin/bash")
        if len(script) > MAX_SCRIPT or "\x00" in script:
            raise ValidationError("script", "is too large or contains NUL bytes",
                                  f"keep it under {MAX_SCRIPT} bytes of text")
        info: NodeInfo | None = None

        def cluster() -> NodeInfo:
            nonlocal info
            if info is None:
                info = self.adapter.nodes()
            return info

        args = ["--parsable"]
        if opts.name is not None:
            args.append(f"--job-name={validate_text(opts.name, 'name', max_len=200)}")
        if opts.partition is not None:
            args.append(f"--partition={self._partition(opts.partition, cluster())}")
        if opts.nodes is not None:
            args.append(f"--nodes={_positive(opts.nodes, 'nodes', len(cluster().nodes))}")
        if opts.ntasks is not None:
            args.append(f"--ntasks={_positive(opts.ntasks, 'ntasks')}")
        if opts.cpus_per_task is not None:
            args.append(f"--cpus-per-task={_positive(opts.cpus_per_task, 'cpus_per_task')}")
        if opts.gres is not None:
            args.append(f"--gres={self._gres(opts.gres)}")
        if opts.gpus is not None:
            args.append(f"--gpus={_positive(opts.gpus, 'gpus')}")
        if opts.gpus_per_node is not None:
            args.append(f"--gpus-per-node={_positive(opts.gpus_per_node, 'gpus_per_node')}")
        if opts.time is not None:
            if not isinstance(opts.time, str) or not _TIME_RE.match(opts.time):
                raise ValidationError("time", f"{opts.time!r} is not a Slurm time limit",
                                      "use minutes, HH:MM:SS or D-HH:MM:SS")
            args.append(f"--time={opts.time}")
        if opts.mem is not None:
            if not isinstance(opts.mem, str) or not _MEM_RE.match(opts.mem):
                raise ValidationError("mem", f"{opts.mem!r} is not a memory size",
                                      "use a number with an optional K/M/G/T suffix")
            args.append(f"--mem={opts.mem}")
        if opts.comment is not None:
            args.append(f"--comment={validate_text(opts.comment, 'comment')}")
        if opts.exclusive is True:
            args.append("--exclusive")
        for key in ("account", "qos"):  # sbatch refuses one Slurm does not know, by name
            value = getattr(opts, key)
            if value is not None and (not isinstance(value, str) or not _NAME_RE.match(value)):
                raise ValidationError(key, f"{value!r} is not a Slurm {key} name",
                                      "give a name such as gpu-lab (letters, digits, . _ -)")
            if value is not None:
                args.append(f"--{key}={value}")
        for key, flag in (("workdir", "--chdir"), ("output", "--output")):
            value = getattr(opts, key)
            if value is not None:
                validate_text(value, key, max_len=1024)
                if not value.startswith("/"):
                    raise ValidationError(key, f"{value!r} is not an absolute path",
                                          "give a path starting with /")
                args.append(f"{flag}={value}")
        if opts.nodelist:
            names = [self._node(n, cluster(), "nodelist") for n in opts.nodelist]
            args.append(f"--nodelist={','.join(names)}")
        if opts.hold:
            args.append("--hold")
        if opts.user is not None:
            if not isinstance(opts.user, str) or not _USER_RE.match(opts.user):
                raise ValidationError("user", f"{opts.user!r} is not a Unix user name",
                                      "give a name such as alice (lowercase letters, digits, "
                                      "_ and -)")
            try:  # sbatch --uid alone keeps root's group: run in the user's own
                gid = pwd.getpwnam(opts.user).pw_gid
            except KeyError:
                raise ValidationError("user", f"{opts.user!r} is not a user here",
                                      "create the user on the Slurm machines, or give an "
                                      "existing one") from None
            args += [f"--uid={opts.user}", f"--gid={gid}"]
        return args

    def cancel(self, job_id: int | str) -> None:
        """Cancel a job. Raises BadRequest for an unknown or finished job (scancel exits 0
        then and says so only with --verbose)."""
        argv = ["--verbose", validate_job_id(job_id)]
        result = self.adapter.run("scancel", argv)
        if "error:" in result.stderr:
            raise classify_failure(["scancel", *argv], result.returncode, result.stderr)

    def hold(self, job_id: int | str) -> None:
        self.adapter.run("scontrol", ["hold", validate_job_id(job_id)])

    def release(self, job_id: int | str) -> None:
        self.adapter.run("scontrol", ["release", validate_job_id(job_id)])

    def requeue(self, job_id: int | str) -> None:
        """Stop a running job and put it back in the queue (its GPUs are freed)."""
        self.adapter.run("scontrol", ["requeue", validate_job_id(job_id)])

    def admin_comment(self, job_id: int | str, text: str) -> None:
        """Set a job's AdminComment in Slurm's accounting, as Jobstats does: ``sacctmgr
        modify job`` (``scontrol update`` refuses a job that has ended; needs slurmdbd, and
        an admin of it: root or SlurmUser)."""
        comment = validate_text(text, "comment", max_len=1024).strip()
        if not comment:
            raise ValidationError("comment", "is empty", "give the text to write")
        if '"' in comment:  # sacctmgr's parser drops or truncates at a double quote
            raise ValidationError("comment", "contains a double quote, which sacctmgr "
                                  "mangles", "use single quotes")
        self.adapter.run("sacctmgr", ["-i", "modify", "job", "where",
                                      f"jobid={validate_job_id(job_id)}", "set",
                                      f"AdminComment={comment}"])

    def requeuehold(self, job_id: int | str) -> None:
        """Requeue and hold: it waits for ``release`` instead of starting again."""
        self.adapter.run("scontrol", ["requeuehold", validate_job_id(job_id)])

    # ---- nodes ------------------------------------------------------------------------
    def drain(self, node: str, reason: str) -> None:
        """Drain ``node`` (running jobs finish, no new ones start) with ``reason``."""
        text = validate_text(reason, "reason").strip()
        if not text:
            raise ValidationError("reason", "is empty", "say why the node is drained")
        if '"' in text:  # scontrol's own parser drops or truncates at a double quote
            raise ValidationError("reason", "contains a double quote, which scontrol mangles",
                                  "use single quotes")
        name = self._node(node, self.adapter.nodes())
        self.adapter.run("scontrol", ["update", f"NodeName={name}", "State=DRAIN",
                                      f"Reason={text}"])

    def resume(self, node: str) -> None:
        name = self._node(node, self.adapter.nodes())
        self.adapter.run("scontrol", ["update", f"NodeName={name}", "State=RESUME"])

    # ---- steps ------------------------------------------------------------------------
    def step(self, nodes: Sequence[str], tasks_per_node: int, command: Sequence[str], *,
             job_id: int | str | None = None, mpi: str | None = None,
             gpus_per_node: int | None = None, wait: int = 10,
             timeout: float = 900.0) -> CommandResult:
        """Run ``command`` as one ``srun`` step over ``nodes``, ``tasks_per_node`` tasks on
        each, and return its exit status and output whatever they are.  Inside the job
        ``job_id`` (one that holds the nodes) the step overlaps it; else it is an exclusive
        allocation of its own that gives up after ``wait`` seconds when the nodes are not
        free (``--immediate``), so it never waits behind or disturbs running work.
        ``gpus_per_node`` asks for the GPUs too (``--gpus-per-node``); ``mpi`` is Slurm's MPI
        plugin (``--mpi=pmix``; default: the cluster's MpiDefault).  Outside a job the step
        runs in a partition that holds every one of ``nodes`` (the default one when it
        does)."""
        info = self.adapter.nodes()
        names = [self._node(n, info, f"nodes[{i}]") for i, n in enumerate(nodes)]
        if not names or len(set(names)) != len(names):
            raise ValidationError("nodes", "is empty or names a node twice",
                                  "give each node once")
        tasks = _positive(tasks_per_node, "tasks_per_node", 1024)
        # Slurm ends the step itself at its time limit: killing srun at ``timeout`` would
        # leave the step (and an allocation of its own) running
        minutes = max(1, math.ceil(timeout / 60) - 1)
        argv = [f"--nodes={len(names)}", f"--nodelist={','.join(names)}",
                f"--ntasks-per-node={tasks}", "--kill-on-bad-exit=1", f"--time={minutes}"]
        if job_id is not None:
            argv += [f"--jobid={validate_job_id(job_id)}", "--overlap"]
        else:
            # srun's default partition need not hold the nodes (a lab's second partition):
            # the step asks for one that holds them all
            argv += ["--exclusive", f"--immediate={_positive(wait, 'wait')}",
                     f"--partition={_shared_partition(names, info)}"]
            if gpus_per_node is not None:
                argv.append(f"--gpus-per-node={_positive(gpus_per_node, 'gpus_per_node')}")
        if mpi is not None:
            if not isinstance(mpi, str) or not _MPI_RE.fullmatch(mpi):
                raise ValidationError("mpi", f"{mpi!r} is not an MPI plugin name",
                                      "use one srun --mpi=list shows, such as pmix or pmi2")
            argv.append(f"--mpi={mpi}")
        return self.adapter.run("srun", [*argv, *command], timeout=timeout, check=False)

    # ---- checks -----------------------------------------------------------------------
    @staticmethod
    def _node(node: object, info: NodeInfo, field_name: str = "node") -> str:
        known = [n.name for n in info.nodes]
        if not isinstance(node, str) or not _NAME_RE.match(node) or node not in known:
            raise ValidationError(field_name, f"{node!r} is not a node of this cluster",
                                  f"use one of: {', '.join(known) or '(no nodes)'}")
        return node

    @staticmethod
    def _partition(partition: object, info: NodeInfo) -> str:
        known = [p.name for p in info.partitions]
        if not isinstance(partition, str) or partition not in known:
            raise ValidationError("partition", f"{partition!r} is not a partition",
                                  f"use one of: {', '.join(known) or '(no partitions)'}")
        return partition

    @staticmethod
    def _gres(gres: object) -> str:
        if not isinstance(gres, str) or not _GRES_RE.match(gres):
            raise ValidationError("gres", f"{gres!r} is not a GRES request",
                                  "use a form such as gpu:2 or gpu:a100:1")
        try:
            parse_gres(gres)
        except Exception as exc:
            raise ValidationError("gres", f"{gres!r} is not a GRES request ({exc})",
                                  "use a form such as gpu:2 or gpu:a100:1") from exc
        return gres


SUBMIT_OPTION_NAMES = tuple(f.name for f in fields(SubmitOptions))


def shared_partition(nodes: Sequence[str], of: Mapping[str, Sequence[str]],
                     default: str | None = None) -> str | None:
    """A partition that holds every one of ``nodes`` (``of``: each node's partitions),
    ``default`` when it does; None when they share none."""
    common = set(of.get(nodes[0], ())) if nodes else set()
    for name in nodes[1:]:
        common &= set(of.get(name, ()))
    if not common:
        return None
    return default if default in common else min(common)


def _shared_partition(names: Sequence[str], info: NodeInfo) -> str:
    of = {n.name: n.partitions for n in info.nodes}
    default = next((p.name for p in info.partitions if p.default), None)
    found = shared_partition(names, of, default)
    if found is None:
        raise ValidationError("nodes", f"{', '.join(names)} share no partition",
                              "run a step over nodes of one partition")
    return found
