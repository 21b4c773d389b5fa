"""Green AI in practice: fp32, bf16, int8 and pruned variants of one model, ranked by accuracy
against the energy of 1,000 predictions, with the Pareto front.

    python examples/green_inference.py              # a minute or two
    python examples/green_inference.py --small      # a few seconds (what the tests run)

Trains a small PyTorch MLP on scikit-learn's bundled digits (no download) on the CPU, then
derives three variants of it: bf16 weights and activations, int8 weights with dynamic
quantisation of its Linear layers, and a pruned copy (global L1 unstructured pruning, a short
fine-tune, then the masks made permanent). Each variant is a version of one registered model
(alias = variant name) with its held-out accuracy on its run. ``mlflow_green.autolog()``
records each run's energy: training for fp32, conversion for bf16 and int8, pruning and
fine-tuning for the pruned one. ``mlflow_green.measure_inference`` then measures warm
predictions of every version (version tag ``green.inference_wh_per_1k``), and
``mlflow-green rank --energy inference`` prints and plots the ranking.

Tracking URI: ``MLFLOW_TRACKING_URI``, else MLflow's default (``sqlite:///mlflow.db`` in the
working directory). Each run of the example adds four versions; the ranking shows every
version of the model.
"""

from __future__ import annotations

import argparse
import copy
import io
import logging
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn.utils import prune

import mlflow_green
from mlflow_green.cli import main as mlflow_green_cli

# torch.ao.quantization's eager API is deprecated in favour of torchao (not installed here);
# it still works, and says so at every call.
warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated")
warnings.filterwarnings("ignore", message=r"TypedStorage is deprecated")  # in torch.load
logging.getLogger("mlflow").setLevel(logging.ERROR)

MODEL_NAME = "green-inference-digits"
EXPERIMENT = "mlflow-green-inference"
VARIANTS = ("fp32", "bf16", "int8", "pruned")
# Given, not inferred: MLflow's requirement inference re-imports the model in a subprocess
# and takes seconds per model.
REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]


@dataclass(frozen=True)
class Settings:
    """How much work each step does."""

    hidden: int  # width of the two hidden layers
    epochs: int  # training epochs of the fp32 model
    prune_amount: float  # share of all Linear weights set to zero
    finetune_epochs: int  # after pruning, with the pruned weights held at zero
    inference_rows: int  # rows in each measured predict() call: held-out rows, tiled
    repeats: int  # measured predict() calls per version


FULL = Settings(
    hidden=512, epochs=30, prune_amount=0.7, finetune_epochs=3, inference_rows=10_000, repeats=10
)
SMALL = Settings(
    hidden=128, epochs=4, prune_amount=0.5, finetune_epochs=1, inference_rows=2_000, repeats=3
)


class InBfloat16(nn.Module):
    """A copy of ``model`` computing in bfloat16 behind a float32 interface.

    MLflow's pyfunc hands the model float32 tensors (NumPy has no bfloat16) and expects
    a tensor back that NumPy can hold.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(torch.bfloat16)).float()


def mlp(features: int, hidden: int, classes: int) -> nn.Sequential:
    """The fp32 model: two hidden ReLU layers."""
    return nn.Sequential(
        nn.Linear(features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """Adam on mini-batches of 64; the model is left in eval mode."""
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(64):
            optimiser.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimiser.step()
    model.eval()


def pruned(
    model: nn.Module, amount: float, x: torch.Tensor, y: torch.Tensor, epochs: int
) -> nn.Module:
    """A copy with the smallest ``amount`` of Linear weights (all layers together) zeroed."""
    model = copy.deepcopy(model)
    weights = [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear)]
    prune.global_unstructured(weights, pruning_method=prune.L1Unstructured, amount=amount)
    train(model, x, y, epochs)  # recover accuracy; the masks keep the pruned weights at zero
    for module, name in weights:
        prune.remove(module, name)  # the zeros become the weights themselves
    return model


def int8(model: nn.Module) -> nn.Module:
    """int8 weights; activations quantised on the fly, per batch (CPU kernels)."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``x`` classified as ``y``."""
    return (model(x).argmax(dim=1) == y).float().mean().item()


def size_mb(model: nn.Module) -> float:
    """Size of the model's saved weights, MB."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


def zero_weight_share(model: nn.Module) -> float | None:
    """Share of the float Linear weights that are exactly zero (None for int8's packed ones)."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    if not weights:
        return None
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--small", action="store_true", help="fast settings: a smaller model, fewer repeats"
    )
    parser.add_argument(
        "--plot",
        default="green_inference_pareto.png",
        metavar="FILE.png",
        help="where to write the Pareto plot (default: %(default)s)",
    )
    parser.add_argument(
        "--model-name",
        default=MODEL_NAME,
        help="registered model to add the versions to (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = SMALL if args.small else FULL
    # Dynamic quantisation runs on the CPU only, and MLflow would load the other variants
    # onto a GPU if there were one: compare all four on the same device.
    os.environ.setdefault("MLFLOW_DEFAULT_PREDICTION_DEVICE", "cpu")
    torch.manual_seed(0)
    uri = mlflow.get_tracking_uri()  # MLFLOW_TRACKING_URI, else MLflow's default
    mlflow.set_experiment(EXPERIMENT)
    mlflow_green.autolog()  # every run below records its energy

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.3, random_state=0, stratify=digits.target
    )
    scaler = StandardScaler().fit(x_train)
    x_train = torch.tensor(scaler.transform(x_train), dtype=torch.float32)
    x_test = torch.tensor(scaler.transform(x_test), dtype=torch.float32)
    y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
    features, classes = x_train.shape[1], len(digits.target_names)

    fp32 = mlp(features, settings.hidden, classes)

    def trained() -> nn.Module:
        train(fp32, x_train, y_train, settings.epochs)
        return fp32

    derive: dict[str, Callable[[], nn.Module]] = {  # run in this order: fp32 is trained first
        "fp32": trained,
        "bf16": lambda: InBfloat16(fp32).eval(),
        "int8": lambda: int8(fp32),
        "pruned": lambda: pruned(
            fp32, settings.prune_amount, x_train, y_train, settings.finetune_epochs
        ),
    }
    signature = infer_signature(x_test[:2].numpy(), np.zeros((2, classes), dtype=np.float32))
    client = mlflow.MlflowClient()
    versions: dict[str, str] = {}
    print(f"Tracking URI: {uri}\nTraining and deriving {', '.join(VARIANTS)}:")
    for variant in VARIANTS:
        with mlflow.start_run(run_name=variant):
            model = derive[variant]()  # the run's energy: training, conversion or pruning
            quality = accuracy(model, x_test, y_test)
            size = size_mb(model)
            mlflow.log_params({"variant": variant, "hidden": settings.hidden})
            mlflow.log_metrics({"accuracy": quality, "model_size_mb": size})
            zeros = zero_weight_share(model)
            if zeros is not None:
                mlflow.log_metric("zero_weight_share", zeros)
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                registered_model_name=args.model_name,
                signature=signature,
                pip_requirements=REQUIREMENTS,
                # MLflow's default, pt2 (torch.export), cannot trace the packed int8 weights
                # of dynamic quantisation: all four are pickled, so they load the same way.
                serialization_format="pickle",
            )
        version = str(info.registered_model_version)
        client.set_registered_model_alias(args.model_name, variant, version)
        versions[variant] = version
        print(f"  {variant:6s} version {version}: accuracy {quality:.4f}, {size:.3f} MB")

    # The same predictions for every version: held-out rows, tiled to a batch long enough
    # to measure (a prediction is one row).
    rows = np.resize(x_test.numpy(), (settings.inference_rows, features))
    print(
        f"\nMeasuring inference: {settings.repeats} x predict() of {len(rows):,} rows per "
        "version (after one warm-up call):"
    )
    for variant, version in versions.items():
        result = mlflow_green.measure_inference(
            f"models:/{args.model_name}/{version}", rows, repeats=settings.repeats
        )
        print(
            f"  {variant:6s} version {version}: {result.wh_per_1k:.4g} Wh per 1,000 predictions "
            f"({result.report.duration_s:.2f} s)"
        )

    command = [
        "rank",
        "--energy",
        "inference",
        "--model",
        args.model_name,
        "--plot",
        args.plot,
        "--tracking-uri",
        uri,
    ]
    print(f"\n$ mlflow-green {shlex.join(command)}", flush=True)
    mlflow_green_cli.main(command, prog_name="mlflow-green", standalone_mode=False)
    sys.stderr.flush()
    print(
        "\n* = on the Pareto front: no other version is more accurate for no more energy per "
        f"prediction, or as accurate for less.\nPlot: {Path(args.plot).resolve()}\n"
        "Reading it: dense kernels do the same work for a zeroed weight as for any other, so "
        "unstructured pruning saves inference energy only where sparse kernels run the model; "
        "bf16 saves it only where the hardware computes in bf16 natively (recent GPUs, CPUs "
        "with AMX), and is emulated, slowly, elsewhere. Measure; do not assume."
    )


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"(example took {time.perf_counter() - start:.0f} s)")
