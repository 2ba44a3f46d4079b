"""MONAI dictionary transforms that move keypoints together with the image.

:class:`RandAffineKeypointsd` samples one affine (rotation, isotropic and
anisotropic scale, shift) and an optional horizontal flip, resamples the image
with it and applies the *same* matrix to the keypoints, so image and labels
never disagree. A flip also permutes the keypoint channels (``TL`` <-> ``TR``,
``BL`` <-> ``BR``) because after mirroring the top-left corner of a vertebra is
the one on the right. Intensity augmentation uses MONAI's own transforms.

Keypoints are ``(K, 2)`` arrays of ``(x, y)`` network-input pixels (pixel-centre
convention); images are channel-first ``(1, H, W)`` float arrays in [0, 1].
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from .warp import affine_matrix, apply_to_points, warp_image

__all__ = ["RandAffineKeypointsd", "affine_matrix", "apply_to_points", "warp_image", "build_train_transforms"]


class RandAffineKeypointsd(RandomizableTransform, MapTransform):
    """Random rotation/scale/shift/flip applied to an image and its keypoints alike.

    Args:
        keys: image key(s) to resample (channel-first arrays).
        points_key: key of the (K, 2) keypoint array (network-input pixels).
        flip_permutation: keypoint channel order after a horizontal flip
            (see :func:`SpineAlignmentLib.models.landmarks.flip_permutation`).
        prob: probability of applying the affine at all.
        rotate_deg: maximum absolute rotation.
        scale_range: isotropic scale range.
        aniso: maximum relative difference between the x and y scales.
        shift_frac: maximum shift as a fraction of (W, H).
        flip_prob: probability of a horizontal flip (independent of ``prob``).
        valid_key: key receiving a (K,) bool array: keypoint still inside the image.
    """

    def __init__(
        self,
        keys: KeysCollection,
        points_key: str,
        flip_permutation: Sequence[int] | None = None,
        prob: float = 0.9,
        rotate_deg: float = 10.0,
        scale_range: tuple[float, float] = (0.85, 1.15),
        aniso: float = 0.06,
        shift_frac: tuple[float, float] = (0.08, 0.06),
        flip_prob: float = 0.5,
        valid_key: str = "valid",
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.points_key = points_key
        self.flip_permutation = None if flip_permutation is None else np.asarray(flip_permutation)
        self.rotate_deg = rotate_deg
        self.scale_range = scale_range
        self.aniso = aniso
        self.shift_frac = shift_frac
        self.flip_prob = flip_prob
        self.valid_key = valid_key
        self._params: dict = {}

    def randomize(self, data=None) -> None:
        super().randomize(None)
        r = self.R
        if self._do_transform:
            s = r.uniform(*self.scale_range)
            a = r.uniform(-self.aniso, self.aniso)
            self._params = dict(
                angle_deg=r.uniform(-self.rotate_deg, self.rotate_deg),
                scale=(s * (1 + a / 2), s * (1 - a / 2)),
                shift=(r.uniform(-1, 1) * self.shift_frac[0], r.uniform(-1, 1) * self.shift_frac[1]),
            )
        else:
            self._params = dict(angle_deg=0.0, scale=(1.0, 1.0), shift=(0.0, 0.0))
        self._params["flip"] = bool(self.flip_permutation is not None and r.rand() < self.flip_prob)

    def __call__(self, data: Mapping[Hashable, np.ndarray]) -> dict:
        d = dict(data)
        self.randomize()
        first = d[self.first_key(d)] if hasattr(self, "first_key") else d[self.keys[0]]
        h, w = np.asarray(first).shape[-2:]
        p = self._params
        m = affine_matrix((h, w), p["angle_deg"], p["scale"], (p["shift"][0] * w, p["shift"][1] * h), p["flip"])
        identity = np.allclose(m, np.eye(3))
        for key in self.key_iterator(d):
            img = np.asarray(d[key], dtype=np.float32)
            d[key] = img if identity else warp_image(img, m)
        pts = apply_to_points(m, np.asarray(d[self.points_key], dtype=np.float64))
        if p["flip"]:
            pts = pts[self.flip_permutation]
        d[self.points_key] = pts.astype(np.float32)
        d[self.valid_key] = (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
        d["affine_matrix"] = m.astype(np.float32)
        return d


def build_train_transforms(flip_perm: Sequence[int], seed: int = 0, reframe: float = 0.0, neck: float = 0.0,
                           crop: float = 0.0) -> Compose:
    """The training augmentation: geometry with keypoints, then intensity (image only).

    ``reframe`` > 0 (coronal T1..L5 films): with this probability the film is first re-framed
    (:class:`~SpineAlignmentLib.training.framing.RandFramingd`: its top and bottom move along the spine).
    ``neck`` > 0 (coronal T1..L5 films): with this probability the film first gets a synthetic neck above T1
    (:class:`~SpineAlignmentLib.training.neck.RandNeckd`: cervical vertebrae without ribs in soft tissue).
    ``crop`` > 0 (any protocol): with this probability the film shows only part of its labelled span
    (:class:`~SpineAlignmentLib.training.framing.RandSpanCropd`).
    """
    from .framing import RandFramingd, RandSpanCropd
    from .neck import RandNeckd

    framing = [RandNeckd(keys="image", points_key="points", prob=neck)] if neck > 0 else []
    framing += [RandFramingd(keys="image", points_key="points", prob=reframe)] if reframe > 0 else []
    framing += [RandSpanCropd(keys="image", points_key="points", prob=crop)] if crop > 0 else []
    t = Compose([
        *framing,
        RandAffineKeypointsd(keys="image", points_key="points", flip_permutation=flip_perm),
        RandAdjustContrastd(keys="image", prob=0.5, gamma=(0.6, 1.6)),
        RandScaleIntensityd(keys="image", factors=0.2, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        RandGaussianSmoothd(keys="image", prob=0.2, sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0)),
        RandGaussianNoised(keys="image", prob=0.4, std=0.04),
    ])
    t.set_random_state(seed=seed)
    return t
