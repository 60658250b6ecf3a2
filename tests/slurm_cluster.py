"""A real two-node Slurm cluster on localhost for the Slurm tests (Debian's packages).

``LocalSlurm().start()`` installs slurmctld, slurmd, slurm-client and munge with apt-get when they
are missing, writes a slurm.conf for this machine split into two nodes (``node1``, ``node2``: one
slurmd each, on their own ports, both at 127.0.0.1; each with half the CPUs and memory and one fake
GPU gres, so GPU and multi-node requests are scheduled as on a cluster), starts munged, slurmctld
and the slurmds, and waits until the nodes are idle. ``stop()`` stops only the daemons it started.
Needs root (as on CI).

    python -m tests.slurm_cluster start|stop|status
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
STATE = Path("/tmp/pipeline-slurm")
NODES = ("node1", "node2")
SLURMD_PORT0 = 17001


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


def ensure_packages() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0:
        raise RuntimeError("installing Slurm needs root (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-qq", *PACKAGES], env=env)


def _wait(predicate, timeout: float, message: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise RuntimeError(message)
        time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # a zombie leader still counts as alive for killpg; reap it if it is our child
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True).returncode == 0


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 1024  # leave 1 GiB to the system
    raise RuntimeError("no MemTotal in /proc/meminfo")


class LocalSlurm:
    def __init__(self, state: Path = STATE):
        self.state = state
        self.host = socket.gethostname().split(".")[0]

    def write_config(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        for sub in ("spool", "log", *(f"slurmd-{n}" for n in NODES)):
            (self.state / sub).mkdir(exist_ok=True)
        # Two fake GPUs: slurmd wants character devices behind a gres File= (it then exports
        # CUDA_VISIBLE_DEVICES to the jobs); nodes with the numbers of /dev/null and /dev/zero do.
        gpus = [self.state / "gpu0", self.state / "gpu1"]
        for g, minor in zip(gpus, (3, 5)):
            if g.exists() and not g.is_char_device():
                g.unlink()
            if not g.exists():
                os.mknod(g, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        cpus = max(1, (os.cpu_count() or 2) // len(NODES))
        memory = _memory_mb() // len(NODES)
        nodes = "\n".join(
            f"NodeName={n} NodeHostname={self.host} NodeAddr=127.0.0.1 Port={SLURMD_PORT0 + i} CPUs={cpus} "
            f"RealMemory={memory} Gres=gpu:1 State=UNKNOWN"
            for i, n in enumerate(NODES)
        )
        conf = f"""ClusterName=pipeline
SlurmctldHost={self.host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
ReturnToService=2
SlurmctldPidFile={self.state}/slurmctld.pid
SlurmdPidFile={self.state}/slurmd-%n.pid
SlurmdSpoolDir={self.state}/slurmd-%n
StateSaveLocation={self.state}/spool
SlurmctldLogFile={self.state}/log/slurmctld.log
SlurmdLogFile={self.state}/log/slurmd-%n.log
SlurmUser=root
MpiDefault=none
GresTypes=gpu
{nodes}
PartitionName=debug Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
"""
        etc = Path("/etc/slurm")
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "slurm.conf").write_text(conf)
        (etc / "gres.conf").write_text("AutoDetect=off\n" + "".join(
            f"NodeName={n} Name=gpu File={g}\n" for n, g in zip(NODES, gpus)))

    def _start(self, name: str, cmd: list[str]) -> None:
        pid_file = self.state / f"{name}.started"
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        pid_file.write_text(str(proc.pid))

    def start(self, timeout: float = 60) -> None:
        ensure_packages()
        self.write_config()
        munge_key = Path("/etc/munge/munge.key")
        if not munge_key.exists():
            _run(["mungekey", "--create"]) if shutil.which("mungekey") else _run(["create-munge-key"])
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        socket_path = Path("/run/munge/munge.socket.2")
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0 or not socket_path.exists():
            self._start("munged", ["munged", "--foreground", "--force"])
            _wait(socket_path.exists, 20, "munged did not create its socket")
        self._start("slurmctld", ["slurmctld", "-D", "-i"])
        time.sleep(1)
        for node in NODES:
            self._start(f"slurmd-{node}", ["slurmd", "-D", "-N", node])
        deadline = time.time() + timeout
        while time.time() < deadline:
            states = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True).stdout.split("\n")
            states = dict(line.split() for line in states if line.strip())
            if len(states) == len(NODES) and all(s in ("idle", "mixed") for s in states.values()):
                return
            for node, state in states.items():
                if state in ("down", "drained", "down*"):
                    subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True)
            time.sleep(0.5)
        raise RuntimeError(f"Slurm nodes did not become idle; see {self.state}/log")

    def stop(self) -> None:
        """Stop the daemons this helper started (and wait for them), nothing else. Jobs still in the
        queue are cancelled and waited for first: a slurmstepd whose slurmd is gone would be orphaned."""
        if (self.state / "slurmctld.started").exists():
            jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
            if jobs:
                subprocess.run(["scancel", *jobs], capture_output=True)
            _wait(lambda: not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip(), 60,
                  "jobs did not leave the queue")
        for name in (*(f"slurmd-{n}" for n in NODES), "slurmctld", "munged"):
            pid_file = self.state / f"{name}.started"
            if pid_file.exists():
                pgid = int(pid_file.read_text())
                try:
                    os.killpg(pgid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                _wait(lambda pgid=pgid: not _group_alive(pgid), 30, f"{name} did not stop")
                pid_file.unlink()


if __name__ == "__main__":
    action = sys.argv[1] if len(sys.argv) > 1 else "status"
    cluster = LocalSlurm()
    if action == "start":
        cluster.start()
        print("slurm started")
    elif action == "stop":
        cluster.stop()
        print("slurm stopped")
    else:
        print(subprocess.run(["sinfo"], capture_output=True, text=True).stdout)
