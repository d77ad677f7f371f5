"""A real one-node Slurm on this machine, for tests and for trying the cluster path by hand (issue 33).

    python scripts/slurm_local.py up [FOLDER]     # make slurm-up: start it, print the `export SLURM_CONF=...` line
    python scripts/slurm_local.py down [FOLDER]   # make slurm-down: cancel its jobs, stop its daemons by PID

Debian's packages (``apt-get install slurmctld slurmd slurm-client munge``, Slurm 22.05) and root are needed; no
systemd. ``up`` writes a munge key and a one-node ``slurm.conf`` into FOLDER (default ``.slurm``), starts munged,
slurmctld and slurmd as background processes (their PIDs in ``FOLDER/pids.json``), and waits until ``sinfo``
says the node is idle (about 20 s on 2 cores). Client commands find this cluster through ``SLURM_CONF``, never
through DNS. The settings and why (each learnt on Slurm 22.05 from Debian, one node):

- munged refuses a socket folder that is not 0755, so it gets its own (``FOLDER/munge``); the key is 0400.
- spool and state folders are plain paths: a path with ``%n`` is not created by slurmd.
- ``select/cons_tres`` with ``CR_Core`` runs several jobs on the node (``select/linear`` runs one per node).
- ``proctrack/linuxproc`` and ``task/none`` avoid cgroups (a container has none to give).
- ``AuthInfo=...cred_expire=5`` and ``SchedulerParameters=sched_interval=1,bf_interval=1``: a requeued job
  starts again within seconds, not ~2 minutes.
- ``FirstJobId`` is random and the ports are free ones, so two clusters (two pytest-xdist workers) coexist, and
  DDP rendezvous ports derived from job ids do not collide.
- No accounting (no slurmdbd): ``sacct`` fails here, as on a cluster without accounting.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "squeue", "sbatch", "srun", "scontrol", "scancel")
PARTITION = "debug"


def node_name() -> str:
    """The node is named after this host, so that the job's node list names a host DDP ranks can reach."""
    return socket.gethostname().split(".")[0]


def missing_programs() -> list[str]:
    """The programs a local Slurm needs that are not installed (empty: all there)."""
    return [name for name in (*DAEMONS, *CLIENTS)
            if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]


def unavailable_reason() -> str | None:
    """Why a local Slurm cannot start here, or None."""
    missing = missing_programs()
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing): apt-get install -y --no-install-recommends "
                "slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd runs jobs as their users)"
    return None


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Cluster:
    """A running local Slurm: its folder, slurm.conf and daemons' PIDs."""

    folder: Path
    pids: dict[str, int]

    @property
    def conf(self) -> Path:
        return self.folder / "slurm.conf"

    def env(self, base: dict | None = None) -> dict[str, str]:
        """``base`` (default os.environ) with SLURM_CONF set to this cluster's slurm.conf."""
        return {**(os.environ if base is None else base), "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(list(command), env=self.env(), capture_output=True, text=True, check=check,
                              timeout=timeout)

    def node_state(self) -> str:
        done = self.run("sinfo", "-h", "-n", node_name(), "-o", "%T", check=False, timeout=20)
        return done.stdout.strip() if done.returncode == 0 else ""

    def job_ids(self) -> list[str]:
        done = self.run("squeue", "-h", "-o", "%i", check=False, timeout=20)
        return done.stdout.split() if done.returncode == 0 else []

    def log_tail(self, lines: int = 20) -> str:
        parts = []
        for name in DAEMONS:
            log = self.folder / f"{name}.log"
            if log.exists():
                parts.append(f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def save(self) -> None:
        (self.folder / "pids.json").write_text(json.dumps(self.pids))

    @classmethod
    def load(cls, folder: Path) -> Cluster | None:
        try:
            pids = json.loads((folder / "pids.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(folder.absolute(), {name: int(pid) for name, pid in pids.items()})

    def alive(self) -> bool:
        return bool(self.pids) and all(_alive(pid) for pid in self.pids.values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of this process counts as gone
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def write_config(folder: Path, cpus: int) -> Path:
    """munge key and folders, slurm.conf; returns slurm.conf."""
    for sub in ("munge", "state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(folder / "munge", 0o755)  # munged refuses a socket folder that is not 0755
    key = folder / "munge" / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    host = node_name()
    suffix = f"{os.getpid()}{random.randrange(1000)}"
    lines = [
        f"ClusterName=local{suffix}"[:40],
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={folder / 'munge' / 'munge.socket'},cred_expire=5",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        f"FirstJobId={random.randrange(1000, 50000)}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=1,bf_interval=1",
        "SlurmdParameters=config_overrides",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "InactiveLimit=0",
        "KillWait=30",
        "MailProg=/bin/true",
        f"PlugStackConfig={folder / 'plugstack.conf'}",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
    ]
    (folder / "plugstack.conf").write_text("")
    conf = folder / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def up(folder: Path, cpus: int | None = None, timeout: float = 120) -> Cluster:
    """Start munged, slurmctld and slurmd for a one-node cluster in ``folder``; wait until the node is idle.
    Raises RuntimeError (with the daemons' log tails) when it does not come up; nothing is left running then."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    folder = folder.absolute()
    existing = Cluster.load(folder)
    if existing is not None and existing.alive():
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("state", "spool"):  # a fresh cluster: slurmctld refuses another cluster's state
        shutil.rmtree(folder / stale, ignore_errors=True)
    for name in DAEMONS:
        (folder / f"{name}.log").unlink(missing_ok=True)
    conf = write_config(folder, cpus or os.cpu_count() or 1)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munge = folder / "munge"
    commands = {
        "munged": [_program("munged"), "-F", "--force", f"--socket={munge / 'munge.socket'}",
                   f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'munged.pid'}",
                   f"--log-file={folder / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}"],
        "slurmctld": [_program("slurmctld"), "-D", "-i", "-f", str(conf)],
        "slurmd": [_program("slurmd"), "-D", "-N", node_name(), "-f", str(conf)],
    }
    cluster = Cluster(folder, {})
    try:
        for name, command in commands.items():
            with open(folder / f"{name}.out", "ab") as out:
                process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
            cluster.pids[name] = process.pid
            cluster.save()
            if name == "munged":
                _wait(lambda: (munge / "munge.socket").exists(), 30, "munged's socket", cluster)
        _wait(lambda: cluster.node_state() == "idle", timeout, f"node {node_name()} idle", cluster)
    except BaseException:
        down(folder)
        raise
    return cluster


def _wait(condition, timeout: float, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        dead = [name for name, pid in cluster.pids.items() if not _alive(pid)]
        if dead or time.monotonic() > deadline:
            why = f"{', '.join(dead)} exited" if dead else f"no {what} after {timeout:.0f} s"
            raise RuntimeError(f"local Slurm did not start: {why}\n{cluster.log_tail()}")
        time.sleep(0.5)


def down(folder: Path, timeout: float = 60) -> None:
    """Cancel the cluster's jobs, wait for them to end, then stop its daemons by PID (SIGTERM, then SIGKILL)."""
    folder = folder.absolute()
    cluster = Cluster.load(folder)
    if cluster is None:
        return
    if cluster.alive():
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            cluster.run("scancel", "--full", *cluster.job_ids(), check=False, timeout=20) if cluster.job_ids() else None
            deadline = time.monotonic() + timeout
            while cluster.job_ids() and time.monotonic() < deadline:
                time.sleep(0.5)
    for name in reversed(DAEMONS):  # slurmd, slurmctld, then munged
        pid = cluster.pids.get(name)
        if pid is None or not _alive(pid):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (folder / "pids.json").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("folder", nargs="?", type=Path, default=Path(".slurm"))
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the node (default: this machine's)")
    args = parser.parse_args(argv)
    if args.action == "down":
        down(args.folder)
        print(f"local Slurm in {args.folder.absolute()} stopped")
        return 0
    try:
        cluster = up(args.folder, args.cpus)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"local Slurm up (node {node_name()}, partition {PARTITION}); in your shell:\n"
          f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
