"""The suite on SLURM: one ``sbatch`` job per (task, seed), a submission
record, and a collection step that records the jobs that finished.

Each job is a batch script in its work dir, kept for reruns by hand, whose one
``srun`` step starts ``tools/train.py --launcher slurm`` on every GPU of the
allocation (the srun line of tools/slurm_train.sh); an evaluation task (k-NN,
a test of another task's checkpoint) asks for one GPU and runs its tool once. ``sbatch`` returns at once
and takes ``--dependency``; tools/slurm_train.sh calls ``srun`` outside an
allocation, which holds the caller until the job ends, so it cannot be
submitted and left. A job that consumes another's output waits for it
(``afterok``). ``collect`` records a job only when SLURM says it completed and
its ``result.json`` is final (``suite.runner.final_result``).
"""

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.engine.results import write_json
from suite.runner import (
    REPO,
    TASK_INPUTS,
    TASK_SPECS,
    Job,
    check_request,
    final_result,
    make_record,
    plan_jobs,
    prepare_suite,
    record_path,
    resolve_tasks,
)

# Job states in which a job may still run (squeue/sacct "JOB STATE CODES").
ACTIVE_STATES = {
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING",
    "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD",
}  # fmt: skip
UNKNOWN = "UNKNOWN"  # sacct has no such job


@dataclass(frozen=True)
class SlurmResources:
    """What each job asks for: ``nodes`` x ``gpus_per_node`` processes, one per GPU."""

    partition: str
    nodes: int = 1
    gpus_per_node: int = 8
    cpus_per_task: int = 10
    sbatch_args: tuple[str, ...] = ()  # extra sbatch options (--time, --account, --qos, ...), they win


def srun_command(job: Job, python: str = sys.executable) -> list[str]:
    """Training: one process per GPU of the allocation; one dies, all stop
    (tools/slurm_train.sh's srun options). An evaluation: its tool, once."""
    config, *options = job.tool_args
    if not job.spec.trains:
        return ["srun", "--ntasks=1", python, "-u", str(REPO / "tools" / job.spec.tool), config, *options]
    train = [python, "-u", str(REPO / "tools/train.py"), config, "--launcher", "slurm", *options]
    return ["srun", "--kill-on-bad-exit=1", *train]


def job_script(job: Job, resources: SlurmResources, python: str = sys.executable) -> str:
    """The batch script of ``job``: its resources as #SBATCH lines and one srun step."""
    lines = [
        "#!/usr/bin/env bash",
        f"# tools/run_suite.py --launcher slurm: {job.task}, seed {job.seed}, record {job.key}",
        f"#SBATCH --job-name=suite-{job.task}-s{job.seed}",
        f"#SBATCH --partition={resources.partition}",
        f"#SBATCH --nodes={resources.nodes if job.spec.trains else 1}",
        f"#SBATCH --ntasks-per-node={resources.gpus_per_node if job.spec.trains else 1}",
        f"#SBATCH --gres=gpu:{resources.gpus_per_node if job.spec.trains else 1}",
        f"#SBATCH --cpus-per-task={resources.cpus_per_task}",
        f"#SBATCH --output={job.work_dir}/slurm-%j.out",
        "#SBATCH --open-mode=append",
        "set -euo pipefail",
        f"cd {shlex.quote(str(REPO))}",
        f"export PYTHONPATH={shlex.quote(str(REPO))}",
        shlex.join(srun_command(job, python)),
    ]
    return "\n".join(lines) + "\n"


def _run_slurm_tool(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise RuntimeError(f"{cmd[0]} is not on PATH: run this on a SLURM login node") from None
    if done.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def sbatch(args: list[str]) -> str:
    """Submit; returns the job id (``sbatch --parsable`` prints ``id[;cluster]``)."""
    out = _run_slurm_tool(["sbatch", "--parsable", *args]).strip()
    job_id = out.split(";")[0]
    if not job_id.isdigit():
        raise RuntimeError(f"sbatch --parsable {shlex.join(args)} printed {out!r}, not a job id")
    return job_id


def job_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """job id -> (state, exit code) from sacct, for the jobs it knows."""
    if not job_ids:
        return {}
    out = _run_slurm_tool(
        ["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={','.join(job_ids)}",
         "--format=JobID,State,ExitCode"]
    )  # fmt: skip
    states = {}
    for line in out.splitlines():
        if line.strip():
            job_id, state, exit_code = line.strip().split("|")[:3]
            states[job_id] = (state.split()[0], exit_code)  # "CANCELLED by 1234" -> CANCELLED
    return states


def submissions_dir(out: Path) -> Path:
    return out / "slurm"


def latest_submissions(out: Path) -> dict[str, dict]:
    """record key -> its latest submitted job, over every submission record."""
    entries = []
    for path in submissions_dir(out).glob("submitted-*.json"):
        entries += json.loads(path.read_text())["jobs"]
    return {e["key"]: e for e in sorted(entries, key=lambda e: e["submitted_at"])}


def submit_suite(
    checkpoint: str,
    out: Path,
    preset: str,
    tasks: tuple[str, ...],
    data: dict[str, Path],
    resources: SlurmResources,
    *,
    label: str | None = None,
    select: str = "student",
    trust_pickle: bool = False,
    amp: str | None = None,
    seeds: list[int] | None = None,
    cfg_options: list[str] | tuple[str, ...] = (),
    allow_batch_change: bool = False,
    inputs: dict[str, tuple[str, ...]] = TASK_INPUTS,
) -> Path | None:
    """Submit one job per (task, seed) not recorded and not queued already;
    a job waits (afterok) for the jobs of the tasks whose output it reads
    (``inputs``, same seed). Writes and returns the submission record
    (None when there was nothing to submit)."""
    check_request(preset, tasks, data)
    world_size = resources.nodes * resources.gpus_per_node
    setups = resolve_tasks(preset, tasks, world_size, cfg_options, allow_batch_change, amp, inputs)
    backbone, label = prepare_suite(checkpoint, out, select, trust_pickle, label)
    jobs = plan_jobs(
        backbone, out, preset, tasks, data, resources.gpus_per_node, label, amp, nodes=resources.nodes,
        seeds=seeds, cfg_options=cfg_options, setups=setups,
    )  # fmt: skip
    # jobs that finished since the last submission are recorded now, not submitted again
    found = collect(out) if latest_submissions(out) else Collection()
    queued = {entry["key"]: (entry["job_id"], state) for entry, state in waiting_jobs(found.pending)}
    job_ids: dict[tuple[str, int], str] = {}  # (task, seed) -> the job that produces its output
    entries: list[dict] = []
    try:
        for job in jobs:
            name = f"{label}: {job.task} seed {job.seed}"
            if record_path(out, job.key).exists():
                print(f"[suite] {name} recorded, skipped", flush=True)
            elif job.key in queued:
                job_id, state = queued[job.key]
                job_ids[job.task, job.seed] = job_id
                print(f"[suite] {name} already queued as job {job_id} ({state}), not submitted again", flush=True)
            else:
                after = [job_ids[p, job.seed] for p in inputs.get(job.task, ()) if (p, job.seed) in job_ids]
                entry = submit_job(job, resources, after)
                job_ids[job.task, job.seed] = entry["job_id"]
                entries.append(entry)
                print(f"[suite] {name}: job {entry['job_id']}, {entry['config']}, batch {entry['batch']}", flush=True)
    finally:
        path = None
        if entries:  # even when a later sbatch failed: these jobs are queued
            # one file per submission, never overwritten (two may come within a second)
            stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}-{os.getpid()}"
            path = submissions_dir(out) / f"submitted-{stamp}.json"
            write_json(path, {"partition": resources.partition, "jobs": entries})
    return path


def waiting_jobs(pending: list[tuple[dict, str]]) -> list[tuple[dict, str]]:
    """The queued jobs that can still start: a job waiting for one that ended
    other than COMPLETED never starts (SLURM: DependencyNeverSatisfied); it is
    named here and submitted again."""
    dependencies = job_states(sorted({job_id for entry, _ in pending for job_id in entry["depends_on"]}))
    waiting = []
    for entry, state in pending:
        dead = [
            j for j in entry["depends_on"] if dependencies.get(j, (UNKNOWN,))[0] not in {*ACTIVE_STATES, "COMPLETED"}
        ]
        if dead:
            print(
                f"[suite] job {entry['job_id']} ({entry['task']} seed {entry['seed']}) waits for job(s) "
                f"{', '.join(dead)}, which did not complete, so it can never start: submitting it again; "
                f"cancel the old one with: scancel {entry['job_id']}",
                flush=True,
            )
        else:
            waiting.append((entry, state))
    return waiting


def submit_job(job: Job, resources: SlurmResources, after: list[str]) -> dict:
    """Write ``job``'s batch script and submit it, after the jobs ``after`` succeed."""
    job.work_dir.mkdir(parents=True, exist_ok=True)
    script = job.work_dir / "slurm_job.sh"
    script.write_text(job_script(job, resources))
    args = [f"--dependency=afterok:{':'.join(after)}"] if after else []
    args += [*resources.sbatch_args, str(script)]
    job_id = sbatch(args)
    return dict(
        key=job.key,
        task=job.task,
        seed=job.seed,
        job_id=job_id,
        depends_on=after,
        work_dir=str(job.work_dir),
        script=str(script),
        sbatch=shlex.join(["sbatch", "--parsable", *args]),
        config=job.setup.config.name,
        batch=job.setup.arithmetic,
        reproduce=shlex.join(srun_command(job)),
        record_fields=job.record_fields,
        submitted_at=time.time(),
    )


@dataclass
class Collection:
    """What ``collect`` found: records written now, and jobs not recorded."""

    recorded: list[dict] = field(default_factory=list)
    already_recorded: int = 0
    pending: list[tuple[dict, str]] = field(default_factory=list)  # (job, state)
    failed: list[tuple[dict, str]] = field(default_factory=list)  # (job, why it is not recorded)


def collect(out: Path) -> Collection:
    """Record every submitted job that completed with a final ``result.json``;
    list the ones still queued or running, and the failed, interrupted or
    incomplete ones, without recording them."""
    entries = latest_submissions(out)
    if not entries:
        raise FileNotFoundError(f"no submission record in {submissions_dir(out)}: submit with --launcher slurm first")
    found = Collection()
    waiting = {k: e for k, e in entries.items() if not record_path(out, k).exists()}
    found.already_recorded = len(entries) - len(waiting)
    states = job_states([e["job_id"] for e in waiting.values()])
    for key, entry in waiting.items():
        state, exit_code = states.get(entry["job_id"], (UNKNOWN, ""))
        work_dir = Path(entry["work_dir"])
        log = work_dir / f"slurm-{entry['job_id']}.out"
        if state in ACTIVE_STATES:
            found.pending.append((entry, state))
        elif state == UNKNOWN:
            found.failed.append((entry, "sacct knows no such job (submitted seconds ago: collect again later; "
                                        "purged from accounting: submit again)"))  # fmt: skip
        elif state != "COMPLETED":
            found.failed.append((entry, f"{state} (exit code {exit_code}); log {log}. Submit again: the run "
                                        "resumes from its last checkpoint in its work dir"))  # fmt: skip
        else:
            try:
                result = final_result(work_dir, TASK_SPECS[entry["task"]].trains)
            except RuntimeError as err:
                found.failed.append((entry, f"COMPLETED, but {err}"))
                continue
            record = make_record(
                result, entry["record_fields"], entry["reproduce"], launcher="slurm", slurm_job_id=entry["job_id"],
                slurm_script=entry["script"],
            )  # fmt: skip
            write_json(record_path(out, key), record)
            found.recorded.append(record)
    return found
