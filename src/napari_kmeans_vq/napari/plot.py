"""A small curve plot for the dock widget: a quality measure against K, points clickable.

Drawn with QPainter (no plotting library): the sweep's or the K search's points joined
by a line, a dashed target line, the current K ringed. Clicking near a point emits
:attr:`CurvePlot.picked` with its K. The points come from
:func:`napari_kmeans_vq.napari.layers.curve_points`; this module only draws.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["CurvePlot"]

# Margins (pixels) around the plotting area: left for the y labels, bottom for K.
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 10, 10, 30
# A click this close to a point (pixels) picks it.
_PICK_RADIUS = 10


def _ticks(low: float, high: float) -> list[float]:
    """Three round-ish values spanning low .. high."""
    if high <= low:
        return [low]
    return [low, (low + high) / 2, high]


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


class CurvePlot(QWidget):
    """One series of ``(K, value)`` points, with K on a log2 axis when it spans a lot.

    Signals
    -------
    picked(int)
        The K of the point clicked.
    """

    picked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setMouseTracking(False)
        self.setToolTip("Click a point to run that K.")
        self._points: list[tuple[int, float]] = []
        self._label = ""
        self._target: float | None = None
        self._current: int | None = None

    def sizeHint(self):
        hint = super().sizeHint()
        hint.setHeight(170)
        return hint

    # -- data ---------------------------------------------------------------------------

    def set_curve(self, points, label: str, *, target=None, current=None) -> None:
        """Show ``points`` ((K, value) pairs; non-finite values are left out)."""
        self._points = sorted(
            (int(k), float(v)) for k, v in points if v is not None and math.isfinite(v)
        )
        self._label = label
        self._target = None if target is None or not math.isfinite(target) else float(target)
        self._current = current
        self.update()

    @property
    def points(self) -> list[tuple[int, float]]:
        return list(self._points)

    @property
    def current(self) -> int | None:
        return self._current

    # -- geometry -----------------------------------------------------------------------

    def _area(self) -> QRectF:
        return QRectF(
            _LEFT,
            _TOP,
            max(self.width() - _LEFT - _RIGHT, 1),
            max(self.height() - _TOP - _BOTTOM, 1),
        )

    def _log_k(self) -> bool:
        ks = [k for k, _ in self._points]
        return len(ks) > 1 and min(ks) >= 1 and max(ks) / min(ks) >= 8

    def _x(self, k: float) -> float:
        ks = [p[0] for p in self._points]
        lo, hi = min(ks), max(ks)
        f = (lambda v: math.log2(v)) if self._log_k() else (lambda v: v)
        span = f(hi) - f(lo)
        area = self._area()
        share = 0.5 if span == 0 else (f(k) - f(lo)) / span
        return area.left() + share * area.width()

    def _value_range(self) -> tuple[float, float]:
        values = [v for _, v in self._points]
        if self._target is not None:
            values.append(self._target)
        lo, hi = min(values), max(values)
        if hi == lo:
            lo, hi = lo - 1, hi + 1
        pad = 0.05 * (hi - lo)
        return lo - pad, hi + pad

    def _y(self, value: float) -> float:
        lo, hi = self._value_range()
        area = self._area()
        return area.bottom() - (value - lo) / (hi - lo) * area.height()

    def point_position(self, k: int) -> QPointF:
        """Where the point of K is drawn (widget coordinates)."""
        value = dict(self._points)[k]
        return QPointF(self._x(k), self._y(value))

    def k_at(self, x: float, y: float) -> int | None:
        """The K of the point nearest (x, y), if within the pick radius."""
        best, best_d = None, float(_PICK_RADIUS)
        for k, _ in self._points:
            p = self.point_position(k)
            d = math.hypot(p.x() - x, p.y() - y)
            if d <= best_d:
                best, best_d = k, d
        return best

    # -- Qt events ----------------------------------------------------------------------

    def mousePressEvent(self, event):
        if event.button() == Qt.MouseButton.LeftButton and self._points:
            pos = event.position() if hasattr(event, "position") else event.pos()
            k = self.k_at(pos.x(), pos.y())
            if k is not None:
                self.picked.emit(k)
                event.accept()
                return
        super().mousePressEvent(event)

    def paintEvent(self, event):
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        fg = self.palette().color(self.foregroundRole())
        dim = QColor(fg)
        dim.setAlpha(110)
        area = self._area()
        painter.setPen(QPen(dim, 1))
        painter.drawRect(area)
        if not self._points:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "Run a sweep to see the curve")
            painter.end()
            return
        metrics = painter.fontMetrics()
        # y ticks and label
        values = [v for _, v in self._points]
        for value in _ticks(min(values), max(values)):
            y = self._y(value)
            painter.setPen(QPen(dim, 1))
            painter.drawLine(QPointF(area.left() - 3, y), QPointF(area.left(), y))
            painter.setPen(fg)
            text = _fmt(value)
            painter.drawText(
                QRectF(0, y - metrics.height() / 2, _LEFT - 5, metrics.height()),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                text,
            )
        # x ticks: each K tried, thinned so the labels do not overlap
        last_right = -1e9
        for k, _ in self._points:
            x = self._x(k)
            text = str(k)
            w = metrics.horizontalAdvance(text)
            if x - w / 2 > last_right + 4:
                painter.setPen(fg)
                painter.drawText(QPointF(x - w / 2, area.bottom() + metrics.ascent() + 3), text)
                last_right = x + w / 2
        painter.setPen(fg)
        painter.drawText(
            QRectF(area.left(), self.height() - metrics.height(), area.width(), metrics.height()),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
            f"K   ({self._label})",
        )
        # target line
        accent = QColor("#e5534b")
        if self._target is not None:
            pen = QPen(accent, 1, Qt.PenStyle.DashLine)
            painter.setPen(pen)
            y = self._y(self._target)
            painter.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
        # the curve and its points
        line = QColor("#4c9be8")
        path = QPainterPath()
        for i, (k, v) in enumerate(self._points):
            p = QPointF(self._x(k), self._y(v))
            path.moveTo(p) if i == 0 else path.lineTo(p)
        painter.setPen(QPen(line, 1.5))
        painter.drawPath(path)
        painter.setBrush(line)
        for k, v in self._points:
            p = QPointF(self._x(k), self._y(v))
            painter.drawEllipse(p, 3.5, 3.5)
        if self._current is not None and self._current in dict(self._points):
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(accent, 2))
            painter.drawEllipse(self.point_position(self._current), 6.5, 6.5)
        painter.end()
