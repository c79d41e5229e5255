"""mtan-export: a checkpoint as a torch.export program or ONNX file for runtimes without mtan_ros.

    mtan-export --checkpoint runs/demo/checkpoint/best.pt --out model.onnx [--format pt2|onnx]

A .pt2 file loads with `torch.export.load(path).module()` and needs no mtan_ros;
an .onnx file (opset 18) runs in ONNX Runtime, TensorRT or OpenVINO.

The exported graph takes N x 3 x H x W float RGB in [0, 1] at the checkpoint's
input size (normalisation included, any batch size) and returns the semantic
logits and the raw depth; the depth encoding and class table are written next
to it as JSON because the graph cannot carry them. The Predictor's ONNX Runtime
backend runs exactly this graph.
"""
from __future__ import annotations

import argparse
import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch

from mtan_ros.common.entry import first_line, run_command
from mtan_ros.errors import ExportError
from mtan_ros.model import set_pooling
from mtan_ros.model.checkpoint import CheckpointMeta, build_model_from_checkpoint, load_checkpoint
from mtan_ros.inference.optimize import fold_batchnorm

FORMATS = ("pt2", "onnx")
ONNX_OPSET = 18
# The largest batch an exported graph declares; runtimes size their buffers by it (TensorRT profiles).
MAX_BATCH = 64
# An exported graph must reproduce the model within float32 noise: per image, the 99th percentile of
# |difference| / RMS of the output. Measured (AMD Zen 4; eager, folded, torch.export, ONNX Runtime):
# median 4e-6, 99th percentile <= 1e-4. Single values can differ by far more where a max-pool near-tie
# flips an index, which in the deepest pooling spoils a whole image (about 1 image in 270), so the check
# runs CHECK_IMAGES images and fails only when more than one is out of noise.
EXPORT_TOLERANCE = 1e-3
CHECK_IMAGES = 4


class NormalisedModel(torch.nn.Module):
    """Normalisation + model, returning (semantic logits, depth) as graph outputs.

    One definition for every backend and every exported file, so that a graph
    run by ONNX Runtime and the PyTorch model take the same input.
    """

    def __init__(self, model: torch.nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model((x - self.mean) * self.inv_std)
        return out["semantic"], out["depth"]


def inference_model(model: torch.nn.Module, meta: CheckpointMeta, *, fold_bn: bool = True,
                    pooling: str = "indices") -> NormalisedModel:
    """The model as every backend runs it: eval mode, BatchNorm folded, normalisation inside, no gradients."""
    model = model.eval()
    if fold_bn:
        model = fold_batchnorm(model)
    set_pooling(model, pooling)
    wrapper = NormalisedModel(model, meta.mean, meta.std).eval()
    for parameter in wrapper.parameters():
        parameter.requires_grad_(False)
    return wrapper


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter logs and warns a screenful per model; none of it is actionable here."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript",
                                                    "onnx_ir", "torch.onnx._internal.exporter._registration")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def onnx_model_bytes(wrapper: NormalisedModel, input_size: tuple[int, int]) -> bytes:
    """The wrapper as an ONNX model (opset 18, dynamic batch) in memory.

    Uses the dynamo exporter: the legacy one fails on max_unpool2d.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs both; say so before a long trace)
        import onnxscript  # noqa: F401  (optional: pip install .[onnx])
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the onnx and onnxscript packages ({exc.name} is missing); install "
                          "them with `pip install 'mtan_ros[onnx]'` (onnx, onnxscript, onnxruntime), or export "
                          "--format pt2, which needs nothing beyond PyTorch") from None
    height, width = input_size
    example = torch.rand(2, 3, height, width, dtype=torch.float32, device=_device_of(wrapper))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(wrapper, (example,), None, dynamo=True, opset_version=ONNX_OPSET,
                                        input_names=["image"], output_names=["semantic_logits", "depth"],
                                        dynamic_shapes=({0: batch},), verbose=False)
    except Exception as exc:  # the exporter's errors are pages long; the first line says what failed
        first = first_line(exc)
        raise ExportError(f"ONNX export failed ({first[:300]}); --format pt2 needs nothing beyond PyTorch") from None
    return program.model_proto.SerializeToString()


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(iter(module.buffers())).device


def check_onnx(model: bytes | str, wrapper: NormalisedModel, input_size: tuple[int, int],
               tolerance: float = EXPORT_TOLERANCE) -> float | None:
    """Largest difference between ONNX Runtime (CPU) and a CPU float32 wrapper on a random batch.

    None when onnxruntime is not installed.

    Raises ExportError when the difference exceeds `tolerance`.
    """
    try:
        import onnxruntime  # optional: pip install .[onnx]
    except ImportError:
        return None
    height, width = input_size
    x = torch.rand(CHECK_IMAGES, 3, height, width, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ours = wrapper(x)
    return check_close("ONNX graph", ours, [torch.from_numpy(t) for t in theirs], tolerance)


def check_close(what: str, ours: Sequence[torch.Tensor], theirs: Sequence[torch.Tensor],
                tolerance: float = EXPORT_TOLERANCE) -> float:
    """Worst per-image noise (see EXPORT_TOLERANCE) of (logits, depth) pairs.

    Raises ExportError when more than one image exceeds `tolerance`: one may
    meet a pooling flip, a broken export spoils them all.
    """
    worst, spoilt = 0.0, set()
    for expected, got in zip(ours, theirs):
        expected, got = expected.double(), got.double()
        scale = max(float(expected.pow(2).mean().sqrt()), torch.finfo(torch.float32).tiny)
        for i in range(expected.shape[0]):
            noise = float(torch.quantile(((got[i] - expected[i]).abs() / scale).flatten(), 0.99))
            worst = max(worst, noise)
            if not noise <= tolerance:  # NaN counts as out of noise
                spoilt.add(i)
    if len(spoilt) > 1:
        raise ExportError(f"the {what}'s outputs differ from PyTorch's beyond float32 noise in {len(spoilt)} of "
                          f"{expected.shape[0]} images (99th percentile up to {worst:.3g} of the output's RMS, "
                          f"allowed {tolerance:g}); please report this with the checkpoint")
    return worst


def export(checkpoint_path: str, out: str, fmt: str = "pt2", *, pooling: str | None = None) -> Path:
    """Write the checkpoint's model as `fmt` ("pt2" or "onnx") to `out`, checked against PyTorch, plus a JSON sidecar.

    `pooling`: "indices" (max-pool indices, max-unpool) or "masks" (the same
    results as 2x2 one-hot masks; needed by TensorRT). Default: masks for ONNX,
    indices for pt2.
    """
    if fmt not in FORMATS:
        raise ExportError(f"format '{fmt}' is not one of {', '.join(FORMATS)}")
    pooling = pooling or ("masks" if fmt == "onnx" else "indices")
    ckpt = load_checkpoint(checkpoint_path)
    model = build_model_from_checkpoint(ckpt, source=f"checkpoint '{checkpoint_path}'")
    wrapper = inference_model(model, ckpt.meta, pooling=pooling)
    size = tuple(ckpt.meta.input_size)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pt2":
        examples = torch.rand(CHECK_IMAGES, 3, *size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.export.save(torch.export.export(wrapper, (examples[:1],)), str(out_path))
            reloaded = torch.export.load(str(out_path)).module()
            got = [reloaded(examples[i:i + 1]) for i in range(CHECK_IMAGES)]  # exported for batch 1
            check_close("exported program", wrapper(examples), [torch.cat(outputs) for outputs in zip(*got)])
    else:
        data = onnx_model_bytes(wrapper, size)
        check_onnx(data, wrapper, size)
        out_path.write_bytes(data)
    sidecar = out_path.with_suffix(out_path.suffix + ".json")
    sidecar.write_text(json.dumps({"input": {"name": "image", "layout": "NCHW", "range": [0, 1], "size": list(size)},
                                   "outputs": ["semantic_logits", "depth"], "pooling": pooling,
                                   **ckpt.meta.to_dict()}, indent=2))
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mtan-export", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by mtan-train")
    parser.add_argument("--out", required=True, help="output file (.pt2 or .onnx)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="default: from the --out suffix (.onnx -> onnx, else pt2)")
    parser.add_argument("--pooling", choices=("indices", "masks"), default=None,
                        help="how pooling positions are kept: masks (default for onnx; TensorRT needs them) or "
                             "indices (default for pt2); outputs are identical")
    args = parser.parse_args(argv)

    def body() -> int:
        fmt = args.format or ("onnx" if args.out.endswith(".onnx") else "pt2")
        path = export(args.checkpoint, args.out, fmt, pooling=args.pooling)
        print(f"wrote {path} and {path}.json")
        return 0

    return run_command("mtan-export", body)


if __name__ == "__main__":
    raise SystemExit(main())
