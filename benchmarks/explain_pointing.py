"""Benchmark: how faithful are the heat maps, and what do they cost (prints numbers; not a test).

    python benchmarks/explain_pointing.py --index data/lfw_faces/index.csv [--faces 100] [--threads 2]

Pseudo-fakes with a known manipulated region: real LFW faces of *held-out people* (the validation identities of
the default weights: ``split_rows(val_fraction=0.05, seed=0)``, the split every training stage used, so the
shipped weights never saw these people) are self-blended with cevit's SBI generator (whole-face masks, the
default :class:`~cevit.training.sbi.SBIConfig`; ``--part-masks 1`` blends only random subsets of eyes, nose and
mouth instead), cropped and resized like the pipeline does. The blend mask goes
through the same crop; "inside" is where the mask reaches at least ``--mask-level`` (0.25) of its maximum, i.e.
where the blended source contributes a quarter of the blend ratio or more. Per method and two baselines
(``random``: uniform noise smoothed with a Gaussian of sigma 16 px, so that it has blobs like the real maps;
``centre``: a fixed Gaussian of sigma S/4 at the crop's centre, which knows nothing of the image: face crops are
centred, and whole-face masks cover the centre, so this prior alone wins the pointing game there):

* pointing game — the fraction of faces whose heat maximum lies inside the mask;
* in/out ratio — mean heat inside / mean heat outside the mask, per face (median and mean over faces);
* deletion AUC — P(fake) as the most heated pixels are replaced by a blurred copy (Gaussian, sigma 8 px) at
  fractions 0, 10, 20, 40, 70, 100 % of the pixels; area under P(fake) over the fraction (trapezoids). Lower
  is more faithful: the pixels the map ranks first should carry the evidence. Caveat: blurring a region
  leaves a sharp/blurred boundary, itself a blending trace to a model trained on self-blended images;
* restoration AUC — the same with the most heated pixels put back to the *real* image the pseudo-fake was
  blended from (0, 10, 20, 40, 100 %): this removes the manipulation itself, without new traces.

Cost: explanation time per face (batch of 1) against the model's scoring time for the same face, and the
end-to-end analysis of the shipped sample photo and of a 30-frame video made from it, with and without
explanations (median of ``--repeats``). Run it at low priority on a shared machine
(``echo 19 > /proc/self/autogroup`` in the shell first).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "cevit" / "samples" / "astronaut.jpg"
DELETE = (0.0, 0.1, 0.2, 0.4, 0.7, 1.0)  # fractions of the pixels blurred away (deletion curve)
RESTORE = (0.0, 0.1, 0.2, 0.4, 1.0)  # fractions of the pixels put back to the real image (restoration curve)


def _random_map(size: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 16)
    return (noise - noise.min()) / max(float(np.ptp(noise)), 1e-12)


def _replaced(crop: np.ndarray, other: np.ndarray, order: np.ndarray, fractions) -> list[np.ndarray]:
    """``crop`` with its first ``f`` of the pixels in ``order`` taken from ``other``, for each inner fraction."""
    images = []
    for f in fractions[1:-1]:
        img = crop.reshape(-1, 3).copy()
        idx = order[: int(round(f * order.size))]
        img[idx] = other.reshape(-1, 3)[idx]
        images.append(img.reshape(crop.shape))
    return images


def _table(stats, names, scores, areas, mask_level: float, threshold: float, part_masks: float) -> None:
    n = len(scores)
    print(f"\nFaithfulness on {n} self-blended held-out LFW faces (part masks p={part_masks}; 'inside' = blend mask >= "
          f"{mask_level} x max; mean inside area {np.mean(areas):.3f} of the crop; mean P(fake) "
          f"{np.mean(scores):.3f}, {sum(s >= threshold for s in scores)} of {n} at or above the threshold "
          f"{threshold}):")  # fmt: skip
    print("| method | pointing game | pointing (faces scored FAKE) | in/out ratio median | in/out ratio mean | "
          "deletion AUC (blur, lower better) | restoration AUC (real pixels back, lower better) |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")  # fmt: skip
    for m in names:
        s = stats[m]
        pf = f"{np.mean(s['point_fake']):.3f} (n={len(s['point_fake'])})" if s["point_fake"] else "-"
        print(f"| {m} | {np.mean(s['point']):.3f} | {pf} | {np.median(s['ratio']):.2f} | {np.mean(s['ratio']):.2f} "
              f"| {np.mean(s['auc']):.4f} | {np.mean(s['restore']):.4f} |", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import cv2
    import torch
    from tqdm import tqdm

    from cevit.data import load_crop, read_index
    from cevit.explain.maps import METHODS, face_heatmaps
    from cevit.inference.pipeline import load_model
    from cevit.preprocess import FacePreprocessor
    from cevit.training.data import split_rows
    from cevit.training.sbi import SBIConfig, self_blend

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="face index CSV of LFW crops (cevit extract-faces output)")
    p.add_argument("--faces", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask-level", type=float, default=0.25)
    p.add_argument(
        "--part-masks",
        type=float,
        default=0.0,
        metavar="P",
        help="SBI part masks (eyes/nose/mouth subsets) with probability P instead of whole-face masks",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--report-every", type=int, default=20, help="print the table every N faces")
    p.add_argument("--skip-cost", action="store_true", help="faithfulness only")
    p.add_argument("--skip-faithfulness", action="store_true", help="cost only")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    detector = load_model(device="cpu")
    spec = detector.preprocessing
    pre = FacePreprocessor(spec=spec)
    threshold = detector.options.rule.label_threshold

    rows = [r for r in read_index(args.index) if r.landmarks is not None and r.face_index == 0
            and r.det_prob >= 0.95 and min(r.box[2] - r.box[0], r.box[3] - r.box[1]) >= 60]  # fmt: skip
    _, val = split_rows(rows, val_fraction=0.05, seed=0)
    order = np.random.default_rng(args.seed).permutation(len(val))
    print(f"{len(val)} held-out faces ({len({r.group for r in val})} people); using {args.faces}", flush=True)

    names = [*args.methods, "random", "centre"]
    stats: dict[str, dict[str, list[float]]] = {
        m: {"point": [], "ratio": [], "auc": [], "restore": [], "point_fake": []} for m in names
    }
    scores, areas = [], []
    rng = np.random.default_rng(args.seed)
    size = spec.input_size
    yy, xx = np.mgrid[0:size, 0:size]
    centre = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 4) ** 2)).astype(np.float32)
    sbi_config = SBIConfig(part_mask_prob=args.part_masks)
    done = 0
    bar = tqdm(total=args.faces, unit="face", file=sys.stderr)
    for k in order:
        if done >= args.faces or args.skip_faithfulness:
            break
        row = val[int(k)]
        image = load_crop(row.crop_path)
        if image is None:
            continue
        sbi = self_blend(image, row.landmarks_array, rng=np.random.default_rng([args.seed, int(k)]), config=sbi_config)
        try:
            crop = pre.crop(sbi.fake, row.box, valid=row.valid)
            m3 = np.repeat(sbi.mask[..., None], 3, axis=2).astype(np.float32)
            mask = pre.crop(m3, row.box, valid=row.valid)[..., 0]
        except ValueError:
            continue
        inside = mask >= args.mask_level * float(mask.max())
        if not inside.any() or inside.all():
            continue
        real = pre.crop(sbi.real, row.box, valid=row.valid)
        score, p_blurred, p_real = detector.score_faces([crop, cv2.GaussianBlur(crop, (0, 0), 8), real])
        scores.append(score)
        areas.append(float(inside.mean()))
        maps = {m: face_heatmaps(detector.model, [crop], preprocessing=spec, method=m)[0] for m in args.methods}
        maps["random"] = _random_map(crop.shape[0], rng)
        maps["centre"] = centre
        for m, heat in maps.items():
            y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
            hit = float(inside[y, x])
            stats[m]["point"].append(hit)
            if score >= threshold:
                stats[m]["point_fake"].append(hit)
            stats[m]["ratio"].append(float(heat[inside].mean()) / max(float(heat[~inside].mean()), 1e-6))
            order = np.lexsort((rng.random(heat.size), -heat.ravel()))  # hottest first, ties in random order
            images = _replaced(crop, cv2.GaussianBlur(crop, (0, 0), 8), order, DELETE)
            images += _replaced(crop, real, order, RESTORE)
            p = detector.score_faces(images)
            k_del = len(DELETE) - 2
            stats[m]["auc"].append(float(np.trapezoid([score, *p[:k_del], p_blurred], DELETE)))
            stats[m]["restore"].append(float(np.trapezoid([score, *p[k_del:], p_real], RESTORE)))
        done += 1
        bar.update(1)
        if done % args.report_every == 0 or done == args.faces:
            _table(stats, names, scores, areas, args.mask_level, threshold, args.part_masks)
    bar.close()
    if args.skip_cost:
        return 0

    # -- cost ----------------------------------------------------------------------------------------------------
    first = val[int(order[0])]
    crop = pre.crop(load_crop(first.crop_path), first.box, valid=first.valid)

    def med(fn) -> float:
        fn()  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    t_score = med(lambda: detector.score_faces([crop]))
    print(f"\nCost ({args.threads} threads, CPU, shared machine; median of {args.repeats}):")
    print(f"scoring one face: {t_score:.3f} s")
    for m in args.methods:
        t = med(lambda m=m: face_heatmaps(detector.model, [crop], preprocessing=spec, method=m))
        print(f"explaining one face ({m}): {t:.3f} s = {t / t_score:.2f}x its scoring")
    with tempfile.TemporaryDirectory() as tmp:
        video = _video(Path(tmp) / "clip.mp4")
        for label, path, frames in (("sample photo", SAMPLE, None), ("30-frame video", video, 30)):
            base = med(lambda path=path, frames=frames: detector.analyze_result(path, num_frames=frames))
            for m in args.methods:
                t = med(lambda path=path, frames=frames, m=m: detector.analyze_result(path, num_frames=frames,
                                                                                      explain=m))  # fmt: skip
                print(f"{label}: analysis {base:.2f} s, with {m} explanations {t:.2f} s = {t / base:.2f}x "
                      f"(explanation alone {t - base:.2f} s)")  # fmt: skip
    return 0


def _video(path: Path) -> Path:
    """30 frames, 640x480, the sample face moving slightly."""
    import av
    import cv2
    from PIL import Image

    face = cv2.resize(np.asarray(Image.open(SAMPLE).convert("RGB")), (300, 300), interpolation=cv2.INTER_AREA)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=10)
        s.width, s.height, s.pix_fmt = 640, 480, "yuv420p"
        for i in range(30):
            frame = np.full((480, 640, 3), 90, np.uint8)
            x = 150 + int(30 * np.sin(i / 5))
            frame[90:390, x : x + 300] = face
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
