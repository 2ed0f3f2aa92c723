"""Training of the two CNNs on DALI-preprocessed images, with augmentation on the fly.

Augmentation is applied to every class alike (small shifts and turns, brightness and
contrast), because the dataset pipeline moves normals a little and anomalies not at all:
without it, "is the board shifted" would be a shortcut to "normal".
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from builders import defect_architecture as arch
from builders import defect_parent


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


def augment(batch, settings: TrainSettings, generator):
    """A random small affine move and photometric change per image (torch, batched)."""
    import torch
    import torch.nn.functional as F

    count = batch.shape[0]

    def uniform(limit):
        return (torch.rand(count, generator=generator) * 2 - 1) * limit

    angle = uniform(math.radians(settings.turn_degrees))
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle), torch.cos(angle)
    theta[:, :, 2] = torch.stack([uniform(2 * settings.shift), uniform(2 * settings.shift)], dim=1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    moved = F.grid_sample(batch, grid, padding_mode="border", align_corners=False)
    contrast = 1 + uniform(settings.contrast).view(-1, 1, 1, 1)
    brightness = uniform(settings.brightness).view(-1, 1, 1, 1)
    return (moved * contrast + brightness).clamp(-1, 1)


def fit(outputs: int, images: np.ndarray, targets: np.ndarray, settings: TrainSettings, on_step, on_epoch=None):
    """A fresh ``defect_architecture`` CNN trained with binary cross-entropy on each output.

    ``targets`` [N, outputs] 0/1; positives are weighted by how rare they are.
    ``on_step()`` is called after every optimizer step (progress); ``on_epoch(epoch, net)``
    after every epoch (tuning scores the net there and may stop the run by raising).
    """
    import torch

    torch.manual_seed(settings.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    generator = torch.Generator().manual_seed(settings.seed)
    net = arch.network(outputs)
    x, y = torch.from_numpy(images), torch.from_numpy(targets.astype(np.float32))
    positives = y.sum(dim=0).clamp(min=1)
    loss_function = torch.nn.BCEWithLogitsLoss(pos_weight=(len(y) - positives) / positives)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps = settings.epochs * steps_per_epoch(len(x), settings)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.learning_rate, total_steps=max(steps, 1))
    net.train()
    for epoch in range(settings.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), settings.batch_size):
            rows = order[start:start + settings.batch_size]
            if len(rows) < 2:  # batch norm needs two samples
                continue
            logits, _ = net(augment(x[rows], settings, generator))
            loss = loss_function(logits, y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            on_step()
        if on_epoch:
            on_epoch(epoch, net)
    return net.eval()


def steps_per_epoch(count: int, settings: TrainSettings) -> int:
    full, rest = divmod(count, settings.batch_size)
    return full + (rest >= 2)


def features(net, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Pooled features [N, channels] of the trained CNN (eval mode, no augmentation)."""
    import torch

    with torch.no_grad():
        return np.concatenate([net(torch.from_numpy(images[i:i + batch_size]))[1].numpy()
                               for i in range(0, len(images), batch_size)])


def calibrate_parent(net, train_images: np.ndarray, train_anomaly: np.ndarray, validation_images: np.ndarray):
    """The parent as served: features standardised on training, centres per verdict, novelty scale.

    The scale is ``NOVELTY_MARGIN`` times the largest distance of a training or validation
    board to its nearest centre, so boards like these score at most 1 / margin.
    """
    import torch

    train_features = features(net, train_images)
    mean, std = train_features.mean(axis=0), train_features.std(axis=0) + 1e-6
    standard = (train_features - mean) / std
    centres = np.stack([standard[train_anomaly == flag].mean(axis=0) for flag in (False, True)])
    boards = np.concatenate([standard, (features(net, validation_images) - mean) / std])
    farthest = torch.cdist(torch.from_numpy(boards), torch.from_numpy(centres)).min(dim=1).values.max().item()
    return defect_parent.module(net, mean, std, centres, farthest * arch.NOVELTY_MARGIN)
