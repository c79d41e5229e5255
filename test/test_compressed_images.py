"""JPEG/PNG frames: declared sizes, bounded decoding, corrupt data refused on both JPEG paths, silent fd 2.

ROS-free: messages are stand-ins with `format` and `data`, as compressed.py reads them.
"""
from __future__ import annotations

import json
import struct
import textwrap
import types
import zlib

import image_corpus as corpus
import numpy as np
import pytest

from mtan_ros.errors import ImageConversionError
from mtan_ros.imaging import compressed
from mtan_ros.imaging.limits import DEFAULT_MAX_PIXELS, REFUSAL_KINDS

DECODERS = [
    pytest.param("simplejpeg", marks=pytest.mark.skipif(compressed.simplejpeg is None,
                                                        reason="simplejpeg not installed (pip install simplejpeg)")),
    "opencv",
]


def refused(data: bytes, **kw) -> ImageConversionError:
    with pytest.raises(ImageConversionError) as info:
        compressed.decode_compressed(data, **kw)
    assert info.value.kind in REFUSAL_KINDS
    return info.value


def message(data: bytes, fmt: str = "rgb8; jpeg compressed bgr8") -> types.SimpleNamespace:
    return types.SimpleNamespace(format=fmt, data=data)


@pytest.fixture(scope="module")
def camera_jpeg() -> tuple[np.ndarray, bytes]:
    rgb = corpus.smooth_rgb(120, 160)
    return rgb, corpus.jpeg_bytes(rgb)


# ---------------------------------------------------------------- good frames


def test_declared_size_of_real_jpeg_and_png():
    rgb = corpus.smooth_rgb(30, 50)
    assert compressed.compressed_declared_size(corpus.jpeg_bytes(rgb)) == ("jpeg", 50, 30)
    assert compressed.compressed_declared_size(corpus.png_bytes(rgb)) == ("png", 50, 30)
    assert compressed.compressed_declared_size(corpus.jpeg_bytes(rgb, progressive=True)) == ("jpeg", 50, 30)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_decodes_close_to_the_source(decoder, progressive):
    rgb = corpus.smooth_rgb(48, 64, noise=0)
    out = compressed.decode_compressed(corpus.jpeg_bytes(rgb, 95, progressive), jpeg_decoder=decoder)
    assert out.shape == rgb.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.abs(out.astype(int) - rgb).mean() < 3.0


def test_both_jpeg_decoders_agree(camera_jpeg):
    if compressed.simplejpeg is None:
        pytest.skip("simplejpeg not installed")
    _, data = camera_jpeg
    ours = compressed.decode_compressed(data, jpeg_decoder="simplejpeg")
    theirs = compressed.decode_compressed(data, jpeg_decoder="opencv")
    np.testing.assert_array_equal(ours, theirs)  # both libjpeg-turbo, same IDCT and upsampling


def test_grey_jpeg_becomes_rgb():
    grey = corpus.smooth_rgb(32, 40)[..., 0]
    out = compressed.decode_compressed(corpus.jpeg_bytes(grey, 95))
    assert out.shape == (32, 40, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


@pytest.mark.parametrize("kind", ["rgb", "rgba", "grey", "grey16"])
def test_png_decodes_exactly(kind):
    rgb = corpus.smooth_rgb(12, 20)
    pixels = {"rgb": rgb, "rgba": np.dstack([rgb, rgb[..., :1]]), "grey": rgb[..., 0],
              "grey16": rgb[..., 0].astype(np.uint16) * 257}[kind]
    want = {"rgb": rgb, "rgba": rgb}.get(kind, np.repeat(rgb[..., :1], 3, axis=2))
    np.testing.assert_array_equal(compressed.decode_compressed(corpus.png_bytes(pixels)), want)


def test_interlaced_png_decodes_exactly():
    rgb = corpus.smooth_rgb(21, 30)
    np.testing.assert_array_equal(compressed.decode_compressed(corpus.interlaced_png(rgb)), rgb)


def test_png_with_odd_ancillary_chunks_is_kept(capfd):
    """libpng warns about a damaged colour profile or time stamp; the pixels are intact, and nothing is printed."""
    rgb = corpus.smooth_rgb(20, 30)
    parts = corpus.png_parts(corpus.png_bytes(rgb))
    for chunk in [(b"iCCP", b"prof\0\0" + zlib.compress(b"not a profile")), (b"sRGB", b"\x09"), (b"tIME", bytes(7))]:
        data = corpus.png_from_chunks([parts[0], chunk] + parts[1:])
        np.testing.assert_array_equal(compressed.decode_compressed(data), rgb)
    assert capfd.readouterr().err == ""


def test_message_front_end(camera_jpeg):
    rgb, data = camera_jpeg
    out = compressed.compressed_msg_to_rgb(message(bytearray(data)))
    assert out.shape == rgb.shape
    png = corpus.png_bytes(rgb)
    np.testing.assert_array_equal(compressed.compressed_msg_to_rgb(message(png, "png")), rgb)


def test_auto_uses_simplejpeg_where_installed():
    assert compressed.jpeg_decoder_name() == ("opencv" if compressed.simplejpeg is None else "simplejpeg")
    with pytest.raises(ValueError, match="jpeg_decoder"):
        compressed.decode_compressed(corpus.jpeg_bytes(corpus.smooth_rgb(8, 8)), jpeg_decoder="pillow")


# ---------------------------------------------------------------- sizes


def test_default_limit_is_a_real_cameras_frame():
    assert DEFAULT_MAX_PIXELS == 4096 * 3072
    largest = corpus.with_jpeg_size(corpus.jpeg_bytes(corpus.smooth_rgb(16, 16)), 4096, 3072)
    assert refused(largest).kind == "jpeg.corrupt"  # allowed size, so decoded, then refused as damaged
    assert refused(corpus.with_jpeg_size(largest, 4097, 3072)).kind == "size.too_large"


def test_bombs_are_refused_by_their_header():
    err = refused(corpus.jpeg_bomb())
    assert err.kind == "size.too_large" and "7000x7000 = 49 Mpx" in str(err) and "12.6 Mpx" in str(err)
    assert "max_input_pixels" in str(err)
    header_only = corpus.png_from_chunks([(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))])
    assert "400 Mpx" in str(refused(header_only))
    assert "Mpx" in str(refused(corpus.jpeg_bytes(corpus.smooth_rgb(10, 10)), max_pixels=50))


def test_decode_bombs_allocate_nothing(tmp_path):
    """A 7000x7000 JPEG of 1.5 KB and a 143 KB PNG of 49 Mpx: refused with peak RSS barely moving."""
    png = corpus.png_bomb()
    assert 130_000 < len(png) < 160_000
    (tmp_path / "bomb.png").write_bytes(png)
    (tmp_path / "bomb.jpg").write_bytes(corpus.jpeg_bomb())
    code = textwrap.dedent(f"""
        import json, pathlib
        import image_corpus
        from mtan_ros.errors import ImageConversionError
        from mtan_ros.imaging.compressed import decode_compressed
        bombs = [pathlib.Path({str(tmp_path)!r}, name).read_bytes() for name in ("bomb.png", "bomb.jpg")]
        decode_compressed(image_corpus.jpeg_bytes(image_corpus.smooth_rgb(64, 64)))  # load the decoders
        before = image_corpus.memory_kb("VmHWM")
        kinds = []
        for _ in range(10):
            for data in bombs:
                try:
                    decode_compressed(data)
                except ImageConversionError as exc:
                    kinds.append(exc.kind)
        print(json.dumps({{"kinds": sorted(set(kinds)), "count": len(kinds),
                          "peak_growth_kb": image_corpus.memory_kb("VmHWM") - before}}))
    """)
    child = corpus.run_child(code)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["kinds"] == ["size.too_large"] and result["count"] == 20
    assert result["peak_growth_kb"] < 20_000  # one decoded bomb would be 147,000 kB


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_expected_size(fmt, camera_jpeg):
    rgb, data = camera_jpeg
    data = data if fmt == "jpeg" else corpus.png_bytes(rgb)
    assert compressed.decode_compressed(data, expected_size=(120, 160)).shape == (120, 160, 3)
    err = refused(data, expected_size=(160, 120))
    assert err.kind == "size.unexpected" and "160x120" in str(err) and "120x160" in str(err)


# ---------------------------------------------------------------- corrupt JPEG


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_in_the_scan_are_refused(decoder, seed, camera_jpeg):
    _, data = camera_jpeg
    err = refused(corpus.random_bytes_in_scan(data, seed), jpeg_decoder=decoder)
    assert err.kind == "jpeg.corrupt"


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_truncated_jpeg_with_end_marker_put_back_is_refused(decoder, fraction, camera_jpeg):
    _, data = camera_jpeg
    err = refused(corpus.truncated_with_eoi(data, fraction), jpeg_decoder=decoder)
    assert err.kind == "jpeg.corrupt" and "frame skipped" in str(err)


def test_truncated_jpeg_without_end_marker(camera_jpeg):
    _, data = camera_jpeg
    err = refused(data[: len(data) // 2])
    assert err.kind == "jpeg.truncated" and "end-of-image" in str(err)


@pytest.mark.parametrize("patch,words", [
    (lambda d, p: d[:p + 1] + b"\xc3" + d[p + 2:], "SOF3"),  # lossless
    (lambda d, p: d[:p + 4] + b"\x0c" + d[p + 5:], "12-bit"),
    (lambda d, p: d[:p + 9] + b"\x04" + d[p + 10:], "4 components"),  # CMYK
])
def test_unsupported_jpeg_kinds(patch, words, camera_jpeg):
    _, data = camera_jpeg
    err = refused(patch(data, corpus.jpeg_sof_offset(data)))
    assert err.kind == "jpeg.unsupported" and words in str(err)


@pytest.mark.parametrize("decoder", DECODERS)
def test_too_many_scans(decoder):
    """Thousands of scans keep libjpeg busy for seconds on a progressive JPEG (a sequential one stops after one)."""
    progressive = corpus.jpeg_bytes(corpus.smooth_rgb(120, 160), progressive=True)
    assert compressed.decode_compressed(progressive, jpeg_decoder=decoder).shape == (120, 160, 3)
    last_scan = progressive.rindex(b"\xff\xda")
    extra = progressive[last_scan:-2] * (compressed.MAX_JPEG_SCANS + 1)
    assert refused(progressive[:-2] + extra + b"\xff\xd9", jpeg_decoder=decoder).kind == "jpeg.too_many_scans"


# ---------------------------------------------------------------- corrupt PNG


def png_cases() -> dict[str, tuple[bytes, str, str]]:
    rgb = corpus.smooth_rgb(40, 48)
    png = corpus.png_bytes(rgb)
    parts = corpus.png_parts(png)
    ihdr, idat = parts[0][1], b"".join(body for ctype, body in parts if ctype == b"IDAT")
    raw = zlib.decompress(idat)
    ihdr_at = {ctype: pos for ctype, pos, _ in corpus.png_chunks(png)}
    idat_pos = ihdr_at[b"IDAT"] + 8
    bad_crc = bytearray(png)
    bad_crc[idat_pos + 50] ^= 0x10

    def with_idat(*bodies: bytes, extra: list | None = None) -> bytes:
        return corpus.png_from_chunks([(b"IHDR", ihdr)] + (extra or []) + [(b"IDAT", b) for b in bodies]
                                      + [(b"IEND", b"")])

    damaged = bytearray(idat)
    damaged[len(damaged) // 2:len(damaged) // 2 + 40] = bytes(40)
    filters = bytearray(raw)
    filters[0] = 9
    return {
        "bad CRC": (bytes(bad_crc), "png.corrupt", "CRC error in the IDAT chunk"),
        "damaged IDAT, CRC fixed": (with_idat(bytes(damaged)), "png.corrupt", "corrupt PNG"),
        "zlib stream cut, CRC fixed": (with_idat(idat[: len(idat) // 2]), "png.corrupt", "corrupt PNG"),
        "too much image data": (with_idat(zlib.compress(raw + raw[:500])), "png.corrupt", "Too much image data"),
        "bad filter type": (with_idat(zlib.compress(bytes(filters))), "png.corrupt", "corrupt PNG"),
        "truncated": (png[: len(png) // 2], "png.truncated", "runs past the end"),
        "truncated, IEND put back": (png[: len(png) // 2] + png[-12:], "png.truncated", "runs past the end"),
        "cut after IDAT": (png[:-12], "png.truncated", "before the IEND chunk"),
        "no IDAT": (corpus.png_from_chunks([(b"IHDR", ihdr), (b"IEND", b"")]), "png.corrupt", "no IDAT"),
        "split IDAT": (corpus.png_from_chunks([(b"IHDR", ihdr), (b"IDAT", idat[:10]), (b"tEXt", b"a\0b"),
                                               (b"IDAT", idat[10:]), (b"IEND", b"")]),
                       "png.corrupt", "not consecutive"),
        "bad ancillary CRC": (png[:33] + b"\0\0\0\x03tEXta\0b\0\0\0\0" + png[33:], "png.corrupt", "tEXt"),
        "bad depth": (corpus.png_from_chunks([(b"IHDR", ihdr[:8] + b"\x05" + ihdr[9:])] + parts[1:]),
                      "png.corrupt", "bit depth 5"),
        "palette without PLTE": (corpus.png_from_chunks([(b"IHDR", ihdr[:9] + b"\x03" + ihdr[10:])] + parts[1:]),
                                 "png.corrupt", "PLTE"),
        "header only": (png[:20], "png.truncated", "inside the header"),
    }


@pytest.mark.parametrize("case", list(png_cases()))
def test_corrupt_png_is_refused(case):
    data, kind, words = png_cases()[case]
    err = refused(data)
    assert err.kind == kind and words in str(err), str(err)


def test_png_split_over_many_idat_chunks_is_fine():
    rgb = corpus.smooth_rgb(40, 48)
    parts = corpus.png_parts(corpus.png_bytes(rgb))
    idat = b"".join(body for ctype, body in parts if ctype == b"IDAT")
    pieces = [(b"IDAT", idat[i:i + 100]) for i in range(0, len(idat), 100)]
    data = corpus.png_from_chunks([parts[0], (b"tEXt", b"camera\0front")] + pieces + [(b"IEND", b"")])
    np.testing.assert_array_equal(compressed.decode_compressed(data), rgb)


# ---------------------------------------------------------------- message-level refusals


def bad_message_cases() -> dict[str, tuple[types.SimpleNamespace, str, str]]:
    rng = np.random.default_rng(1)
    return {
        "empty": (message(b""), "compressed.empty", "no data"),
        "random bytes": (message(rng.integers(0, 256, 500, dtype=np.uint8).tobytes()), "compressed.unknown_format",
                         "neither JPEG nor PNG"),
        "jpeg header only": (message(b"\xff\xd8\xff\xd9"), "jpeg.corrupt", "no frame header"),
        "zero png size": (message(corpus.png_from_chunks(
            [(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)), (b"IEND", b"")])), "size.zero", "zero-sized"),
        "compressed depth": (message(b"\0" * 20, "16UC1; compressedDepth png"), "compressed.depth",
                             "compressed depth"),
    }


@pytest.mark.parametrize("case", list(bad_message_cases()))
def test_bad_messages_are_refused(case):
    msg, kind, words = bad_message_cases()[case]
    with pytest.raises(ImageConversionError) as info:
        compressed.compressed_msg_to_rgb(msg)
    assert info.value.kind == kind and words in str(info.value)


def test_long_format_string_is_quoted_short():
    msg = message(b"\0" * 20, "compressedDepth" + "x" * 100_000)
    with pytest.raises(ImageConversionError) as info:
        compressed.compressed_msg_to_rgb(msg)
    assert len(str(info.value)) < 200 and "100015 characters" in str(info.value)


# ---------------------------------------------------------------- fd 2 and the fuzz


_FD2_CHILD = textwrap.dedent("""
    import sys
    import cv2, numpy as np
    import image_corpus as corpus
    from mtan_ros.errors import ImageConversionError
    from mtan_ros.imaging.compressed import decode_compressed
    jpeg = corpus.jpeg_bytes(corpus.smooth_rgb(120, 160))
    bad = [corpus.random_bytes_in_scan(jpeg, seed) for seed in range(5)] + [corpus.truncated_with_eoi(jpeg)]
    png = corpus.png_bytes(corpus.smooth_rgb(40, 48))
    bad.append(png[:33] + b"\\0\\0\\0\\x03tEXta\\0b\\0\\0\\0\\0" + png[33:])
    for data in bad:
        if sys.argv[1] == "raw":
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        else:
            try:
                decode_compressed(data, jpeg_decoder=sys.argv[1])
                print("decoded")
            except ImageConversionError as exc:
                print(exc.kind)
""")


@pytest.mark.parametrize("decoder", DECODERS)
def test_no_decoder_line_reaches_fd2(decoder):
    """libjpeg/libpng write to fd 2 for this corpus when OpenCV is called bare; through the converter nothing does."""
    raw = corpus.run_child(_FD2_CHILD.replace("sys.argv[1]", "'raw'"))
    assert raw.returncode == 0 and "Corrupt JPEG data" in raw.stderr and "libpng" in raw.stderr
    ours = corpus.run_child(_FD2_CHILD.replace("sys.argv[1]", repr(decoder)))
    assert ours.returncode == 0, ours.stderr
    assert ours.stderr == ""
    assert ours.stdout.split() == ["jpeg.corrupt"] * 6 + ["png.corrupt"]


_FUZZ_CHILD = textwrap.dedent("""
    import collections, json
    import numpy as np
    import image_corpus as corpus
    from mtan_ros.errors import ImageConversionError
    from mtan_ros.imaging.compressed import decode_compressed, jpeg_decoder_name
    rng = np.random.default_rng(20260)
    rgb = corpus.smooth_rgb(48, 64)
    seeds = {"jpeg": corpus.jpeg_bytes(rgb), "progressive": corpus.jpeg_bytes(rgb, progressive=True),
             "png": corpus.png_bytes(rgb), "grey png": corpus.png_bytes(rgb[..., 0])}
    decoders = ["opencv"] + ([] if jpeg_decoder_name() == "opencv" else ["simplejpeg"])
    kinds, other = collections.Counter(), []
    for name, data in seeds.items():
        for index, mutated in enumerate(corpus.mutations(data, rng, 200)):
            try:
                decode_compressed(mutated, max_pixels=2_000_000, jpeg_decoder=decoders[index % len(decoders)])
                kinds["decoded"] += 1
            except ImageConversionError as exc:
                kinds[exc.kind] += 1
            except Exception as exc:
                other.append(f"{name} #{index}: {type(exc).__name__}: {exc}")
    print(json.dumps({"kinds": kinds, "other": other[:5], "total": sum(kinds.values()) + len(other)}))
""")


def test_fuzzed_jpeg_and_png_only_ever_raise_image_conversion_error():
    """800 seeded mutations of JPEG and PNG frames, both JPEG decoders: refusals only, silent, no hang."""
    child = corpus.run_child(_FUZZ_CHILD, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout)
    assert result["total"] == 800 and result["other"] == []
    assert set(result["kinds"]) - {"decoded"} <= set(REFUSAL_KINDS)
    assert result["kinds"]["jpeg.corrupt"] > 100 and result["kinds"]["png.corrupt"] > 100
    assert child.stderr == ""
