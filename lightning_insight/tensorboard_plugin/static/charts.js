// Plain SVG charts: line charts over epochs (with thresholds, bands and alert markers), a correlation
// matrix, a scatter plot and the epoch-range brush. Every chart over epochs carries one
// `.epoch-marker` per epoch so that hovering an epoch anywhere can highlight it everywhere.

import { clear, fmt, s, tooltip } from "./dom.js";

const MARGIN = { top: 10, right: 12, bottom: 24, left: 44 };

function finite(value) {
  return typeof value === "number" && Number.isFinite(value);
}

function linear(domain, range) {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  const span = d1 - d0 || 1;
  const scale = (value) => r0 + ((value - d0) / span) * (r1 - r0);
  scale.invert = (pixel) => d0 + ((pixel - r0) / (r1 - r0 || 1)) * span;
  return scale;
}

/** Tick labels with as many decimals as the tick step needs (0.692, 0.693 rather than 0.69, 0.69). */
function tickFormat(ticks) {
  if (ticks.length < 2) return (value) => fmt(value, 3);
  const step = Math.abs(ticks[1] - ticks[0]);
  if (step >= 1e5 || step < 1e-6) return (value) => fmt(value, 3);
  let decimals = 0;
  while (decimals < 8 && Math.abs(Math.round(step * 10 ** decimals) - step * 10 ** decimals) > 1e-6) decimals += 1;
  return (value) => String(Number(value.toFixed(decimals)));
}

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((m) => m >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push(Number(t.toPrecision(12)));
  }
  return ticks;
}

function epochTicks(lo, hi, count) {
  if (hi <= lo) return [lo];
  const step = Math.max(1, Math.ceil((hi - lo) / count));
  const ticks = [];
  for (let t = lo; t <= hi; t += step) ticks.push(t);
  return ticks;
}

function valueDomain(values) {
  const good = values.filter(finite);
  if (!good.length) return [0, 1];
  let lo = Math.min(...good);
  let hi = Math.max(...good);
  if (hi === lo) {
    const pad = Math.abs(lo) * 0.1 || 0.5;
    return [lo - pad, hi + pad];
  }
  const pad = (hi - lo) * 0.08;
  lo -= pad;
  hi += pad;
  return [lo, hi];
}

/** Nearest epoch (of `epochs`) to an x pixel. */
function nearestEpoch(epochs, x, pixel) {
  let best = null;
  let bestDistance = Infinity;
  for (const epoch of epochs) {
    const distance = Math.abs(x(epoch) - pixel);
    if (distance < bestDistance) {
      best = epoch;
      bestDistance = distance;
    }
  }
  return best;
}

function pointerX(svg, event) {
  const box = svg.getBoundingClientRect();
  const width = Number(svg.getAttribute("width")) || box.width;
  return ((event.clientX - box.left) * width) / (box.width || 1);
}

function axes(group, x, y, xTicks, yTicks, width, height) {
  const axis = s("g", { class: "axis" });
  axis.append(s("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: height - MARGIN.bottom, y2: height - MARGIN.bottom }));
  axis.append(s("line", { x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: height - MARGIN.bottom }));
  for (const tick of xTicks) {
    axis.append(s("text", { x: x(tick), y: height - MARGIN.bottom + 14, "text-anchor": "middle", text: String(tick) }));
  }
  const label = tickFormat(yTicks);
  for (const tick of yTicks) {
    axis.append(s("line", { class: "grid", x1: MARGIN.left, x2: width - MARGIN.right, y1: y(tick), y2: y(tick) }));
    axis.append(s("text", { x: MARGIN.left - 4, y: y(tick) + 3, "text-anchor": "end", text: label(tick) }));
  }
  group.append(axis);
}

/** Hover, click and the epoch markers shared by every chart over epochs. */
function linkEpochs(svg, epochs, x, height, options) {
  const markers = s("g", { class: "epoch-markers" });
  for (const epoch of epochs) {
    markers.append(
      s("line", {
        class: "epoch-marker" + (epoch === options.selectedEpoch ? " selected" : ""),
        "data-epoch": epoch,
        x1: x(epoch),
        x2: x(epoch),
        y1: MARGIN.top,
        y2: height - MARGIN.bottom,
      }),
    );
  }
  svg.append(markers);
  svg.addEventListener("pointermove", (event) => {
    if (options.onHover) options.onHover(nearestEpoch(epochs, x, pointerX(svg, event)));
  });
  svg.addEventListener("pointerleave", () => {
    if (options.onHover) options.onHover(null);
  });
  svg.addEventListener("click", (event) => {
    const epoch = nearestEpoch(epochs, x, pointerX(svg, event));
    if (options.onSelect && epoch !== null) options.onSelect(epoch);
  });
}

/** Path data of the line's segments: [included segments, segments touching an excluded point]. */
function segments(points, x, y) {
  let kept = "";
  let greyed = "";
  for (let index = 0; index + 1 < points.length; index += 1) {
    const [a, b] = [points[index], points[index + 1]];
    if (!finite(a.value) || !finite(b.value)) continue;
    const d = `M${x(a.epoch).toFixed(1)},${y(a.value).toFixed(1)}L${x(b.epoch).toFixed(1)},${y(b.value).toFixed(1)}`;
    if (a.excluded || b.excluded) greyed += d;
    else kept += d;
  }
  return [kept, greyed];
}

/**
 * A line chart over epochs.
 *
 * options: {domain: [lo, hi], epochs: [int] (the markers), series: [{label, color, points:
 * [{epoch, value, excluded}], dashed, strong}], bands: [{color, points: [{epoch, low, high}]}],
 * thresholds: [{value, label}], alerts: [{epoch, value, text}], selectedEpoch, onHover, onSelect,
 * width, height, label}
 */
export function lineChart(options) {
  const width = options.width || 300;
  const height = options.height || 170;
  const [lo, hi] = options.domain;
  const inDomain = (point) => point.epoch >= lo && point.epoch <= hi;
  const series = options.series.map((item) => ({ ...item, points: item.points.filter(inDomain) }));
  const bands = (options.bands || []).map((band) => ({ ...band, points: band.points.filter(inDomain) }));
  const thresholds = options.thresholds || [];
  const alerts = (options.alerts || []).filter(inDomain);
  const values = [
    ...series.flatMap((item) => item.points.map((point) => point.value)),
    ...bands.flatMap((band) => band.points.flatMap((point) => [point.low, point.high])),
    ...thresholds.map((threshold) => threshold.value),
    ...alerts.map((alert) => alert.value),
  ];
  const x = linear(hi > lo ? [lo, hi] : [lo - 0.5, hi + 0.5], [MARGIN.left, width - MARGIN.right]);
  const [y0, y1] = valueDomain(values);
  const y = linear([y0, y1], [height - MARGIN.bottom, MARGIN.top]);
  const svg = s("svg", {
    class: "chart line-chart",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": options.label || "",
  });
  svg.append(s("rect", { class: "background", x: 0, y: 0, width, height }));
  axes(svg, x, y, epochTicks(lo, hi, 6), niceTicks(y0, y1, 4), width, height);
  for (const band of bands) {
    const good = band.points.filter((point) => finite(point.low) && finite(point.high));
    if (good.length < 1) continue;
    const top = good.map((point) => `${x(point.epoch).toFixed(1)},${y(point.high).toFixed(1)}`);
    const bottom = good.map((point) => `${x(point.epoch).toFixed(1)},${y(point.low).toFixed(1)}`).reverse();
    svg.append(
      s("polygon", { class: "band", fill: band.color, points: [...top, ...bottom].join(" ") }, [
        tooltip(band.label || "confidence band"),
      ]),
    );
  }
  for (const threshold of thresholds) {
    if (!finite(threshold.value)) continue;
    svg.append(
      s("line", { class: "threshold", x1: MARGIN.left, x2: width - MARGIN.right, y1: y(threshold.value), y2: y(threshold.value) }, [
        tooltip(threshold.label),
      ]),
    );
  }
  for (const item of series) {
    const [kept, greyed] = segments(item.points, x, y);
    const path = s("path", {
      class: "series" + (item.strong ? " strong" : "") + (item.dashed ? " dashed" : ""),
      d: kept,
      stroke: item.color,
    });
    path.append(tooltip(item.label));
    svg.append(path);
    // min_support: segments touching an excluded point are greyed
    if (greyed) svg.append(s("path", { class: "series excluded-segment", d: greyed }, [tooltip(`${item.label} (excluded)`)]));
    for (const point of item.points) {
      if (!finite(point.value)) continue;
      const text = `${item.label} · epoch ${point.epoch}: ${fmt(point.value)}` + (point.excluded ? ` (excluded: ${point.excluded})` : "");
      svg.append(
        s("circle", {
          class: "point" + (point.excluded ? " excluded" : ""),
          cx: x(point.epoch),
          cy: y(point.value),
          r: point.excluded ? 2.5 : 2,
          fill: point.excluded ? null : item.color,
        }, [tooltip(text)]),
      );
    }
  }
  for (const alert of alerts) {
    if (!finite(alert.value)) continue;
    const cx = x(alert.epoch);
    const cy = y(alert.value);
    svg.append(
      s("path", {
        class: "alert-marker",
        "data-epoch": alert.epoch,
        d: `M${cx},${cy - 6}L${cx + 5},${cy + 3}L${cx - 5},${cy + 3}Z`,
      }, [tooltip(alert.text)]),
    );
  }
  if (!series.some((item) => item.points.some((point) => finite(point.value)))) {
    svg.append(s("text", { class: "empty", x: (MARGIN.left + width - MARGIN.right) / 2, y: MARGIN.top + 14, "text-anchor": "middle", text: "no values (undefined or excluded)" }));
  }
  const markerEpochs = (options.epochs || []).filter((epoch) => epoch >= lo && epoch <= hi);
  linkEpochs(svg, markerEpochs, x, height, options);
  return svg;
}

function divergingColor(value) {
  if (!finite(value)) return "#eeeeee";
  const t = Math.max(-1, Math.min(1, value));
  const mix = (a, b, f) => Math.round(a + (b - a) * f);
  // white -> red for positive, white -> blue for negative
  const [r, g, b] = t >= 0 ? [mix(255, 214, t), mix(255, 39, t), mix(255, 40, t)] : [mix(255, 31, -t), mix(255, 119, -t), mix(255, 180, -t)];
  return `rgb(${r},${g},${b})`;
}

function shortLabel(tag, max = 28) {
  return tag.length > max ? "…" + tag.slice(tag.length - max + 1) : tag;
}

/** A correlation matrix: cells `.corr-cell` with data-i/data-j; onClick(i, j). */
export function correlationMatrix(options) {
  const labels = options.labels;
  const cell = 46;
  const left = 190;
  const top = 12;
  const width = left + cell * labels.length + 10;
  const height = top + cell * labels.length + 100;
  const svg = s("svg", { class: "chart matrix", width, height, viewBox: `0 0 ${width} ${height}` });
  labels.forEach((label, index) => {
    svg.append(
      s("text", { class: "row-label", x: left - 6, y: top + index * cell + cell / 2 + 4, "text-anchor": "end", text: shortLabel(label) }, [tooltip(label)]),
    );
    const cx = left + index * cell + cell / 2;
    const cy = top + labels.length * cell + 8;
    svg.append(
      s("text", { class: "col-label", x: cx, y: cy, transform: `rotate(45 ${cx} ${cy})`, text: shortLabel(label, 20) }, [tooltip(label)]),
    );
  });
  labels.forEach((rowLabel, i) => {
    labels.forEach((columnLabel, j) => {
      const value = options.values[i][j];
      const n = options.n ? options.n[i][j] : null;
      const selected = options.selected && options.selected[0] === i && options.selected[1] === j;
      const rect = s("rect", {
        class: "corr-cell" + (selected ? " selected" : ""),
        "data-i": i,
        "data-j": j,
        x: left + j * cell,
        y: top + i * cell,
        width: cell - 2,
        height: cell - 2,
        fill: divergingColor(value),
      }, [tooltip(`${rowLabel} vs ${columnLabel}${options.lag ? ` (lag ${options.lag})` : ""}: ${fmt(value)}${n === null ? "" : ` over ${n} epochs`}`)]);
      rect.addEventListener("click", () => options.onClick(i, j));
      svg.append(rect);
      svg.append(s("text", { class: "cell-value", x: left + j * cell + cell / 2 - 1, y: top + i * cell + cell / 2 + 3, "text-anchor": "middle", text: fmt(value, 2) }));
    });
  });
  return svg;
}

/** A scatter plot of two series by epoch; points are `.scatter-point.epoch-marker` (linked). */
export function scatterPlot(options) {
  const width = options.width || 380;
  const height = options.height || 300;
  const margin = { top: 12, right: 14, bottom: 40, left: 56 };
  const points = options.points.filter((point) => finite(point.x) && finite(point.y));
  const [x0, x1] = valueDomain(points.map((point) => point.x));
  const [y0, y1] = valueDomain(points.map((point) => point.y));
  const x = linear([x0, x1], [margin.left, width - margin.right]);
  const y = linear([y0, y1], [height - margin.bottom, margin.top]);
  const svg = s("svg", { class: "chart scatter-chart", width, height, viewBox: `0 0 ${width} ${height}` });
  svg.append(s("rect", { class: "background", x: 0, y: 0, width, height }));
  const axis = s("g", { class: "axis" });
  axis.append(s("line", { x1: margin.left, x2: width - margin.right, y1: height - margin.bottom, y2: height - margin.bottom }));
  axis.append(s("line", { x1: margin.left, x2: margin.left, y1: margin.top, y2: height - margin.bottom }));
  const xTicks = niceTicks(x0, x1, 4);
  const yTicks = niceTicks(y0, y1, 4);
  const xLabel = tickFormat(xTicks);
  const yLabel = tickFormat(yTicks);
  for (const tick of xTicks) {
    axis.append(s("text", { x: x(tick), y: height - margin.bottom + 14, "text-anchor": "middle", text: xLabel(tick) }));
  }
  for (const tick of yTicks) {
    axis.append(s("text", { x: margin.left - 4, y: y(tick) + 3, "text-anchor": "end", text: yLabel(tick) }));
  }
  axis.append(s("text", { class: "axis-label", x: (margin.left + width - margin.right) / 2, y: height - 6, "text-anchor": "middle", text: shortLabel(options.xLabel, 50) }));
  axis.append(s("text", { class: "axis-label", x: 12, y: (margin.top + height - margin.bottom) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(margin.top + height - margin.bottom) / 2})`, text: shortLabel(options.yLabel, 40) }));
  svg.append(axis);
  for (const point of points) {
    const circle = s("circle", {
      class: "scatter-point epoch-marker" + (point.epoch === options.selectedEpoch ? " selected" : ""),
      "data-epoch": point.epoch,
      cx: x(point.x),
      cy: y(point.y),
      r: 4,
    }, [tooltip(`epoch ${point.epoch}: ${options.xLabel} ${fmt(point.x)}, ${options.yLabel} ${fmt(point.y)}`)]);
    circle.addEventListener("pointerenter", () => options.onHover && options.onHover(point.epoch));
    circle.addEventListener("pointerleave", () => options.onHover && options.onHover(null));
    circle.addEventListener("click", () => options.onSelect && options.onSelect(point.epoch));
    svg.append(circle);
  }
  return svg;
}

/** The epoch-range brush: drag over the strip; onChange([lo, hi]) or onChange(null) to clear. */
export function brushStrip(container, options) {
  clear(container);
  const epochs = options.epochs;
  const width = options.width || 640;
  const height = 44;
  if (!epochs.length) return;
  const lo = epochs[0];
  const hi = epochs[epochs.length - 1];
  const x = linear(hi > lo ? [lo, hi] : [lo - 0.5, hi + 0.5], [MARGIN.left, width - MARGIN.right]);
  const svg = s("svg", { class: "chart brush-strip", width, height, viewBox: `0 0 ${width} ${height}` });
  svg.append(s("rect", { class: "background", x: 0, y: 0, width, height }));
  svg.append(s("line", { class: "axis-line", x1: MARGIN.left, x2: width - MARGIN.right, y1: 26, y2: 26 }));
  for (const tick of epochTicks(lo, hi, 10)) {
    svg.append(s("text", { class: "tick", x: x(tick), y: 40, "text-anchor": "middle", text: String(tick) }));
  }
  const range = options.range || [lo, hi];
  const selection = s("rect", { class: "brush-selection", y: 6, height: 20 });
  const place = (a, b) => {
    const left = Math.min(x(a), x(b)) - 4;
    selection.setAttribute("x", left);
    selection.setAttribute("width", Math.abs(x(b) - x(a)) + 8);
  };
  place(range[0], range[1]);
  svg.append(selection);
  linkEpochs(svg, epochs, x, 30, { selectedEpoch: options.selectedEpoch, onHover: options.onHover });
  let start = null;
  svg.addEventListener("pointerdown", (event) => {
    start = nearestEpoch(epochs, x, pointerX(svg, event));
    svg.setPointerCapture(event.pointerId);
    place(start, start);
  });
  svg.addEventListener("pointermove", (event) => {
    if (start === null) return;
    place(start, nearestEpoch(epochs, x, pointerX(svg, event)));
  });
  svg.addEventListener("pointerup", (event) => {
    if (start === null) return;
    const end = nearestEpoch(epochs, x, pointerX(svg, event));
    const picked = [Math.min(start, end), Math.max(start, end)];
    start = null;
    options.onChange(picked[0] === lo && picked[1] === hi ? null : picked);
  });
  container.append(svg);
}

/** Linked views: highlight one epoch's markers in every chart (null clears). */
export function highlightEpoch(root, epoch) {
  for (const marker of root.querySelectorAll(".epoch-marker")) {
    marker.classList.toggle("highlight", epoch !== null && marker.getAttribute("data-epoch") === String(epoch));
  }
}

/** The selected epoch, drawn in every chart. */
export function selectEpoch(root, epoch) {
  for (const marker of root.querySelectorAll(".epoch-marker")) {
    marker.classList.toggle("selected", marker.getAttribute("data-epoch") === String(epoch));
  }
}
