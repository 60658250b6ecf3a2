"""Multi-process training: one process per GPU (or per CPU worker with gloo), on one or more machines.

Modelled on detectron2's ``launch`` (whose v0.6 release requires CUDA): the backend is chosen from
the config's device explicitly (cuda -> NCCL, cpu -> gloo), never from what happens to be present.
Under Slurm with several nodes, submit one task per node (``srun``); each task starts its local
processes and finds the rendezvous address and its machine rank from Slurm's environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_address(node: str) -> str:
    """The address Slurm reaches ``node`` at (its NodeAddr; the name itself when not set): node
    names need not resolve on every cluster, NodeAddr does."""
    shown = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True, text=True)
    for field in shown.stdout.split():
        if field.startswith("NodeAddr="):
            return field.removeprefix("NodeAddr=")
    return node


def slurm_topology() -> tuple[int, int, str | None]:
    """(machines, machine_rank, first node's address) from Slurm's environment; (1, 0, None) outside Slurm."""
    nodes = int(os.environ.get("SLURM_NNODES", "1"))
    if nodes <= 1 or "SLURM_JOB_NODELIST" not in os.environ:
        return 1, 0, None
    hosts = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], check=True,
                           capture_output=True, text=True).stdout.split()
    return nodes, int(os.environ.get("SLURM_NODEID", "0")), node_address(hosts[0])


def world(dist_cfg: dict[str, Any], phase: str) -> tuple[int, int, int, str]:
    """(processes per machine, machines, machine rank, dist_url) of ``phase`` (teacher | student)."""
    per_machine = dist_cfg["processes_per_machine"]
    machines = dist_cfg[f"{phase}_machines"]
    slurm_machines, machine_rank, first_host = slurm_topology()
    if machines > 1 and slurm_machines != machines:
        raise RuntimeError(f"config distributed.{phase}_machines={machines} but the job has {slurm_machines} node(s)")
    url = dist_cfg["dist_url"]
    if url == "auto":
        if machines > 1:
            if first_host is None:
                raise RuntimeError("distributed.machines > 1 needs Slurm (or an explicit distributed.dist_url)")
            url = f"tcp://{first_host}:{dist_cfg['port']}"
        else:
            url = f"tcp://127.0.0.1:{_free_port()}"
    return per_machine, machines, machine_rank, url


def _worker(local_rank: int, fn: Callable[..., None], per_machine: int, machines: int, machine_rank: int,
            url: str, device: str, args: tuple) -> None:
    world_size = per_machine * machines
    rank = machine_rank * per_machine + local_rank
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        if per_machine > torch.cuda.device_count():
            raise RuntimeError(f"{per_machine} processes per machine but {torch.cuda.device_count()} GPUs visible")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method=url, world_size=world_size, rank=rank,
                            timeout=timedelta(minutes=30))
    # detectron2's comm helpers need the group of ranks on this machine.
    for m in range(machines):
        group = dist.new_group(list(range(m * per_machine, (m + 1) * per_machine)))
        if m == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., None], config: dict[str, Any], phase: str, *args: Any) -> None:
    """Run ``fn(*args)`` in every process of ``phase``'s world (directly when it has one process)."""
    per_machine, machines, machine_rank, url = world(config["distributed"], phase)
    if per_machine * machines == 1:
        fn(*args)
        return
    # Printed, not logged: no logger is configured before the workers start.
    print(f"launching {machines} x {per_machine} processes ({config['device']}, {url})", flush=True)
    mp.start_processes(_worker, nprocs=per_machine, start_method="spawn", join=True,
                       args=(fn, per_machine, machines, machine_rank, url, config["device"], args))


def local_device(config: dict[str, Any]) -> torch.device:
    """This process's device: its own GPU under cuda, the CPU otherwise."""
    if config["device"] == "cuda":
        return torch.device("cuda", comm.get_local_rank())
    return torch.device("cpu")
