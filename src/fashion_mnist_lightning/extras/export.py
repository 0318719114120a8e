"""`fashion-mnist export`: the trained network as one file for use outside this project.

Every format holds the network only (no optimizer, no Lightning) and takes what ``forward`` takes: raw images,
float in [0, 1], shape (N, C, H, W) of the data set it was trained on (1x28x28 for Fashion-MNIST), any N; it returns
logits (N, number of classes). The normalisation is inside.

  state_dict   .pt          torch.load(path, weights_only=True) -> {name: tensor}; rebuild the network class
  safetensors  .safetensors the same tensors in the safetensors format (no pickle at all)   [extra: export]
  onnx         .onnx        onnxruntime, or any ONNX runtime; one self-contained file; dynamic batch
                            [extra: export]
  pt2          .pt2         torch.export.load(path).module(): torch's recommended format (TorchScript's
                            successor); dynamic batch, no Python class needed
  torchscript  .ts          torch.jit.load(path): runs without this package (deprecated by torch, still
                            supported)

The output is written to a temporary file and renamed into place, and an existing file is never replaced
without --overwrite.
"""

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from fashion_mnist_lightning.errors import UserError
from fashion_mnist_lightning.extras.loading import load_classifier
from fashion_mnist_lightning.runs.checkpoint_io import atomic_write, run_folder
from fashion_mnist_lightning.runs.folders import resolve_checkpoint

FORMATS = {"state_dict": ".pt", "safetensors": ".safetensors", "onnx": ".onnx", "pt2": ".pt2", "torchscript": ".ts"}


def load_network(ckpt_path: str | Path) -> nn.Module:
    """The checkpoint's network, float32, in eval mode, on the CPU, in the default memory format; its input shape
    (C, H, W) as ``network.image_shape``."""
    model = load_classifier(ckpt_path)[0]
    network = model.network.to(memory_format=torch.contiguous_format)  # channels_last is a training-speed detail
    network.image_shape = model.image_shape
    return network


def export(network: nn.Module, fmt: str, output: Path, image_shape: tuple[int, int, int] | None = None) -> Path:
    """Write ``network`` as ``fmt`` to ``output`` (atomically: a temporary file beside it, then a rename).
    ``image_shape``: (C, H, W) of its input, default ``network.image_shape`` (load_network sets it)."""
    example = torch.rand(2, *(image_shape or network.image_shape))  # (N, C, H, W) in [0, 1]
    # the batch dimension of forward's first argument, by position: its name is the network author's choice
    dynamic = ({0: torch.export.Dim("batch", min=1)},)
    if fmt == "state_dict":
        atomic_write(output, lambda f: torch.save(network.state_dict(), f))
    elif fmt == "safetensors":
        from safetensors.torch import save

        tensors = {k: v.contiguous() for k, v in network.state_dict().items()}
        atomic_write(output, lambda f: f.write(save(tensors)))
    elif fmt == "onnx":
        with tempfile.TemporaryDirectory() as tmp:  # torch writes by path; one file, weights inside
            path = Path(tmp) / output.name
            torch.onnx.export(
                network,
                (example,),
                str(path),
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes=dynamic,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
            atomic_write(output, lambda f: f.write(path.read_bytes()))
    elif fmt == "pt2":
        program = torch.export.export(network, (example,), dynamic_shapes=dynamic)
        atomic_write(output, lambda f: torch.export.save(program, f))
    elif fmt == "torchscript":
        with warnings.catch_warnings():  # "torch.jit.trace/save is deprecated": the format's own note says so
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(network, example)
            atomic_write(output, lambda f: torch.jit.save(traced, f))
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return output


def default_output(ckpt_path: Path, fmt: str) -> Path:
    """Beside the run: lightning_logs/version_N/export/<checkpoint name><suffix>."""
    return run_folder(ckpt_path) / "export" / f"{ckpt_path.stem}{FORMATS[fmt]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fashion-mnist export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ckpt_path", required=True, help="a .ckpt written by `fashion-mnist fit`, or best / last of the newest run"
    )
    parser.add_argument("--format", choices=list(FORMATS), default="state_dict")
    parser.add_argument("--output", type=Path, help="default: <run folder>/export/<checkpoint name>.<ext>")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    ckpt_path = resolve_checkpoint(args.ckpt_path)
    output = args.output or default_output(ckpt_path, args.format)
    problem = output_problem(output, args.overwrite)
    if problem:
        raise UserError(problem)
    try:
        network = load_network(ckpt_path)
        export(network, args.format, output)
    except ImportError as err:
        raise UserError(f"--format {args.format} needs {err.name}; pip install -e '.[export]'") from None
    except OSError as err:
        raise UserError(f"cannot write {output} ({err.strerror or err}); pass --output with a writable path") from None
    print(f"exported {type(network).__name__} ({args.format}) to {output}")
    return 0


def output_problem(output: Path, overwrite: bool) -> str | None:
    """Why ``output`` cannot be written, in one line, or None."""
    if output.is_dir():
        return f"--output {output} is a folder; pass a file path such as {output / 'model.onnx'}"
    blocking = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        return f"--output {output}: {blocking} is a file, not a folder; pass a path inside a folder"
    if output.exists() and not overwrite:
        return f"{output} exists; pass --overwrite to replace it or --output for another path"
    return None


if __name__ == "__main__":  # errors are printed by the command's one path: run it as `fashion-mnist export`
    from fashion_mnist_lightning.cli import main as command

    sys.exit(command(["export", *sys.argv[1:]]))
