"""Distributed training: one MLflow run (rank 0's) holds the energy of every node.

    torchrun --nproc_per_node=2 examples/torchrun_train.py
    # several machines: same command on each, with --nnodes, --node_rank,
    # --master_addr/--master_port (or --rdzv-endpoint) as usual

Runs on the CPU with gloo; with GPUs, use ``nccl`` and move the model to
``cuda:LOCAL_RANK``. Set ``MLFLOW_GREEN_COUNTRY`` on each machine to its grid.
"""

from __future__ import annotations

import os

import mlflow
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import mlflow_green


def main() -> None:
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    mlflow_green.autolog()  # on every rank: each one measures its node for rank 0's run
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(rank)
    model = DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    )
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    run = mlflow.start_run(run_name="ddp-example") if rank == 0 else None
    for step in range(300):
        x = torch.randn(128, 64)
        loss = (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()  # gradients are all-reduced across ranks here
        optimiser.step()
        if run is not None and step % 50 == 0:
            mlflow.log_metric("loss", loss.item(), step=step)
    if run is not None:
        mlflow.end_run()
        got = mlflow.get_run(run.info.run_id).data
        nodes = {k: v for k, v in got.metrics.items() if k.startswith("green/node/")}
        print(
            f"run {run.info.run_id}: {got.metrics['green/energy_kwh'] * 1000:.4f} Wh over "
            f"{got.tags['green.nodes']} node(s), {got.tags['green.ranks']} ranks; {nodes}"
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
