"""`fashion-mnist export`: the trained network as a file for use outside this project.

Every format holds the network only (no optimizer, no Lightning) and takes what ``forward`` takes: raw images,
float in [0, 1], shape (N, 1, 28, 28), any N; it returns logits (N, 10). The normalisation is inside.

  state_dict   .pt          torch.load(path, weights_only=True) -> {name: tensor}; rebuild the network class
  safetensors  .safetensors the same tensors in the safetensors format (no pickle at all)   [extra: export]
  onnx         .onnx        onnxruntime, or any ONNX runtime; the batch dimension is dynamic  [extra: export]
  torchscript  .ts          torch.jit.load(path): runs without this package (TorchScript is deprecated
                            in torch, still supported)
"""

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from fashion_mnist_lightning.checkpoint_io import CheckpointError, load_classifier, run_folder

FORMATS = {"state_dict": ".pt", "safetensors": ".safetensors", "onnx": ".onnx", "torchscript": ".ts"}


def load_network(ckpt_path: str | Path) -> nn.Module:
    """The checkpoint's network, float32, in eval mode, on the CPU, in the default memory format."""
    network = load_classifier(ckpt_path)[0].network
    return network.to(memory_format=torch.contiguous_format)  # channels_last is a training-speed detail


def export(network: nn.Module, fmt: str, output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, 1, 28, 28)  # (N, 1, 28, 28) in [0, 1]
    if fmt == "state_dict":
        torch.save(network.state_dict(), output)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(output))
    elif fmt == "onnx":
        batch = torch.export.Dim("batch")
        torch.onnx.export(network, (example,), str(output), input_names=["images"], output_names=["logits"],
                          dynamic_shapes={"images": {0: batch}}, dynamo=True, verbose=False)
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.trace is deprecated"
            torch.jit.trace(network, example).save(str(output))
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return output


def default_output(ckpt_path: Path, fmt: str) -> Path:
    """Beside the run: lightning_logs/version_N/export/<checkpoint name><suffix>."""
    return run_folder(ckpt_path) / "export" / f"{ckpt_path.stem}{FORMATS[fmt]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fashion-mnist export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True, help="a .ckpt written by `fashion-mnist fit`")
    parser.add_argument("--format", choices=list(FORMATS), default="state_dict")
    parser.add_argument("--output", type=Path, help="default: <run folder>/export/<checkpoint name>.<ext>")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    output = args.output or default_output(Path(args.ckpt_path), args.format)
    if output.exists() and not args.overwrite:
        print(f"error: {output} exists; pass --overwrite to replace it or --output for another path", file=sys.stderr)
        return 2
    try:
        network = load_network(args.ckpt_path)
        export(network, args.format, output)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"error: --format {args.format} needs {err.name}; pip install -e '.[export]'", file=sys.stderr)
        return 2
    print(f"exported {type(network).__name__} ({args.format}) to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
