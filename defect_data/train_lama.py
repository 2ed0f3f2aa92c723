"""Train a small LaMa generator on bare boards, and measure its fills against OpenCV's Telea.

    python -m defect_data.train_lama --out build/lama-small.pt [--steps 600]

Random-weight LaMa fills a hole with grey, which would teach a classifier that a missing
part looks grey. Without the official checkpoint, this trains the project's own
generator (the same code, a smaller configurable size) to fill random holes in boards
rendered without components, so that removing a part leaves board texture. Held-out
boards (seeds the training never saw) measure the fill inside the hole, PSNR and SSIM
against the untouched board, for the trained LaMa and for ``cv2.inpaint`` (Telea).
The checkpoint holds the generator size and its weights; ``python -m builders
--lama-weights`` serves it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from skimage.metrics import structural_similarity

from builders.lama_architecture import FFCResNetGenerator, GeneratorSize
from defect_data.pcb import BOARD_SIZE, render

SMALL_LAMA = GeneratorSize(ngf=16, n_downsampling=3, n_blocks=3, max_features=128)
HELD_OUT_SEED = 100_000  # boards from here on are never trained on
CROP = 128


def random_hole(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One or two component-sized rectangles, float 0/1."""
    hole = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(1, 3))):
        box_h, box_w = (int(v) for v in rng.integers(12, 48, 2))
        top, left = int(rng.integers(0, height - box_h)), int(rng.integers(0, width - box_w))
        hole[top:top + box_h, left:left + box_w] = 1
    return hole


def training_batch(boards: list[np.ndarray], size: int, rng: np.random.Generator):
    images, holes = [], []
    width, height = BOARD_SIZE
    for _ in range(size):
        board = boards[int(rng.integers(len(boards)))]
        top, left = int(rng.integers(0, height - CROP)), int(rng.integers(0, width - CROP))
        images.append(board[top:top + CROP, left:left + CROP])
        holes.append(random_hole(CROP, CROP, rng))
    image = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return image, torch.from_numpy(np.stack(holes))[:, None]


def fill(generator: FFCResNetGenerator, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 with the hole filled by the generator, the rest untouched."""
    with torch.no_grad():
        planar = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
        mask = torch.from_numpy(hole)[None, None]
        prediction = generator(torch.cat([planar * (1 - mask), mask], 1))
        composite = mask * prediction + (1 - mask) * planar
    return np.clip(composite[0].permute(1, 2, 0).numpy() * 255, 0, 255).astype(np.uint8)


def hole_psnr(result: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    error = (result.astype(np.float64) - truth)[hole > 0]
    return float(10 * np.log10(255 ** 2 / max(np.mean(error ** 2), 1e-12)))


def hole_ssim(result: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    _, local = structural_similarity(result, truth, channel_axis=-1, data_range=255, full=True)
    return float(local.mean(axis=-1)[hole > 0].mean())


def evaluate(generator: FFCResNetGenerator, boards: int = 20, seed: int = 0) -> dict:
    """Mean PSNR / SSIM inside the hole on held-out boards: trained LaMa vs Telea."""
    import cv2

    rng = np.random.default_rng([seed, 7])
    scores = {"lama": {"psnr": [], "ssim": []}, "telea": {"psnr": [], "ssim": []}}
    generator.eval()
    for index in range(boards):
        truth = render(HELD_OUT_SEED + index, components=False).image
        hole = random_hole(*truth.shape[:2], rng)
        fills = {"lama": fill(generator, truth, hole),
                 "telea": cv2.inpaint(truth, (hole * 255).astype(np.uint8), 3, cv2.INPAINT_TELEA)}
        for name, result in fills.items():
            scores[name]["psnr"].append(hole_psnr(result, truth, hole))
            scores[name]["ssim"].append(hole_ssim(result, truth, hole))
    return {name: {metric: float(np.mean(values)) for metric, values in metrics.items()}
            for name, metrics in scores.items()} | {"boards": boards}


def train(steps: int, batch_size: int = 8, boards: int = 200, seed: int = 0,
          size: GeneratorSize = SMALL_LAMA, learning_rate: float = 2e-3) -> tuple[FFCResNetGenerator, list[float]]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    training_boards = [render(index, components=False).image for index in range(boards)]
    generator = FFCResNetGenerator(size).train()
    optimizer = torch.optim.Adam(generator.parameters(), lr=learning_rate)
    losses = []
    with Progress() as progress:
        task = progress.add_task("training LaMa (small) on bare boards", total=steps)
        for _ in range(steps):
            image, hole = training_batch(training_boards, batch_size, rng)
            prediction = generator(torch.cat([image * (1 - hole), hole], 1))
            loss = (torch.abs(prediction - image) * (1 + 5 * hole)).mean()  # the hole is what matters
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            progress.update(task, advance=1, description=f"training LaMa (small), loss {np.mean(losses[-20:]):.4f}")
    return generator.eval(), losses


def save(generator: FFCResNetGenerator, size: GeneratorSize, path: Path, report: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({"generator_size": asdict(size), "state_dict": generator.state_dict(), "evaluation": report}, partial)
    partial.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m defect_data.train_lama", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/lama-small.pt"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--boards", type=int, default=200, help="bare boards rendered for training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    generator, losses = train(args.steps, args.batch_size, args.boards, args.seed)
    report = {**evaluate(generator), "steps": args.steps, "final_loss": float(np.mean(losses[-20:])),
              "train_seconds": round(time.monotonic() - started)}
    save(generator, SMALL_LAMA, args.out, report)
    print(json.dumps(report, indent=2))
    print(f"checkpoint written to {args.out}; serve it with python -m builders --lama-weights {args.out}")
    return 0 if report["lama"]["psnr"] > report["telea"]["psnr"] else 1


if __name__ == "__main__":
    sys.exit(main())
