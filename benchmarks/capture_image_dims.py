"""Conversion time of transformers' Swin by the capture route: image dimensions static (the default) against every
input dimension dynamic (what autobayes did before: the shape guards of Swin's windowed attention exploded).

A Swin image classifier from a small config (random weights, nothing downloaded) is converted with
``autobayes.bayesify(model)`` (``mode="auto"`` -> the capture route); ``--all-dynamic`` converts it again with
``autobayes.fx.capture.STATIC_AFTER_BATCH`` emptied, so that ``pixel_values``' height, width and channels are
captured symbolic too. Prints each time and their ratio. The all-dynamic run takes minutes: ``--limit`` stops
waiting for it (the ratio is then a lower bound).

Usage:
    python benchmarks/capture_image_dims.py                     # static image dims only
    python benchmarks/capture_image_dims.py --all-dynamic --limit 900
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import warnings


def _convert(all_dynamic: bool, queue) -> None:
    import torch
    import transformers

    import autobayes
    from autobayes.fx import capture

    transformers.logging.set_verbosity_error()
    if all_dynamic:
        capture.STATIC_AFTER_BATCH = ()
    torch.manual_seed(0)
    config = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                     window_size=4, num_labels=3)
    model = transformers.SwinForImageClassification(config).eval()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bnn = autobayes.bayesify(model)
    queue.put((time.perf_counter() - start, bnn.bayes_report.mode))


def timed(all_dynamic: bool, limit: float):
    """``(seconds, route)`` of one conversion in a fresh process, or ``(limit, "stopped")`` past ``limit``."""
    queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_convert, args=(all_dynamic, queue))
    proc.start()
    proc.join(limit)
    if proc.is_alive():
        proc.terminate()
        return limit, "stopped"
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all-dynamic", action="store_true", help="also time the all-dynamic capture")
    parser.add_argument("--limit", type=float, default=900.0, help="seconds to wait for one conversion")
    args = parser.parse_args()
    static, route = timed(False, args.limit)
    print(f"swin, image dims static: {static:.1f} s (route {route})")
    if args.all_dynamic:
        dynamic, route = timed(True, args.limit)
        bound = ">=" if route == "stopped" else ""
        print(f"swin, every dim dynamic: {bound}{dynamic:.1f} s (route {route})")
        print(f"ratio all-dynamic / static: {bound}{dynamic / static:.1f}x")


if __name__ == "__main__":
    main()
