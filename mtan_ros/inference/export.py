"""mtan-export: a checkpoint as a torch.export program or ONNX file for runtimes without mtan_ros.

    mtan-export --checkpoint runs/demo/checkpoint/best.pt --out model.pt2 [--format pt2|onnx]

A .pt2 file loads with `torch.export.load(path).module()` and needs no mtan_ros.

The exported graph takes N x 3 x H x W float RGB in [0, 1] at the checkpoint's
input size (normalisation included) and returns the semantic logits and the
raw depth; the depth encoding and class table are written next to it as JSON
because the graph cannot carry them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from mtan_ros.inference.checkpoint import CheckpointError, build_model_from_checkpoint, load_checkpoint
from mtan_ros.inference.optimize import fold_batchnorm


class _Exportable(torch.nn.Module):
    """Normalisation + model, returning a tuple (semantic logits, depth) as graph outputs."""

    def __init__(self, model: torch.nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor):
        out = self.model((x - self.mean) / self.std)
        return out["semantic"], out["depth"]


def export(checkpoint_path: str, out: str, fmt: str = "torchscript") -> Path:
    ckpt = load_checkpoint(checkpoint_path)
    model = fold_batchnorm(build_model_from_checkpoint(ckpt, source=f"checkpoint '{checkpoint_path}'"))
    wrapper = _Exportable(model, ckpt.meta.mean, ckpt.meta.std).eval()
    height, width = ckpt.meta.input_size
    example = torch.rand(1, 3, height, width)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if fmt == "pt2":
            torch.export.save(torch.export.export(wrapper, (example,)), str(out_path))
            reloaded = torch.export.load(str(out_path)).module()
            for ours, theirs in zip(wrapper(example), reloaded(example)):
                torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
        elif fmt == "onnx":
            try:
                torch.onnx.export(wrapper, (example,), str(out_path), input_names=["image"],
                                  output_names=["semantic_logits", "depth"], opset_version=18)
            except Exception as exc:  # the exporter's errors are long; the first line says enough
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise RuntimeError(f"ONNX export failed ({first}); it needs `pip install onnx onnxscript`; "
                                   "the pt2 format needs nothing beyond PyTorch") from None
        else:
            raise ValueError(f"format '{fmt}' is not pt2 or onnx")
    sidecar = out_path.with_suffix(out_path.suffix + ".json")
    sidecar.write_text(json.dumps({"input": {"layout": "NCHW", "range": [0, 1], "size": [height, width]},
                                   "outputs": ["semantic_logits", "depth"], **ckpt.meta.to_dict()}, indent=2))
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mtan-export", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by mtan-train")
    parser.add_argument("--out", required=True, help="output file (.pt2 or .onnx)")
    parser.add_argument("--format", choices=("pt2", "onnx"), default=None,
                        help="default: from the --out suffix (.onnx -> onnx, else pt2)")
    args = parser.parse_args(argv)
    fmt = args.format or ("onnx" if args.out.endswith(".onnx") else "pt2")
    try:
        path = export(args.checkpoint, args.out, fmt)
    except (CheckpointError, RuntimeError, ValueError) as exc:
        print(f"mtan-export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} and {path}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
