"""The codebook: K colours fitted by k-means, an encoder (colour -> index) and a decoder."""

from __future__ import annotations

import inspect
import time
import warnings

import numpy as np

from .._limits import index_dtype, peak_value
from ._threads import resolve
from .colorspace import COLOR_SPACES, STAIN_SPACES, stain_space, to_space
from .histogram import ColorHistogram, encode_decode, take_rows
from .kmeans import (
    DEFAULT_EFFORT,
    Plan,
    assign,
    check_effort,
    cluster_sums,
    weighted_error,
    weighted_kmeans,
)
from .validation import check_choice, check_image, check_int, check_mask, check_n_colors

ALPHA_MODES = ("ignore", "quantize")
# Bounds of the parameters that set how much work a fit may do.
MAX_N_INIT = 1_000
MAX_ITER = 1_000_000


class FewColorsWarning(UserWarning):
    """The image has fewer distinct colours than the codebook size asked for."""


class Codebook:
    """K representative colours fitted with k-means, scikit-learn style.

    Fit on one image or several (``fit([tile1, tile2])``), then :meth:`encode` any image
    with the same number of channels and :meth:`decode` its labels. Fitting is exact
    k-means over every pixel: it runs on the distinct colours weighted by their pixel
    counts, which has the same objective and costs far less.

    Parameters
    ----------
    n_colors : int, default 16
        Codebook size K, from 1 to 65,536.
    color_space : {"rgb", "lab", "oklab", "od", "hed", "hdab", "stains"}, default "rgb"
        Space in which colours are clustered (see :mod:`.colorspace`). ``"rgb"`` is the
        image's own values; ``"lab"`` (CIELAB) and ``"oklab"`` are perceptual; ``"od"`` is
        optical density; ``"hed"`` and ``"hdab"`` split it into the amounts of
        hematoxylin and eosin, or hematoxylin and DAB (Ruifrok and Johnston's vectors),
        and ``"stains"`` into those of ``stain_vectors``. All but ``"rgb"`` need RGB. The
        palette, the reconstruction and J are always in the image's own colours and dtype.
    stain_vectors : array of shape (2, 3) or (3, 3), optional
        Optical-density vectors (R, G, B) of the stains, for ``"stains"`` (or to replace
        the standard ones of ``"hed"`` / ``"hdab"``); a third, when two are given, is
        their cross product.
    random_state : int, numpy Generator or None, default 0
        Seed of the k-means++ seeding; the same seed and data give the same codebook.
    n_init : int or "auto", default "auto"
        Seedings to run, keeping the lowest distortion. "auto" follows ``effort`` (10 at
        the default): restarts converge on a summary of the colours first, so they are
        cheap, and they avoid the poor local minima a single seeding can land in.
    max_iter : int, default 300
        Most Lloyd iterations per seeding.
    tol : float, default 1e-4
        Convergence threshold: on the centre shift, relative to the data's variance
        (scikit-learn's convention), and for the final run on every colour on the cost's
        decrease (see :func:`.kmeans.weighted_kmeans`). 0 iterates until no assignment
        changes.
    alpha : {"ignore", "quantize"}, default "ignore"
        For 4-channel (RGBA) images: ``"ignore"`` clusters RGB only (the alpha channel is
        kept as it was by :func:`napari_kmeans_vq.quantize`); ``"quantize"`` clusters all
        four channels.
    channel_axis : int or None, default -1
        Axis of the colour channels; None for a scalar (one-channel) image with no colour axis.
    effort : int, default 5
        Speed against quality, 1 to 10: the seedings, the size of the colour summary the
        seedings converge on, and how many of their optima are finished on every colour
        all follow from it (see ``docs/how-it-works.md``). ``docs/benchmarks.md`` compares
        the distortion at 5 with scikit-learn's best of 10 restarts, image by image and K
        by K.
    n_threads : int or None, default None
        Threads for the compiled engine; None uses the cores this process may run on.
        The palette and labels do not depend on it.

    Attributes
    ----------
    palette_ : ndarray, shape (K, C)
        The codewords as stored and decoded, in the image's dtype (rounded for integer
        images), in a canonical order: sorted by colour (first channel first), ties by
        centroid, so that the order never depends on which seeding won.
    centroids_ : ndarray, shape (K, D)
        The unrounded cluster means in the clustering space (for the stain spaces, each
        stain's amount divided by its standard deviation over the pixels fitted,
        ``space_scale_``, so that every stain weighs alike).
    n_colors_ : int
        K actually fitted: the requested K, or the number of distinct colours if that is
        smaller (the codebook is then those colours, and a :class:`FewColorsWarning` says so).
    dtype_ : numpy dtype
        The dtype of the images fitted.
    channels_ : int
        Channels clustered (3 for RGBA with ``alpha="ignore"``).
    n_iter_, n_init_, inertia_, converged_, n_distinct_colors_, fit_seconds_
        What the fit did.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> tile = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    >>> cb = Codebook(n_colors=8).fit(tile)
    >>> labels = cb.encode(tile)
    >>> labels.dtype, labels.shape
    (dtype('uint8'), (32, 32))
    >>> cb.decode(labels).shape
    (32, 32, 3)
    """

    def __init__(
        self,
        n_colors: int = 16,
        *,
        color_space: str = "rgb",
        random_state=0,
        n_init="auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        alpha: str = "ignore",
        channel_axis: int | None = -1,
        effort: int = DEFAULT_EFFORT,
        n_threads: int | None = None,
        stain_vectors=None,
    ):
        self.n_colors = n_colors
        self.color_space = color_space
        self.stain_vectors = stain_vectors
        self.random_state = random_state
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.alpha = alpha
        self.channel_axis = channel_axis
        self.effort = effort
        self.n_threads = n_threads

    def __repr__(self) -> str:
        state = f", fitted K={self.n_colors_}" if self.is_fitted else ""
        return f"Codebook(n_colors={self.n_colors}, color_space={self.color_space!r}{state})"

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "palette_")

    # -- scikit-learn conventions ---------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters, as scikit-learn's ``get_params`` gives them (so
        ``sklearn.base.clone`` works)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> Codebook:
        """Set constructor parameters (scikit-learn's ``set_params``); returns self."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"{name!r} is not a parameter of Codebook; the parameters are "
                    f"{', '.join(valid)}."
                )
            setattr(self, name, value)
        return self

    def predict(self, image) -> np.ndarray:
        """The same as :meth:`encode` (scikit-learn's name)."""
        return self.encode(image)

    def fit_predict(self, image, *, mask=None) -> np.ndarray:
        """Fit to ``image`` and return its labels (see :meth:`fit_encode`)."""
        return self.fit_encode(image, mask=mask)[0]

    # -- as data --------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """A fitted codebook as JSON-serialisable data: the parameters, the palette (in its
        dtype), the centroids and scale of the clustering space, and what the fit did.
        :meth:`from_dict` gives back a codebook that encodes every image to the same
        labels (floats are stored exactly: JSON keeps a float64's shortest repr)."""
        self.check_fitted()
        params = self.get_params()
        if isinstance(params["random_state"], np.random.Generator):
            params["random_state"] = None
        if params["stain_vectors"] is not None:
            params["stain_vectors"] = np.asarray(params["stain_vectors"], float).tolist()
        scale = np.asarray(self.space_scale_, dtype=np.float64)
        return {
            "format": "napari-kmeans-vq codebook",
            "version": 1,
            "params": params,
            "dtype": self.dtype_.str,
            "palette": self.palette_.tolist(),
            "centroids": self.centroids_.tolist(),
            "space_scale": scale.tolist(),
            "fit": {
                "n_iter": self.n_iter_,
                "n_init": self.n_init_,
                "converged": self.converged_,
                "n_distinct_colors": self.n_distinct_colors_,
                "inertia": self.inertia_,
                "cluster_sizes": self.cluster_sizes_.tolist(),
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> Codebook:
        """The codebook :meth:`to_dict` described (checked: a clear ValueError otherwise)."""
        if not isinstance(data, dict) or data.get("format") != "napari-kmeans-vq codebook":
            raise ValueError("not a napari-kmeans-vq codebook (no 'format' entry saying so).")
        if data.get("version") != 1:
            raise ValueError(f"codebook version {data.get('version')!r} is not supported (1).")
        try:
            codebook = cls(**data["params"])
            codebook.check_params(fit=False)
            dtype = np.dtype(data["dtype"])
            palette = np.asarray(data["palette"], dtype=dtype)
            centroids = np.asarray(data["centroids"], dtype=np.float64)
            fit = data["fit"]
            sizes = np.asarray(fit["cluster_sizes"], dtype=np.int64)
            scale = np.asarray(data["space_scale"], dtype=np.float64)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"codebook data is incomplete or malformed: {exc}") from None
        k = palette.shape[0] if palette.ndim == 2 else 0
        if k < 1 or centroids.ndim != 2 or centroids.shape[0] != k or sizes.shape != (k,):
            raise ValueError("codebook data: palette, centroids and cluster sizes disagree.")
        codebook._set_fitted(palette, centroids, dtype, scale if scale.ndim else float(scale))
        codebook.n_iter_, codebook.n_init_ = int(fit["n_iter"]), int(fit["n_init"])
        codebook.converged_ = bool(fit["converged"])
        codebook.n_distinct_colors_ = int(fit["n_distinct_colors"])
        codebook.inertia_ = float(fit["inertia"])
        codebook.cluster_sizes_ = sizes
        codebook.fit_seconds_ = 0.0
        return codebook

    @classmethod
    def from_palette(cls, palette, *, dtype=None, **params) -> Codebook:
        """A codebook of given colours (a user's palette, or one from another tool).

        Parameters
        ----------
        palette : array (K, C)
            The codewords; for a colour space other than ``"rgb"`` they are RGB and are
            encoded against in that space.
        dtype : dtype, optional
            The images' dtype; default the palette's.
        **params
            Codebook parameters (``color_space``, ``stain_vectors``, ...).
        """
        palette = np.asarray(palette)
        if palette.ndim == 1:
            palette = palette[:, np.newaxis]
        if palette.ndim != 2 or palette.shape[0] < 1:
            raise ValueError(f"palette must have shape (K, C), got {palette.shape}.")
        palette = palette.astype(palette.dtype if dtype is None else dtype)
        codebook = cls(palette.shape[0], **params)
        codebook.check_params(fit=False)
        codebook.check_channels(palette.shape[1], "palette")
        codebook.space_scale_ = 1.0
        centroids = np.asarray(codebook._to_space(palette), dtype=np.float64)
        codebook._set_fitted(palette, centroids, palette.dtype, 1.0)
        codebook.n_iter_ = codebook.n_init_ = codebook.n_distinct_colors_ = 0
        codebook.converged_ = True
        codebook.inertia_ = float("nan")
        codebook.cluster_sizes_ = np.zeros(palette.shape[0], dtype=np.int64)
        codebook.fit_seconds_ = 0.0
        return codebook

    def _set_fitted(self, palette, centroids, dtype, scale) -> None:
        """The state that encoding and decoding need."""
        self.space_scale_ = scale
        self.palette_ = palette
        self.centroids_ = centroids
        rgb = self.color_space.lower() == "rgb"
        self._encode_centers = palette.astype(np.float64) if rgb else centroids
        self.n_colors_ = palette.shape[0]
        self.dtype_ = np.dtype(dtype)
        self.channels_ = palette.shape[1]

    # -- fitting -----------------------------------------------------------------------

    def fit(self, images, *, mask=None, progress=None) -> Codebook:
        """Fit the codebook to an image, or to several images together.

        Parameters
        ----------
        images : array or list of arrays
            Each of shape (..., C) (colour axis at ``channel_axis``); all with the same C
            and dtype.
        mask : bool array, or a list of them (one per image, None for all pixels), optional
            Fit only the pixels where the mask is True (tissue, say).
        progress : callable, optional
            Called as ``progress(stage, fraction_done)`` with stage ``"histogram"`` or
            ``"fit"``; an exception raised in it stops the fit (use it to cancel).

        Returns
        -------
        self
        """
        imgs = list(images) if isinstance(images, list | tuple) else [images]
        if not imgs:
            raise ValueError("images is an empty list; pass at least one image.")
        masks = list(mask) if isinstance(mask, list | tuple) else [mask] * len(imgs)
        if len(masks) != len(imgs):
            raise ValueError(f"mask: expected one per image ({len(imgs)}), got {len(masks)}.")
        several = len(imgs) > 1
        hists = [
            self.histogram(
                img,
                mask=m,
                progress=progress,
                name=f"images[{i}]",
                mask_name=f"mask[{i}]" if several else "mask",
            )
            for i, (img, m) in enumerate(zip(imgs, masks, strict=True))
        ]
        first = hists[0]
        for i, h in enumerate(hists[1:], 1):
            if h.colors.shape[1] != first.colors.shape[1] or h.colors.dtype != first.colors.dtype:
                raise ValueError(
                    f"images[{i}] has {h.colors.shape[1]} channels of {h.colors.dtype}, but "
                    f"images[0] has {first.colors.shape[1]} of {first.colors.dtype}; a "
                    "codebook is fitted to images of one kind."
                )
        hist = hists[0] if len(hists) == 1 else ColorHistogram.merge(hists)
        self.fit_histogram(hist, first.colors.dtype, progress=progress)
        return self

    def histogram(
        self, image, *, mask=None, progress=None, name="image", mask_name="mask"
    ) -> ColorHistogram:
        """The colour histogram a fit counts for one image: its distinct colours (the
        channels clustered, in the image's dtype) and their pixel counts, inside ``mask``.

        Histograms of several images merged with ``ColorHistogram.merge`` and given to
        :meth:`fit_histogram` fit one codebook to them all with only one image in memory
        at a time (a cohort); the result equals :meth:`fit` on the list of images.
        """
        colors = self._colors(self._check(image, name))[0]
        pixels = (
            colors.reshape(-1, colors.shape[-1])
            if mask is None
            else colors[check_mask(mask, colors.shape[:-1], mask_name)]
        )
        threads = resolve(self.n_threads)
        return ColorHistogram.from_pixels(pixels, progress=progress, n_threads=threads)

    def check_params(self, *, fit: bool = True) -> tuple[int, str, int, int]:
        """Validate the parameters (for a fit, or for a palette given as it is with
        ``fit=False``); return K, colour space, seedings and iterations."""
        n_colors = check_n_colors(self.n_colors, fit=fit)
        space = check_choice(self.color_space, "color_space", COLOR_SPACES)
        if space in STAIN_SPACES:
            stain_space(space, self.stain_vectors)  # (validates the vectors)
        elif self.stain_vectors is not None:
            raise ValueError(
                f"stain_vectors are for the stain spaces {STAIN_SPACES}; color_space is {space!r}."
            )
        check_choice(self.alpha, "alpha", ALPHA_MODES)
        effort = check_effort(self.effort)
        resolve(self.n_threads)  # (validates it)
        if self.n_init == "auto":
            n_init = Plan.from_effort(effort, n_colors).n_init
        else:
            n_init = check_int(self.n_init, "n_init")
            if not 1 <= n_init <= MAX_N_INIT:
                raise ValueError(
                    f"n_init must be 'auto' or from 1 to {MAX_N_INIT:,}, got {n_init:,}."
                )
        max_iter = check_int(self.max_iter, "max_iter")
        if not 1 <= max_iter <= MAX_ITER:
            raise ValueError(f"max_iter must be from 1 to {MAX_ITER:,}, got {max_iter:,}.")
        if not isinstance(self.tol, int | float) or not np.isfinite(self.tol) or self.tol < 0:
            raise ValueError(f"tol must be a finite number >= 0, got {self.tol!r}.")
        return n_colors, space, n_init, max_iter

    def _check(self, image, name="image") -> np.ndarray:
        self.check_params(fit=not self.is_fitted)
        arr = check_image(image, channel_axis=self.channel_axis, name=name)
        self.check_channels(arr.shape[-1], name)
        return arr

    def check_channels(self, channels: int, name: str = "image") -> None:
        """Raise ValueError if the colour space cannot cluster images of ``channels``."""
        space = self.color_space.lower()
        if space != "rgb" and self.clustered_channels(channels) != 3:
            raise ValueError(
                f"color_space={space!r} needs RGB (3 channels, or RGBA with alpha='ignore'); "
                f"{name} has {channels} channel(s). Use color_space='rgb'."
            )

    def clustered_channels(self, channels: int) -> int:
        """Channels clustered for an image of ``channels``: 3 for RGBA with alpha ignored."""
        return 3 if channels == 4 and self.alpha.lower() == "ignore" else channels

    def _colors(self, arr: np.ndarray):
        """Split the channels that are clustered from an ignored alpha channel."""
        if self.clustered_channels(arr.shape[-1]) != arr.shape[-1]:
            return arr[..., :3], arr[..., 3]
        return arr, None

    def _to_space(self, colors: np.ndarray) -> np.ndarray:
        """Colours (M, C) in the image dtype -> points in the clustering space: 8- and
        16-bit colours as they are (the engine sums them exactly), others as float64."""
        space = self.color_space.lower()
        if space != "rgb":
            with np.errstate(all="ignore"):
                points = to_space(colors, space, peak_value(colors.dtype), self.stain_vectors)
            if not np.isfinite(points).all():
                raise ValueError(
                    f"color_space={space!r}: the colours are too large to convert (expected "
                    "values in 0 .. 1 for float images); use color_space='rgb'."
                )
            return points * getattr(self, "space_scale_", 1.0)
        if colors.dtype in (np.uint8, np.uint16):
            return colors
        return colors.astype(np.float64)

    def fit_histogram(self, hist: ColorHistogram, dtype: np.dtype, progress=None) -> np.ndarray:
        """Fit on a colour histogram (one built chunk by chunk, say); label each colour.

        Parameters
        ----------
        hist : ColorHistogram
            Distinct colours (in the image dtype) and their pixel counts.
        dtype : numpy dtype
            The images' dtype, which the palette takes.
        progress : callable, optional
            As in :meth:`fit`.

        Returns
        -------
        ndarray, shape (M,)
            The codeword index of each of the histogram's colours.
        """
        return self._fit_histogram(hist, dtype, progress)

    def _fit_histogram(self, hist, dtype, progress=None):
        n_colors, space, n_init, max_iter = self.check_params()
        threads = resolve(self.n_threads)
        start = time.perf_counter()
        self.space_scale_ = 1.0
        points = self._to_space(hist.colors)
        weights = hist.counts.astype(np.float64)  # converted once, for the fit and the error
        if space in STAIN_SPACES:
            # Each stain counts alike: its amounts over its spread in the pixels fitted
            # (raw, the densest stain would decide every split).
            mean = weights @ points / weights.sum()
            spread = np.sqrt(np.maximum(weights @ (points - mean) ** 2 / weights.sum(), 0.0))
            self.space_scale_ = 1.0 / np.where(spread > 0, spread, 1.0)
            points = points * self.space_scale_
        n_distinct = hist.colors.shape[0]
        if n_distinct <= n_colors:
            if n_distinct < n_colors:
                warnings.warn(
                    f"the image has only {n_distinct} distinct colours, fewer than "
                    f"n_colors={n_colors}; the codebook is those {n_distinct} colours "
                    "(lossless) and n_colors_ is set to that number.",
                    FewColorsWarning,
                    stacklevel=3,
                )
            centers = points.astype(np.float64)
            labels = np.arange(n_distinct)
            result = None
            n_iter, runs, converged = 0, 0, True
        else:
            result = weighted_kmeans(
                points,
                weights,
                n_colors,
                n_init=n_init,
                effort=self.effort,
                max_iter=max_iter,
                tol=self.tol,
                random_state=self.random_state,
                progress=progress,
                n_threads=threads,
            )
            centers, labels = result.centers, result.labels
            n_iter, runs, converged = result.n_iter, result.n_init, result.converged
        k = centers.shape[0]
        if space == "rgb":
            # (a lossless codebook is the colours themselves, exact in any dtype)
            palette = hist.colors.copy() if result is None else _to_dtype(centers, dtype)
            order = _canonical_order(palette, centers)
            palette, centers = palette[order], centers[order]
            if result is None:
                labels = np.argsort(order)[labels]
            else:
                result = result.reorder(order)
                labels = result.labels
                # Encode against the codewords a decoder really has (rounded, or in a
                # narrower float type), not the means; ties break as in encode().
                if np.dtype(dtype) != np.float64:
                    labels = result.relabel(palette.astype(np.float64))
            self._encode_centers = palette.astype(np.float64)
            error_points = points
            error_centers = self._encode_centers
        else:
            # The decoder's colour for a Lab cluster is the mean of its members in RGB.
            sums, mass = cluster_sums(hist.colors, hist.counts, labels, k, self.n_threads)
            means = sums / mass[:, np.newaxis]
            palette = hist.colors.copy() if result is None else _to_dtype(means, dtype)
            order = _canonical_order(palette, centers)
            palette, centers = palette[order], centers[order]
            labels = np.argsort(order)[labels]
            self._encode_centers = centers
            error_points = hist.colors
            error_centers = palette.astype(np.float64)
        self.palette_ = palette
        self.centroids_ = centers
        self.n_colors_ = k
        self.dtype_ = np.dtype(dtype)
        self.channels_ = palette.shape[1]
        self.n_iter_ = n_iter
        self.n_init_ = runs
        self.converged_ = converged
        self.n_distinct_colors_ = n_distinct
        error, counts = weighted_error(error_points, weights, error_centers, labels, threads)
        self.inertia_ = float(error)
        self.cluster_sizes_ = np.rint(counts).astype(np.int64)
        self.fit_seconds_ = time.perf_counter() - start
        return labels

    # -- encoding and decoding -------------------------------------------------------------

    def check_fitted(self) -> None:
        """Raise RuntimeError unless :meth:`fit` has run."""
        if not self.is_fitted:
            raise RuntimeError("this Codebook is not fitted yet; call fit(image) first.")

    def encode(self, image) -> np.ndarray:
        """The index of the nearest codeword for every pixel.

        Parameters
        ----------
        image : array, shape (..., C)
            Same channels and dtype as the images fitted.

        Returns
        -------
        labels : ndarray, shape ``image.shape[:-1]``, uint8 (K <= 256) or uint16
        """
        self.check_fitted()
        colors, _ = self._colors(self._check(image))
        if colors.shape[-1] != self.channels_:
            raise ValueError(
                f"image has {colors.shape[-1]} colour channels, but this codebook was fitted "
                f"on {self.channels_}."
            )
        pixels = colors.reshape(-1, colors.shape[-1])
        hist = ColorHistogram.from_pixels(pixels, n_threads=self.n_threads)
        labels = hist.lookup(pixels, self.label_colors(hist.colors), n_threads=self.n_threads)
        return labels.reshape(colors.shape[:-1])

    def label_colors(self, colors: np.ndarray, n_threads: int | None = None) -> np.ndarray:
        """The nearest codeword's index for each of a list of colours (M, C), image dtype,
        on ``n_threads`` (None: the codebook's ``n_threads``)."""
        self.check_fitted()
        threads = self.n_threads if n_threads is None else n_threads
        per_color = assign(self._to_space(colors), self._encode_centers, threads)
        return per_color.astype(index_dtype(self.n_colors_))

    def fit_encode(self, image, *, mask=None, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """Fit to one in-memory image, then encode and decode it in one pass over its pixels.

        The same as ``fit(image)``, ``labels = encode(image)``, ``decode(labels)`` (with
        an ignored alpha channel carried over unchanged), at about the cost of the fit.

        Parameters
        ----------
        image : array, shape (..., C)
            As for :meth:`fit`.
        mask : bool array, ``image``'s shape without the colour axis, optional
            Fit and encode only these pixels: the others get label 0 and keep their colour
            in the reconstruction.
        progress : callable, optional
            ``progress(stage, fraction_done)`` with stages ``"histogram"``, ``"fit"`` and
            ``"encode"``; an exception raised in it stops the work.

        Returns
        -------
        labels : ndarray, shape ``image.shape[:-1]`` with the colour axis last
        reconstruction : ndarray, the image's shape (colour axis last) and dtype
        """
        arr = self._check(image)
        colors, kept_alpha = self._colors(arr)
        inside = None if mask is None else check_mask(mask, colors.shape[:-1])
        pixels = colors.reshape(-1, colors.shape[-1]) if inside is None else colors[inside]
        threads = resolve(self.n_threads)
        hist = ColorHistogram.from_pixels(pixels, progress=progress, n_threads=threads)
        per_color = self._fit_histogram(hist, arr.dtype, progress)
        labels, codewords = encode_decode(
            hist,
            pixels,
            per_color.astype(index_dtype(self.n_colors_)),
            self.palette_,
            progress=progress,
            n_threads=threads,
        )
        if inside is not None:
            full = np.zeros(colors.shape[:-1], dtype=labels.dtype)
            full[inside] = labels
            reconstruction = np.array(arr, copy=True)
            reconstruction[inside, : colors.shape[-1]] = codewords
            return full, reconstruction
        labels = labels.reshape(colors.shape[:-1])
        codewords = codewords.reshape(colors.shape)
        if kept_alpha is None:
            return labels, codewords
        reconstruction = np.empty_like(arr)
        reconstruction[..., :3] = codewords
        reconstruction[..., 3] = kept_alpha
        return labels, reconstruction

    def decode(self, labels) -> np.ndarray:
        """The codeword of every label: ``palette_[labels]``.

        Parameters
        ----------
        labels : integer array
            Values in ``0 .. n_colors_ - 1``.

        Returns
        -------
        ndarray, shape ``labels.shape + (C,)``, the fitted dtype
        """
        self.check_fitted()
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}.")
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_colors_):
            raise ValueError(
                f"labels must lie in 0 .. {self.n_colors_ - 1} (the codebook has "
                f"{self.n_colors_} colours); got values from {labels.min()} to {labels.max()}."
            )
        out = take_rows(self.palette_, labels.reshape(-1))
        return out.reshape(*labels.shape, self.palette_.shape[1])


def _canonical_order(palette: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Codewords sorted by colour (first channel first), ties by centroid: an order that
    does not depend on which seeding won."""
    return np.lexsort((*centers.T[::-1], *palette.T[::-1]))


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float colours -> the image dtype: rounded to nearest and clipped to its range.

    The clipping happens in the target dtype: float64 cannot hold int64's or uint64's
    extremes (2**63 - 1 rounds up to 2**63), so a value at or past them becomes the extreme
    itself instead of wrapping around."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        rounded = np.rint(values)
        out = np.empty(rounded.shape, dtype=dtype)
        high, low = rounded >= float(info.max), rounded <= float(info.min)
        inside = ~(high | low)
        out[high], out[low] = info.max, info.min
        out[inside] = rounded[inside].astype(dtype)
        return out
    info = np.finfo(dtype)
    return np.clip(values, info.min, info.max).astype(dtype)
