"""``mtan-eval``: a checkpoint's metrics on a dataset split, per-class IoU and sample pictures.

    mtan-eval --checkpoint runs/x/best.pt --data DIR [--split val] [--json OUT] [--samples K]

Prints the paper-style table (mIoU, pixel accuracy, depth abs/rel error in the
dataset's units and in metres) and the IoU of every class (names from the
checkpoint), optionally writes the numbers as JSON, and writes K sample PNGs:
input | predicted labels | ground truth | predicted depth | ground-truth depth, with the
depth colour bar in metres and the class legend.
The model runs at the input size recorded in the checkpoint; its outputs are
resized to the ground truth's size before the metrics are computed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from mtan_ros.common.entry import run_command
from mtan_ros.data import open_dataset
from mtan_ros.errors import ConfigError, EvalError  # noqa: F401 (EvalError re-exported)
from mtan_ros.evaluation.report import depth_units, format_per_class, format_table, write_json

__all__ = ["main", "run_eval", "EvalError"]


def build_parser() -> argparse.ArgumentParser:
    from mtan_ros.training.config import FORMATS  # torch: +1.3 s, measured with -X importtime; not paid on import

    p = argparse.ArgumentParser(prog="mtan-eval", description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--checkpoint", required=True, metavar="CK", help="checkpoint file (best.pt or last.pt)")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    p.add_argument("--format", default="auto", choices=FORMATS, help="dataset layout")
    p.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    p.add_argument("--samples", type=int, default=4, metavar="K",
                   help="number of sample PNGs, spread evenly over the split (default: 4; 0 = none)")
    p.add_argument("--samples-dir", metavar="DIR",
                   help="folder for the sample PNGs (default: eval-SPLIT beside the checkpoint)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B")
    p.add_argument("--workers", type=int, default=2, metavar="N")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N images")
    p.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU, float16 on CUDA)")
    p.add_argument("--depth-scale", type=float, metavar="SCALE", help="override the dataset's depth scale")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    return p


def _with_normalization(model, mean, std):
    """The model behind the checkpoint's mean/std normalisation (unchanged for mtan-train checkpoints,
    which feed RGB in [0, 1] as the reference code does)."""
    import torch  # torch: +1.3 s, measured with -X importtime; not paid on import

    if tuple(mean) == (0.0, 0.0, 0.0) and tuple(std) == (1.0, 1.0, 1.0):
        return model

    class Normalized(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, x):
            return self.model((x - self.mean) / self.std)

    return Normalized()


def run_eval(args: argparse.Namespace, log=print) -> dict[str, Any]:
    """Evaluate as ``mtan-eval`` does; returns the result dictionary (also written with --json)."""
    import numpy as np  # numpy: +0.13 s, measured with -X importtime; not paid on import
    import torch  # torch: +1.3 s, measured with -X importtime; not paid on import

    from mtan_ros.data.loader import DataLoader  # torch: +1.3 s, measured with -X importtime; not paid on import
    # torch: +1.3 s, measured with -X importtime; not paid on import
    from mtan_ros.model.checkpoint import build_model_from_checkpoint, load_checkpoint

    # torch: +1.3 s, measured with -X importtime; not paid on import
    from mtan_ros.training.distributed import resolve_device
    # torch: +1.3 s, measured with -X importtime; not paid on import
    from mtan_ros.training.evaluate import convert_depth, evaluate, predict
    from mtan_ros.evaluation.plots import mosaic_picture, write_png  # cv2: +0.15 s, measured with -X importtime

    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint)
    meta = ckpt.meta
    model = build_model_from_checkpoint(ckpt, source=str(args.checkpoint))
    model = _with_normalization(model, meta.mean, meta.std).to(device).eval()
    extra = {"depth_scale": args.depth_scale} if args.depth_scale is not None else {}
    dataset = open_dataset(args.data, split=args.split, format=args.format, augment=False, **extra)
    tasks = {t: n for t, n in meta.model.tasks.items() if t in ("semantic", "depth")}
    if "semantic" in tasks and dataset.classes.num_classes != tasks["semantic"]:
        raise EvalError(
            f"the checkpoint predicts {tasks['semantic']} classes ({', '.join(meta.class_names)}) but "
            f"'{args.data}' has {dataset.classes.num_classes}-class labels; evaluate on data with the "
            f"checkpoint's label set (e.g. the label_{tasks['semantic']} folder of the preprocessed release) or "
            "use a checkpoint trained on this one")
    if "semantic" in tasks and list(dataset.classes.names) != list(meta.class_names):
        log(f"note: class names differ (checkpoint {meta.class_names}, data {dataset.classes.names}); "
            "comparing by class index")
    if not tasks:
        raise EvalError(f"the checkpoint's tasks {list(meta.model.tasks)} include neither semantic nor depth")
    if meta.depth != dataset.depth_encoding and "depth" in tasks:
        log(f"note: the checkpoint's depth is {depth_units(meta.depth)}, the data's is "
            f"{depth_units(dataset.depth_encoding)}; predictions are converted through metres")
    if args.limit:
        dataset_eval = torch.utils.data.Subset(dataset, range(min(args.limit, len(dataset))))
    else:
        dataset_eval = dataset
    if len(dataset_eval) == 0:
        raise EvalError(f"'{args.data}' has no {args.split} images")
    loader = DataLoader(dataset_eval, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                        pin_memory=device.type == "cuda")
    from tqdm.auto import tqdm  # optional: pip install .[train]

    start = time.perf_counter()
    with tqdm(total=len(loader), desc=f"evaluating {args.split}", unit="batch", leave=False,
              disable=not args.progress) as bar:
        result = evaluate(model, loader, tasks, device, depth_encoding=dataset.depth_encoding,
                          model_depth_encoding=meta.depth, amp=args.amp, input_size=tuple(meta.input_size),
                          progress=bar)
    seconds = time.perf_counter() - start
    metrics = {k: v for k, v in result.metrics.items() if not k.startswith("loss_")}
    out: dict[str, Any] = {
        "checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split,
        "images": result.images, "arch": meta.model.arch, "tasks": dict(meta.model.tasks),
        "width": meta.model.width, "input_size": list(meta.input_size), **metrics,
        "losses": {k[5:]: v for k, v in result.metrics.items() if k.startswith("loss_")},
        "depth_units": depth_units(dataset.depth_encoding), "seconds": seconds,
        "definitions": "mIoU and pixel accuracy from one confusion matrix over the whole split; depth errors over "
                       "all valid pixels of the split; rel_err as a fraction",
    }
    if result.confusion is not None:
        iou = result.confusion.iou_per_class().tolist()
        out["per_class_iou"] = dict(zip(meta.class_names, iou))
    log(format_table({f"{Path(args.checkpoint).name} on {args.split} ({result.images} images)": metrics},
                     depth_units(dataset.depth_encoding)))
    if result.confusion is not None:
        log(format_per_class(meta.class_names, out["per_class_iou"].values()))

    if args.samples > 0:
        folder = Path(args.samples_dir) if args.samples_dir else Path(args.checkpoint).parent / f"eval-{args.split}"
        count = min(args.samples, len(dataset_eval))
        indices = sorted(set(np.linspace(0, len(dataset_eval) - 1, count).round().astype(int).tolist()))
        written = []
        palette = np.asarray(meta.class_colors, dtype=np.uint8)
        encoding = dataset.depth_encoding
        with torch.no_grad():
            for index in indices:
                item = dataset_eval[index]
                image = item["image"].unsqueeze(0).to(device)
                outputs = predict(model, image, amp=args.amp, input_size=tuple(meta.input_size),
                                  output_size=tuple(image.shape[-2:]))
                h, w = image.shape[-2:]
                labels = outputs["semantic"].argmax(1)[0].cpu().numpy() if "semantic" in outputs \
                    else np.full((h, w), -1)
                gt_labels = item["semantic"].numpy() if "semantic" in item else np.full((h, w), -1)
                if "depth" in outputs:
                    pred_depth = convert_depth(outputs["depth"], meta.depth, encoding)[0, 0].cpu()
                    pred_m = encoding.to_metres(pred_depth).numpy()
                else:
                    pred_m = np.full((h, w), np.nan, dtype=np.float32)
                gt_m = encoding.to_metres(item["depth"].reshape(h, w)).numpy() if "depth" in item \
                    else np.full((h, w), np.nan, dtype=np.float32)
                rgb = item["image"].permute(1, 2, 0).numpy()
                mosaic = mosaic_picture([(rgb, labels, gt_labels, pred_m, gt_m)], palette, meta.class_names)
                written.append(str(write_png(folder / f"sample_{index:04d}.png", mosaic)))
        out["samples"] = written
        log(f"{len(written)} sample picture(s) in {folder}")
    if args.json:
        write_json(out, args.json)
        log(f"results written to {args.json}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        if args.samples < 0 or args.batch_size < 1 or args.workers < 0:
            raise ConfigError("--samples and --workers must be 0 or more, --batch-size at least 1")
        run_eval(args)

    return run_command("mtan-eval", body)


if __name__ == "__main__":
    sys.exit(main())
