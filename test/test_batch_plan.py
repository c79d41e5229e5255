"""How the Predictor runs a batch: one pass, or one pass per image at once, pinned or chosen by measurement."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mtan_ros.inference import Predictor
from mtan_ros.inference.batching import PARALLEL_MARGIN, ParallelPasses, choose_plan, static_plan


def _image(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("requested, size, on_cuda, compiled, mode", [
    ("auto", 1, False, False, "one_pass"),
    ("auto", 3, True, False, "one_pass"),
    ("auto", 3, False, True, "one_pass"),
    ("one_pass", 3, False, False, "one_pass"),
    ("parallel", 3, False, False, "parallel"),
    (" Parallel ", 2, False, False, "parallel"),
])
def test_plans_that_need_no_timing(requested, size, on_cuda, compiled, mode):
    plan = static_plan(requested, size, on_cuda=on_cuda, compiled=compiled)
    assert plan.mode == mode and plan.batch_size == size and plan.timings_ms == {}


def test_auto_on_a_cpu_with_several_images_is_left_to_the_measurement():
    assert static_plan("auto", 3, on_cuda=False, compiled=False) is None


@pytest.mark.parametrize("requested, size, on_cuda, compiled, words", [
    ("fastest", 3, False, False, "one of auto, one_pass, parallel"),
    ("parallel", 3, True, False, "CUDA"),
    ("parallel", 3, False, True, "torch.compile"),
    ("auto", 0, False, False, "at least 1"),
])
def test_impossible_plans_are_refused_with_what_to_do(requested, size, on_cuda, compiled, words):
    with pytest.raises(ValueError, match=words):
        static_plan(requested, size, on_cuda=on_cuda, compiled=compiled)


@pytest.mark.parametrize("one_pass_ms, parallel_ms, mode", [
    (200.0, 150.0, "parallel"),                     # 1.33x
    (200.0, 200.0 / PARALLEL_MARGIN * 1.01, "one_pass"),  # just under the margin
    (150.0, 200.0, "one_pass"),
])
def test_the_faster_mode_is_kept_only_beyond_the_margin(one_pass_ms, parallel_ms, mode):
    ran = []

    def timings(calls):
        for call in calls.values():
            call()
        return {"one_pass": [one_pass_ms] * 5, "parallel": [parallel_ms] * 5}

    plan = choose_plan(3, lambda: ran.append("one"), lambda: ran.append("par"), timings)
    assert plan.mode == mode and ran == ["one", "par"]
    assert plan.timings_ms == {"one_pass": one_pass_ms, "parallel": parallel_ms}
    assert f"{one_pass_ms:.1f} ms in one pass" in plan.reason and "3 passes at once" in plan.reason


def test_parallel_passes_keep_the_order_and_really_overlap():
    passes = ParallelPasses(3)
    inside = threading.Barrier(3, timeout=10)  # only passes that run at once all get past it
    try:
        assert passes.map(lambda item: (inside.wait(), item * 2)[1], [1, 2, 3]) == [2, 4, 6]
    finally:
        passes.close()


def test_a_parallel_batch_equals_one_call_per_image_bit_for_bit(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    images = [_image(64, 128, 1), _image(100, 90, 2), _image(48, 200, 3)]
    singles = [predictor(image, max_depth=50.0) for image in images]
    plan = predictor.plan_batches(3, "parallel")
    assert plan.mode == "parallel" and predictor.batch_plan is plan
    threads = set()
    backend = predictor._backend

    class Recording:
        def __call__(self, batch):
            threads.add(threading.current_thread().name)
            return backend(batch)

        def close(self):
            backend.close()

    predictor._backend = Recording()
    for _ in range(3):  # the same result each time: passes that share the model do not disturb each other
        batch = predictor.predict_batch(images, max_depth=50.0)
        for single, result in zip(singles, batch):
            np.testing.assert_array_equal(result.labels, single.labels)
            np.testing.assert_array_equal(result.depth, single.depth)
    assert all(name.startswith("mtan-pass") for name in threads) and len(threads) >= 2
    predictor.close()


def test_auto_times_both_modes_and_one_pass_can_be_pinned_again(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    plan = predictor.plan_batches(2)
    assert plan.mode in ("one_pass", "parallel") and set(plan.timings_ms) == {"one_pass", "parallel"}
    assert all(value > 0 for value in plan.timings_ms.values())
    assert predictor.plan_batches(2, "one_pass").mode == "one_pass" and predictor._parallel is None
    images = [_image(64, 128, 4), _image(64, 128, 5)]
    assert [r.labels.shape for r in predictor.predict_batch(images)] == [(64, 128)] * 2
    predictor.close()
