"""Training of the two CNNs on DALI-preprocessed images, with augmentation on the fly.

Augmentation is applied to every class alike (small shifts and turns, brightness and
contrast), because the dataset pipeline moves normals a little and anomalies not at all:
without it, "is the product shifted" would be a shortcut to "normal".

The parent also learns from simulated anomalies, as DRAEM (Zavrtanik et al., ICCV 2021)
does without pretrained features: each batch adds normal images with an irregular
region (thresholded smooth noise, like DRAEM's Perlin masks) blended with foreign
texture, and thin scars, labelled anomalous. A few real defect photos (a crack, a stain)
cannot teach every shape a defect takes; the simulation teaches "something on the
surface that does not belong there".
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from builders import defect_architecture as arch

# Lookout's smallest dataset (20 normal, 10 anomalous images) gives two batches an epoch: a
# small dataset is passed over several times per epoch so that every run takes enough steps.
MIN_EPOCH_ROWS = 64


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    shift: float = 0.03  # of the image size, either way
    turn_degrees: float = 3.0
    brightness: float = 0.1  # in the [-1, 1] scale
    contrast: float = 0.15
    simulated: float = 0.25  # simulated anomalies added to a parent batch, per normal image in it


def _uniform(count: int, limit: float, generator):
    import torch

    return (torch.rand(count, generator=generator) * 2 - 1) * limit


def _random_moves(count: int, settings: TrainSettings, generator):
    """[count, 2, 3] affine matrices: a small turn and shift per image."""
    import torch

    angle = _uniform(count, math.radians(settings.turn_degrees), generator)
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle), torch.cos(angle)
    theta[:, :, 2] = torch.stack([_uniform(count, 2 * settings.shift, generator),
                                  _uniform(count, 2 * settings.shift, generator)], dim=1)
    return theta


def _move(batch, theta, mode: str = "bilinear"):
    import torch.nn.functional as F

    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode=mode, padding_mode="border", align_corners=False)


def _recolour(batch, settings: TrainSettings, generator):
    count = batch.shape[0]
    contrast = 1 + _uniform(count, settings.contrast, generator).view(-1, 1, 1, 1)
    brightness = _uniform(count, settings.brightness, generator).view(-1, 1, 1, 1)
    return (batch * contrast + brightness).clamp(-1, 1)


def augment(batch, settings: TrainSettings, generator):
    """A random small affine move and photometric change per image (torch, batched)."""
    return _recolour(_move(batch, _random_moves(batch.shape[0], settings, generator)), settings, generator)


def augment_with_masks(batch, masks, settings: TrainSettings, generator):
    """``augment`` of images [N, 3, H, W] and the same move of their class masks [N, H, W] (nearest: a
    moved mask keeps whole class indices)."""
    theta = _random_moves(batch.shape[0], settings, generator)
    moved = _move(masks[:, None].float(), theta, mode="nearest")[:, 0].long()
    return _recolour(_move(batch, theta), settings, generator), moved


def _noise_region(count: int, height: int, width: int, generator):
    """[count, 1, H, W] 0/1 irregular blobs: smooth noise at a random coarse scale, thresholded."""
    import torch
    import torch.nn.functional as F

    cells = int(torch.randint(3, 9, (1,), generator=generator))
    noise = F.interpolate(torch.rand(count, 1, cells, cells, generator=generator), size=(height, width),
                          mode="bicubic", align_corners=False)
    level = torch.quantile(noise.flatten(1), 0.93, dim=1).view(-1, 1, 1, 1)  # about 7 % of the image
    return (noise > level).float()


def _scars(count: int, height: int, width: int, generator):
    """[count, 1, H, W] 0/1 thin straight scars at random angles (CutPaste's "scar" shape)."""
    import torch

    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    angle = torch.rand(count, generator=generator) * np.pi
    centre = torch.rand(count, 2, generator=generator) * 1.2 - 0.6
    along = (xs - centre[:, 0, None, None]) * torch.cos(angle)[:, None, None] + \
        (ys - centre[:, 1, None, None]) * torch.sin(angle)[:, None, None]
    across = -(xs - centre[:, 0, None, None]) * torch.sin(angle)[:, None, None] + \
        (ys - centre[:, 1, None, None]) * torch.cos(angle)[:, None, None]
    length = 0.2 + 0.4 * torch.rand(count, 1, 1, generator=generator)
    return ((along.abs() < length) & (across.abs() < 0.02)).float()[:, None]


def simulate_anomalies(normals, generator):
    """Normal images with a foreign region blended in (DRAEM-style), or a scar; same shape."""
    import torch

    count, _, height, width = normals.shape
    regions = _noise_region(count, height, width, generator)
    scarred = torch.rand(count, generator=generator) < 0.3
    regions[scarred] = _scars(int(scarred.sum()), height, width, generator)
    # Foreign texture: another image of the batch, moved and recoloured, or plain noise.
    texture = torch.roll(normals.flip(-1), shifts=(height // 3, width // 3), dims=(2, 3))
    texture = texture * (0.5 + torch.rand(count, 3, 1, 1, generator=generator)) + \
        (torch.rand(count, 3, 1, 1, generator=generator) - 0.5)
    flat = torch.rand(count, generator=generator) < 0.3
    texture[flat] = torch.rand(int(flat.sum()), 3, 1, 1, generator=generator) * 2 - 1
    opacity = 0.4 + 0.6 * torch.rand(count, 1, 1, 1, generator=generator)
    return (normals * (1 - opacity * regions) + texture.clamp(-1, 1) * opacity * regions).clamp(-1, 1)


def _with_simulated(x, y, rows, settings: TrainSettings, generator):
    """The batch, plus simulated anomalies made from its normal images (target 1)."""
    import torch

    batch, target = x[rows], y[rows]
    normals = batch[target[:, 0] == 0]
    count = int(round(len(normals) * settings.simulated))
    if count == 0:
        return batch, target
    simulated = simulate_anomalies(normals[torch.randint(len(normals), (count,), generator=generator)], generator)
    return torch.cat([batch, simulated]), torch.cat([target, torch.ones(count, 1)])


def fit(outputs: int, images: np.ndarray, targets: np.ndarray, settings: TrainSettings, on_step, on_epoch=None,
        simulate: bool = False, layout: str = arch.FIXED):
    """A fresh ``defect_architecture`` CNN trained with binary cross-entropy on each output.

    ``targets`` [N, outputs] 0/1; positives are weighted by how rare they are. ``simulate``
    (the parent: one output, 1 = anomaly) adds simulated anomalies to every batch.
    ``on_step()`` is called after every optimizer step (progress); ``on_epoch(epoch, net)``
    after every epoch (tuning scores the net there and may stop the run by raising). ``layout``
    is the product's (it chooses the CNN's head).
    """
    import torch

    generator = seeded(settings)
    net = arch.network(outputs, *images.shape[2:], layout)
    x, y = torch.from_numpy(images), torch.from_numpy(targets.astype(np.float32))
    positives = y.sum(dim=0)
    negatives = len(y) - positives
    if simulate:  # every epoch adds simulated positives made from the normal images
        positives = positives + settings.simulated * negatives
    loss_function = torch.nn.BCEWithLogitsLoss(pos_weight=negatives / positives.clamp(min=1))

    def batch_loss(rows):
        batch, target = _with_simulated(x, y, rows, settings, generator) if simulate else (x[rows], y[rows])
        logits, _ = net(augment(batch, settings, generator))
        return loss_function(logits, target)

    return optimise(net, len(x), settings, generator, batch_loss, on_step, on_epoch)


def seeded(settings: TrainSettings):
    """Seeds torch (the fresh network's weights) and returns the generator of the run's shuffles and
    augmentations; training uses every core."""
    import torch

    torch.manual_seed(settings.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    return torch.Generator().manual_seed(settings.seed)


def optimise(net, count: int, settings: TrainSettings, generator, batch_loss, on_step, on_epoch=None):
    """AdamW with a one-cycle schedule over ``settings.epochs`` epochs of ``count`` shuffled rows;
    ``batch_loss(rows)`` is the loss of one batch. Returns the net in eval mode."""
    import torch

    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps = settings.epochs * steps_per_epoch(count, settings)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.learning_rate, total_steps=max(steps, 1))
    net.train()
    for epoch in range(settings.epochs):
        order = _epoch_order(count, generator)
        for start in range(0, len(order), settings.batch_size):
            rows = order[start:start + settings.batch_size]
            if len(rows) < 2:  # batch norm needs two samples
                continue
            loss = batch_loss(rows)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            on_step()
        if on_epoch:
            on_epoch(epoch, net)
    return net.eval()


def _epoch_order(count: int, generator):
    """Shuffled rows for one epoch: whole permutations, at least ``MIN_EPOCH_ROWS`` of them in all."""
    import torch

    return torch.cat([torch.randperm(count, generator=generator) for _ in range(_passes(count))])


def _passes(count: int) -> int:
    return max(1, math.ceil(MIN_EPOCH_ROWS / max(count, 1)))


def child_training_rows(anomaly: np.ndarray, with_classes: np.ndarray, layout: str) -> np.ndarray:
    """What the child learns from: the anomalies with known classes and, where defects can be anywhere,
    the normal images too (every class absent), because a surface's normal texture is what a defect is
    told apart from (bricks, 2026-12-02: mean per-class ROC AUC 0.70 -> 0.80 on unseen crops)."""
    return with_classes | ~anomaly if layout == arch.ANYWHERE else with_classes


def steps_per_epoch(count: int, settings: TrainSettings) -> int:
    full, rest = divmod(count * _passes(count), settings.batch_size)
    return full + (rest >= 2)


def features(net, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Pooled features [N, channels] of the trained CNN (eval mode, no augmentation)."""
    import torch

    with torch.no_grad():
        return np.concatenate([net(torch.from_numpy(images[i:i + batch_size]))[1].numpy()
                               for i in range(0, len(images), batch_size)])


def probabilities(net, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Sigmoid of the logits [N, outputs] in eval mode, no augmentation (the served answer, before the
    threshold is folded in); the net's train/eval mode is kept."""
    import torch

    was_training = net.training
    net.eval()
    with torch.no_grad():
        logits = [net(torch.from_numpy(images[i:i + batch_size]))[0] for i in range(0, len(images), batch_size)]
    net.train(was_training)
    return torch.sigmoid(torch.cat(logits)).numpy() if logits else np.zeros((0, 1), np.float32)


def calibrate_parent(net, train_images: np.ndarray, train_anomaly: np.ndarray, validation_images: np.ndarray,
                     threshold: float):
    """The parent as served: features standardised on training, centres per verdict, novelty scale, threshold.

    The scale is ``NOVELTY_MARGIN`` times the largest distance of a training or validation
    image to its nearest centre, so images like these score at most 1 / margin.
    """
    import torch

    train_features = features(net, train_images)
    mean, std = train_features.mean(axis=0), train_features.std(axis=0) + 1e-6
    standard = (train_features - mean) / std
    centres = np.stack([standard[train_anomaly == flag].mean(axis=0) for flag in (False, True)])
    boards = np.concatenate([standard, (features(net, validation_images) - mean) / std])
    farthest = torch.cdist(torch.from_numpy(boards), torch.from_numpy(centres)).min(dim=1).values.max().item()
    return arch.parent_module(net, mean, std, centres, farthest * arch.NOVELTY_MARGIN, threshold)
