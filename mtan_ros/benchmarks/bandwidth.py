"""Bytes per frame of the node's outputs, raw and through the transport codecs, and the time to encode them.

    python -m mtan_ros.benchmarks.bandwidth [--scenes 3] [--size 1080x1920] [--sweep]

Synthetic street scenes (mtan_ros.data.synthetic) stand in for the node's output:
their exact depth (NaN beyond max_depth, as the node publishes it) and labels, the
labels coloured with the Cityscapes palette for `semantic_color`, and that blended
half and half with the camera image for `overlay`. Real model output is smoother
than exact geometry inside objects and noisier at edges, so treat the sizes as
indicative. Times are single-threaded wall time per frame (median of --repeats), on
whatever this machine is doing meanwhile.

--checkpoint PATH takes depth and labels from that model's predictions on the same
scenes instead (what the node publishes: model output upsampled to the camera's size,
NaN beyond max_depth), e.g. the demo's checkpoint.

--sweep adds the tables behind the codecs' defaults: depth error and size against
depth_quantization and png_level, and JPEG size and PSNR against jpeg_quality.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import cv2
import numpy as np

from mtan_ros.data.classes import cityscapes_19
from mtan_ros.data.synthetic import generate_scene, scene_rng
from mtan_ros.imaging import transport_codecs as codecs

NODE_MAX_DEPTH = 100.0  # config/perception.yaml
OVERLAY_ALPHA = 0.5


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, got {text!r}") from None
    if height < 4 or width < 4:
        raise argparse.ArgumentTypeError(f"size {text} is too small")
    return height, width


def make_frames(count: int, size: tuple[int, int], max_depth: float = NODE_MAX_DEPTH) -> list[dict[str, np.ndarray]]:
    """Stand-ins for `count` frames of the node's outputs at `size`."""
    palette = cityscapes_19()
    frames = []
    for index in range(count):
        scene = generate_scene(scene_rng(0, "val", index), size=size)
        depth = scene.depth.copy()
        depth[~(depth <= max_depth)] = np.nan
        colour = palette.colorize(scene.labels).astype(np.uint8)
        frames.append({"depth": depth, "semantic": scene.labels, "semantic_color": colour,
                       "overlay": cv2.addWeighted(scene.image, 1.0 - OVERLAY_ALPHA, colour, OVERLAY_ALPHA, 0.0),
                       "camera": scene.image})
    return frames


def model_frames(count: int, size: tuple[int, int], checkpoint: str,
                 max_depth: float = NODE_MAX_DEPTH) -> list[dict[str, np.ndarray]]:
    """The node's outputs for `count` synthetic camera frames at `size`, predicted by `checkpoint`."""
    from mtan_ros.inference import Predictor  # torch: +1.3 s, measured with -X importtime; only --checkpoint runs

    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    palette = np.asarray(predictor.class_colors, np.uint8)
    frames = []
    for index in range(count):
        image = generate_scene(scene_rng(0, "val", index), size=size).image
        prediction = predictor(image, max_depth=max_depth)
        colour = palette[prediction.labels]
        frames.append({"depth": prediction.depth, "semantic": prediction.labels, "semantic_color": colour,
                       "overlay": cv2.addWeighted(image, 1.0 - OVERLAY_ALPHA, colour, OVERLAY_ALPHA, 0.0),
                       "camera": image})
    return frames


def _timed(encode: Callable[[], codecs.CompressedPayload], repeats: int) -> tuple[codecs.CompressedPayload, float]:
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        payload = encode()
        times.append(time.perf_counter() - start)
    return payload, statistics.median(times)


def _decode_depth(data: bytes) -> np.ndarray:
    _, quant_a, quant_b = codecs.DEPTH_HEADER.unpack_from(data)
    code = cv2.imdecode(np.frombuffer(data, np.uint8)[codecs.DEPTH_HEADER.size:], cv2.IMREAD_UNCHANGED)
    with np.errstate(divide="ignore"):
        return np.where(code > 0, np.float32(quant_a) / (code.astype(np.float32) - np.float32(quant_b)), np.nan)


def _depth_error(raw: np.ndarray, data: bytes) -> np.ndarray:
    decoded = _decode_depth(data)
    both = np.isfinite(raw) & np.isfinite(decoded)
    return np.abs(decoded[both] - raw[both])


def _psnr(data: bytes, original: np.ndarray) -> float:
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    mse = float(np.mean((decoded.astype(np.float64) - original) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def measure(frames: list[dict[str, np.ndarray]], args: argparse.Namespace) -> list[tuple]:
    """Rows (output, encoding, raw bytes, compressed bytes, encode ms, note) averaged over the frames."""
    depth_options = {"depth_max": args.depth_max, "depth_quantization": args.depth_quantization,
                     "png_level": args.png_level}
    encoders = [
        ("depth", "compressedDepth", 4, lambda f: codecs.encode_compressed_depth(f["depth"], **depth_options)),
        ("semantic", "png", 1, lambda f: codecs.encode_mono8_png(f["semantic"], png_level=args.png_level)),
        ("semantic_color", "jpeg", 3,
         lambda f: codecs.encode_rgb8_jpeg(f["semantic_color"], jpeg_quality=args.jpeg_quality)),
        ("overlay", "jpeg", 3, lambda f: codecs.encode_rgb8_jpeg(f["overlay"], jpeg_quality=args.jpeg_quality)),
    ]
    rows = []
    for name, kind, pixel_bytes, encode in encoders:
        sizes, times, notes = [], [], []
        for frame in frames:
            payload, seconds = _timed(lambda: encode(frame), args.repeats)
            sizes.append(len(payload.data))
            times.append(seconds)
            if name == "depth":
                notes.append(_depth_error(frame["depth"], payload.data))
            else:
                notes.append(_psnr(payload.data, frame[name]) if kind == "jpeg" else None)
        raw = frames[0][name].shape[0] * frames[0][name].shape[1] * pixel_bytes
        if name == "depth":
            error = np.concatenate(notes)
            note = f"error mean {error.mean() * 100:.1f} cm, max {error.max() * 100:.0f} cm"
        elif kind == "jpeg":
            note = f"PSNR min {min(notes):.1f} dB"
        else:
            note = "lossless"
        rows.append((name, kind, raw, statistics.mean(sizes), statistics.mean(times) * 1e3, note))
    return rows


def print_table(rows: list[tuple], size: tuple[int, int], count: int, source: str = "exact scene") -> None:
    print(f"{size[1]}x{size[0]}, {count} synthetic scene(s), {source} depth and labels; "
          "bytes of data per frame, encode time per frame")
    print(f"{'output':15} {'transport':16} {'raw':>10} {'compressed':>11} {'ratio':>7} {'encode':>9}  note")
    for name, kind, raw, packed, ms, note in rows:
        print(f"{name:15} {kind:16} {raw:10,d} {packed:11,.0f} {packed / raw:7.2%} {ms:7.1f} ms  {note}")
    by_name = {row[0]: row for row in rows}
    raw = by_name["depth"][2] + by_name["semantic"][2]
    packed = by_name["depth"][3] + by_name["semantic"][3]
    ms = by_name["depth"][4] + by_name["semantic"][4]
    print(f"{'depth+semantic':15} {'':16} {raw:10,d} {packed:11,.0f} {packed / raw:7.2%} {ms:7.1f} ms  "
          f"target <= 20 %")
    raw = by_name["semantic_color"][2] + by_name["overlay"][2]
    packed = by_name["semantic_color"][3] + by_name["overlay"][3]
    ms = by_name["semantic_color"][4] + by_name["overlay"][4]
    print(f"{'rgb8 outputs':15} {'jpeg':16} {raw:10,d} {packed:11,.0f} {packed / raw:7.2%} {ms:7.1f} ms")


def sweep(frames: list[dict[str, np.ndarray]], repeats: int) -> None:
    """The measurements behind the defaults."""
    print("\ncompressedDepth, depth_max 100: size and error against depth_quantization and png_level")
    for quantization in (50, 75, 100, 125, 150):
        for level in (1, 3, 6):
            sizes, times, errors = [], [], []
            for frame in frames:
                payload, seconds = _timed(lambda: codecs.encode_compressed_depth(
                    frame["depth"], depth_quantization=quantization, png_level=level), repeats)
                sizes.append(len(payload.data))
                times.append(seconds)
                errors.append(_depth_error(frame["depth"], payload.data))
            error = np.concatenate(errors)
            print(f"  q {quantization:3d} level {level}: {statistics.mean(sizes) / 1e3:6.1f} kB "
                  f"{statistics.mean(times) * 1e3:6.1f} ms  error mean {error.mean() * 100:4.1f} cm, "
                  f"p99 {np.percentile(error, 99) * 100:4.0f} cm, max {error.max() * 100:4.0f} cm")
    print("semantic png: size against png_level")
    for level in (0, 1, 3, 6, 9):
        results = [_timed(lambda: codecs.encode_mono8_png(f["semantic"], png_level=level), repeats) for f in frames]
        print(f"  level {level}: {statistics.mean(len(p.data) for p, _ in results) / 1e3:6.1f} kB "
              f"{statistics.mean(t for _, t in results) * 1e3:6.1f} ms")
    print("jpeg: size and PSNR against jpeg_quality")
    for quality in (75, 80, 85, 90, 95):
        cells = []
        for name in ("camera", "semantic_color", "overlay"):
            results = [(_timed(lambda: codecs.encode_rgb8_jpeg(f[name], jpeg_quality=quality), repeats), f[name])
                       for f in frames]
            kb = statistics.mean(len(p.data) for (p, _), _ in results) / 1e3
            psnr = min(_psnr(p.data, image) for (p, _), image in results)
            cells.append(f"{name} {kb:6.1f} kB {psnr:4.1f} dB")
        print(f"  quality {quality}: " + ", ".join(cells))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=3, help="synthetic scenes to average over")
    parser.add_argument("--size", type=_size, default=(1080, 1920), help="HEIGHTxWIDTH (default 1080x1920)")
    parser.add_argument("--repeats", type=int, default=5, help="encodes per frame; the median time counts")
    parser.add_argument("--jpeg-quality", type=int, default=codecs.DEFAULT_JPEG_QUALITY)
    parser.add_argument("--png-level", type=int, default=codecs.DEFAULT_PNG_LEVEL)
    parser.add_argument("--depth-max", type=float, default=codecs.DEFAULT_DEPTH_MAX)
    parser.add_argument("--depth-quantization", type=float, default=codecs.DEFAULT_DEPTH_QUANTIZATION)
    parser.add_argument("--checkpoint", help="predict depth and labels with this checkpoint (default: exact scenes)")
    parser.add_argument("--sweep", action="store_true", help="also print the tables behind the defaults")
    args = parser.parse_args(argv)
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")
    cv2.setNumThreads(1)  # what one encoding worker gets; imencode itself is single-threaded
    if args.checkpoint:
        frames = model_frames(args.scenes, args.size, args.checkpoint)
        source = "predicted"
    else:
        frames = make_frames(args.scenes, args.size)
        source = "exact scene"
    rows = measure(frames, args)
    print_table(rows, args.size, args.scenes, source)
    total = sum(row[4] for row in rows)
    print(f"extra encode time per frame with every compressed output subscribed: {total:.1f} ms "
          "(one worker thread; the node encodes on its inference worker)")
    if args.sweep:
        sweep(frames, args.repeats)


if __name__ == "__main__":
    main()
