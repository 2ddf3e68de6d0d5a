"""Transform classes composed into a seeded pipeline, configured from YAML / dicts.

Each class wraps one pure function with its parameters and a probability ``p``. A transform is
called as ``t(sample, rng, source)``: ``rng`` a ``numpy.random.Generator`` (the only randomness),
``source(rng)`` returns another sample already passed through the transforms before ``t`` (what
mosaic, MixUp and copy-paste mix in). A pipeline with the same seed gives the same output.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml

from detopt.constants import PAD_VALUE
from detopt.data.transforms import color, geometric, mix
from detopt.data.transforms._shapes import scale_polygon
from detopt.data.transforms.letterbox import letterbox_boxes, letterbox_image, letterbox_meta
from detopt.data.transforms.sample import BoxFilter, Sample
from detopt.errors import DetoptInputError
from detopt.registry import Registry

Source = Callable[[np.random.Generator], Sample]


TRANSFORMS: Registry[type[Transform]] = Registry("transform")
"""Transform name -> class: what a pipeline YAML's ``name`` refers to (``@register_transform``)."""


def register_transform(cls: type[Transform]) -> type[Transform]:
    """Class decorator: register a transform under its ``name`` attribute."""
    TRANSFORMS.add(cls.name, cls)
    return cls


class Transform:
    """Base: ``p`` is the probability the transform runs; ``mixes`` marks transforms that "close
    mosaic" turns off for the last epochs."""

    name: ClassVar[str] = ""
    mixes: ClassVar[bool] = False

    def __init__(self, p: float = 1.0) -> None:
        if not 0.0 <= p <= 1.0:
            raise DetoptInputError(f"{self.name}: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, s: Sample, rng: np.random.Generator, source: Source | None = None) -> Sample:
        if self.p < 1.0 and rng.random() >= self.p:
            return s
        return self.apply(s, rng, source)

    def apply(self, s: Sample, rng: np.random.Generator, source: Source | None) -> Sample:
        raise NotImplementedError


def _need(source: Source | None, name: str) -> Source:
    if source is None:
        raise DetoptInputError(f"{name} mixes several images: call it inside a Compose over a data set")
    return source


def _filter(min_size: float, min_visible: float, max_aspect: float) -> BoxFilter:
    return BoxFilter(min_size=min_size, min_visible=min_visible, max_aspect=max_aspect)


@register_transform
class HFlip(Transform):
    name = "hflip"

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def apply(self, s, rng, source):
        return geometric.hflip(s)


@register_transform
class VFlip(Transform):
    name = "vflip"

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def apply(self, s, rng, source):
        return geometric.vflip(s)


@register_transform
class RandomAffine(Transform):
    """:func:`geometric.random_affine`; ``size`` is the output side (None: the input size)."""

    name = "affine"

    def __init__(
        self,
        p: float = 1.0,
        size: int | None = None,
        degrees: float = 0.0,
        translate: float = 0.1,
        scale: float = 0.5,
        shear: float = 0.0,
        perspective: float = 0.0,
        min_size: float = 2.0,
        min_visible: float = 0.1,
        max_aspect: float = 100.0,
    ) -> None:
        super().__init__(p)
        self.size = size
        self.kw = {
            "degrees": degrees,
            "translate": translate,
            "scale": scale,
            "shear": shear,
            "perspective": perspective,
        }
        self.filter = _filter(min_size, min_visible, max_aspect)

    def apply(self, s, rng, source):
        out = (self.size, self.size) if self.size else None
        return geometric.random_affine(s, rng, out, box_filter=self.filter, **self.kw)

    def on_tiles(self, t: mix.Tiles, rng: np.random.Generator) -> Sample:
        """:meth:`apply` to a mosaic layout (same draws), rendering only what the warp keeps."""
        out = (self.size, self.size) if self.size else t.canvas
        m = geometric.random_affine_matrix(t.canvas, out, rng, **self.kw)
        return mix.warp_tiles(t, m, out, self.filter)


@register_transform
class RandomResizedCrop(Transform):
    name = "random_resized_crop"

    def __init__(
        self,
        size: int,
        p: float = 1.0,
        scale: Sequence[float] = (0.25, 1.0),
        ratio: Sequence[float] = (0.75, 4 / 3),
        min_size: float = 2.0,
        min_visible: float = 0.1,
        max_aspect: float = 100.0,
    ) -> None:
        super().__init__(p)
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)
        self.filter = _filter(min_size, min_visible, max_aspect)

    def apply(self, s, rng, source):
        return geometric.random_resized_crop(
            s, rng, (self.size, self.size), self.scale, self.ratio, self.filter
        )


@register_transform
class Letterbox(Transform):
    """Resize keeping the aspect ratio and pad to ``size`` x ``size`` (objects mapped exactly)."""

    name = "letterbox"

    def __init__(self, size: int, p: float = 1.0, pad_value: int = PAD_VALUE) -> None:
        super().__init__(p)
        self.size, self.pad_value = size, pad_value

    def apply(self, s, rng, source):
        meta = letterbox_meta(*s.size, self.size)
        img = letterbox_image(s.image, self.size, meta, self.pad_value)
        masks = None
        if s.masks is not None:
            k = (meta.scale_x, meta.scale_y, meta.pad_x, meta.pad_y)
            masks = [[scale_polygon(p, *k) for p in obj] for obj in s.masks]
        return Sample(img, letterbox_boxes(s.boxes, meta), s.labels.copy(), masks)


@register_transform
class HSV(Transform):
    name = "hsv"

    def __init__(self, p: float = 1.0, h: float = 0.015, s: float = 0.7, v: float = 0.4) -> None:
        super().__init__(p)
        self.gains = (h, s, v)

    def apply(self, s, rng, source):
        return Sample(color.hsv_gain(s.image, rng, *self.gains), s.boxes, s.labels, s.masks)


@register_transform
class BrightnessContrast(Transform):
    name = "brightness_contrast"

    def __init__(self, p: float = 0.5, brightness: float = 0.2, contrast: float = 0.2) -> None:
        super().__init__(p)
        self.brightness, self.contrast = brightness, contrast

    def apply(self, s, rng, source):
        a = 1 + rng.uniform(-self.contrast, self.contrast)
        b = 255 * rng.uniform(-self.brightness, self.brightness)
        return Sample(color.brightness_contrast(s.image, a, b), s.boxes, s.labels, s.masks)


@register_transform
class CLAHE(Transform):
    name = "clahe"

    def __init__(self, p: float = 0.1, clip_limit: float = 2.0, tile: int = 8) -> None:
        super().__init__(p)
        self.clip_limit, self.tile = clip_limit, tile

    def apply(self, s, rng, source):
        return Sample(color.clahe(s.image, self.clip_limit, self.tile), s.boxes, s.labels, s.masks)


@register_transform
class Blur(Transform):
    name = "blur"

    def __init__(self, p: float = 0.1, sigma: Sequence[float] = (0.1, 1.5)) -> None:
        super().__init__(p)
        self.sigma = tuple(sigma)

    def apply(self, s, rng, source):
        return Sample(color.gaussian_blur(s.image, rng.uniform(*self.sigma)), s.boxes, s.labels, s.masks)


@register_transform
class Noise(Transform):
    name = "noise"

    def __init__(self, p: float = 0.1, std: Sequence[float] = (2.0, 10.0)) -> None:
        super().__init__(p)
        self.std = tuple(std)

    def apply(self, s, rng, source):
        return Sample(color.gaussian_noise(s.image, rng, rng.uniform(*self.std)), s.boxes, s.labels, s.masks)


@register_transform
class Grayscale(Transform):
    name = "grayscale"

    def __init__(self, p: float = 0.01) -> None:
        super().__init__(p)

    def apply(self, s, rng, source):
        return Sample(color.grayscale(s.image), s.boxes, s.labels, s.masks)


@register_transform
class Mosaic(Transform):
    """4 (or 9) images on a ``2·size`` canvas; follow with ``affine`` of ``size`` to crop back."""

    name = "mosaic"
    mixes = True

    def __init__(
        self,
        size: int,
        p: float = 1.0,
        n: int = 4,
        min_size: float = 2.0,
        min_visible: float = 0.1,
        max_aspect: float = 100.0,
    ) -> None:
        super().__init__(p)
        if n not in (4, 9):
            raise DetoptInputError(f"mosaic: n must be 4 or 9, got {n}")
        self.size, self.n = size, n
        self.filter = _filter(min_size, min_visible, max_aspect)

    def _samples(self, s: Sample, rng: np.random.Generator, source: Source | None) -> list[Sample]:
        src = _need(source, self.name)
        samples = [s, *(src(rng) for _ in range(self.n - 1))]
        order = rng.permutation(self.n)
        return [samples[i] for i in order]

    def apply(self, s, rng, source):
        fn = mix.mosaic4 if self.n == 4 else mix.mosaic9
        return fn(self._samples(s, rng, source), self.size, rng, self.filter)

    def then_affine(
        self, affine: RandomAffine, s: Sample, rng: np.random.Generator, source: Source | None
    ) -> Sample:
        """``affine(self(s))`` with the same draws in the same order, but the 4-image mosaic
        stays a layout (:class:`mix.Tiles`) and only the canvas region the affine samples is
        made (:func:`mix.warp_tiles`): the 2x canvas is never filled or warped whole."""
        if self.p < 1.0 and rng.random() >= self.p:
            return affine(s, rng, source)
        if self.n != 4:
            return affine(self.apply(s, rng, source), rng, source)
        t = mix.mosaic4_tiles(self._samples(s, rng, source), self.size, rng, self.filter)
        if affine.p < 1.0 and rng.random() >= affine.p:
            return Sample(mix.render(t), t.boxes, t.labels, t.masks)
        return affine.on_tiles(t, rng)


@register_transform
class MixUp(Transform):
    name = "mixup"
    mixes = True

    def __init__(self, p: float = 0.1, alpha: float = 32.0) -> None:
        super().__init__(p)
        self.alpha = alpha

    def apply(self, s, rng, source):
        return mix.mixup(s, _need(source, self.name)(rng), rng, self.alpha)


@register_transform
class CopyPaste(Transform):
    name = "copy_paste"
    mixes = True

    def __init__(
        self, p: float = 0.3, per_object: float = 0.5, max_cover: float = 0.3, flip: bool = True
    ) -> None:
        super().__init__(p)
        self.per_object, self.max_cover, self.flip = per_object, max_cover, flip

    def apply(self, s, rng, source):
        other = _need(source, self.name)(rng)
        return mix.copy_paste(s, other, rng, self.per_object, self.max_cover, self.flip)


@register_transform
class Cutout(Transform):
    name = "cutout"

    def __init__(
        self,
        p: float = 0.5,
        holes: int = 4,
        hole_size: Sequence[float] = (0.05, 0.25),
        max_hidden: float = 0.6,
        fill: int | None = PAD_VALUE,
    ) -> None:
        super().__init__(p)
        self.holes, self.hole_size, self.max_hidden, self.fill = holes, tuple(hole_size), max_hidden, fill

    def apply(self, s, rng, source):
        return mix.cutout(s, rng, self.holes, self.hole_size, self.max_hidden, self.fill)




class Compose:
    """Transforms in order, ending with a letterbox to ``size`` when the last one did not give it.

    ``close_mosaic``: for the last N epochs of ``epochs`` (see :meth:`set_epoch`) the mixing
    transforms (mosaic, MixUp, copy-paste) are skipped and the pipeline starts from a letterbox.
    ``fuse``: a 4-image mosaic directly followed by an affine runs as one step
    (:meth:`Mosaic.then_affine`: same draws, only the sampled canvas region is made; a pure
    scale + translation becomes a crop and a resize, the objects following the matrix applied).
    """

    def __init__(
        self, transforms: Sequence[Transform], size: int, close_mosaic: int = 0, fuse: bool = True
    ) -> None:
        self.transforms = list(transforms)
        self.size = size
        self.close_mosaic = close_mosaic
        self.fuse = fuse
        self.mixing_on = True
        self._letterbox = Letterbox(size)

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Turn mixing off when ``epoch >= epochs - close_mosaic`` (0-based epochs)."""
        self.mixing_on = not (self.close_mosaic and epoch >= epochs - self.close_mosaic)

    def set_mixing(self, on: bool) -> None:
        """Turn the mixing transforms on or off (a trainer's epoch plan decides; the pipeline's
        own ``close_mosaic`` is left as configured)."""
        self.mixing_on = bool(on)

    def _run(self, s: Sample, rng: np.random.Generator, raw: Source | None, upto: int) -> Sample:
        if not self.mixing_on:
            s = self._letterbox(s, rng)
        ts = self.transforms[:upto]
        k = 0
        while k < len(ts):
            t = ts[k]
            if t.mixes and not self.mixing_on:
                k += 1
                continue
            source = None
            if raw is not None:

                def source(r: np.random.Generator, k: int = k) -> Sample:
                    return self._run(raw(r), r, raw, k) if k else raw(r)

            nxt = ts[k + 1] if k + 1 < len(ts) else None
            if self.fuse and isinstance(t, Mosaic) and isinstance(nxt, RandomAffine):
                s = t.then_affine(nxt, s, rng, source)
                k += 2
            else:
                s = t(s, rng, source)
                k += 1
        return s

    def __call__(self, s: Sample, rng: np.random.Generator, source: Source | None = None) -> Sample:
        """``source(rng)``: a random *raw* sample of the data set (for the mixing transforms)."""
        out = self._run(s, rng, source, len(self.transforms))
        if out.size != (self.size, self.size):
            out = self._letterbox(out, rng)
        return out


def default_pipeline(
    size: int,
    close_mosaic: int = 10,
    *,
    mosaic: float = 1.0,
    copy_paste: float = 0.0,
    mixup: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    hsv: tuple[float, float, float] = (0.015, 0.7, 0.4),
    fliplr: float = 0.5,
) -> Compose:
    """The default training pipeline: mosaic → affine (crop back to ``size``) → [copy-paste] →
    [MixUp] → HSV → flip. The arguments are the probabilities and gains of ``TrainConfig``
    (``mosaic=0.5`` mosaics half the images); copy-paste and MixUp join only when their
    probability is positive, so the defaults give the plain four-step pipeline."""
    steps: list[Transform] = [Mosaic(size, p=mosaic),
                              RandomAffine(size=size, translate=translate, scale=scale)]
    if copy_paste > 0:
        steps.append(CopyPaste(p=copy_paste))
    if mixup > 0:
        steps.append(MixUp(p=mixup))
    steps += [HSV(1.0, *hsv), HFlip(p=fliplr)]
    return Compose(steps, size, close_mosaic=close_mosaic)


def build_pipeline(cfg: dict[str, Any] | str | Path, size: int | None = None) -> Compose:
    """A :class:`Compose` from a dict or a YAML file::

        size: 320            # output side (or pass size=)
        close_mosaic: 10
        transforms:
          - {name: mosaic}   # "size" defaults to the pipeline's
          - {name: affine, scale: 0.5, translate: 0.1}
          - {name: hsv}
          - {name: hflip, p: 0.5}

    Unknown transform names and parameters raise :class:`DetoptInputError` naming them.
    """
    where = ""
    if isinstance(cfg, (str, Path)):
        where = f"{cfg}: "
        try:
            cfg = yaml.safe_load(Path(cfg).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise DetoptInputError(f"{where}cannot read the pipeline: {e}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("transforms"), list):
        raise DetoptInputError(f"{where}a pipeline needs a 'transforms' list")
    size = size or cfg.get("size")
    if not isinstance(size, int) or size < 1:
        raise DetoptInputError(f"{where}the pipeline needs a positive integer 'size'")
    out = []
    for i, entry in enumerate(cfg["transforms"]):
        if not isinstance(entry, dict) or "name" not in entry:
            raise DetoptInputError(f"{where}transforms[{i}]: expected a mapping with a 'name'")
        kw = dict(entry)
        name = kw.pop("name")
        cls = TRANSFORMS.get(name, f"{where}transforms[{i}]")
        params = inspect.signature(cls.__init__).parameters
        unknown = sorted(set(kw) - set(params))
        if unknown:
            known = sorted(p for p in params if p != "self")
            raise DetoptInputError(
                f"{where}transforms[{i}] ({name}): unknown parameter(s) {unknown}; known: {known}"
            )
        if "size" in params and "size" not in kw and name != "affine":
            kw["size"] = size
        if name == "affine" and "size" not in kw and out and isinstance(out[-1], Mosaic):
            kw["size"] = size
        try:
            out.append(cls(**kw))
        except TypeError as e:
            raise DetoptInputError(f"{where}transforms[{i}] ({name}): {e}") from None
    return Compose(out, size, close_mosaic=int(cfg.get("close_mosaic", 0)))
