// The five views of the page. Each takes the shared context (state, helpers, callbacks) and draws
// into its section; none of them writes data through innerHTML.

import { getJSON, getOptional, safeImageUrl } from "./api.js";
import { brushStrip, correlationMatrix, lineChart, scatterPlot } from "./charts.js";
import { clear, color, fmt, fmtSigned, h } from "./dom.js";

// By default the dynamics view plots the run's own scalars (loss, learning rate, metrics) and the
// headline insight scalars; per-slice, gap, cluster and report tags have their own views below, and
// the filter plots any of them.
function defaultTag(tag) {
  if (tag === "epoch" || tag === "hp_metric") return false;
  return !tag.startsWith("insight/") || /^insight\/(overall|worst)\/(?!count$)/.test(tag);
}
const MAX_DYNAMICS = 36;

function points(epochs, values, extra) {
  return epochs.map((epoch, index) => ({ epoch, value: values[index], ...(extra ? extra(index) : {}) }));
}

function chartBox(title, chart, extra) {
  return h("div", { class: "chart-box" }, [h("h3", { text: title, title }), chart, extra || null]);
}

function message(container, text) {
  container.append(h("p", { class: "note", text }));
}

// ---------------------------------------------------------------- dynamics

/** The metric whose bootstrap interval `tag` bounds (`x_low`, `x_high` -> `x`), when `x` is logged. */
function bandBase(tag, tags) {
  const match = /^(.+)_(low|high)$/.exec(tag);
  return match && tags.has(match[1]) ? match[1] : null;
}

export function renderDynamics(ctx) {
  const grid = clear(document.getElementById("dynamics-charts"));
  const filter = ctx.state.dynamicsFilter.trim().toLowerCase();
  const tags = new Set();
  for (const run of ctx.state.selected) {
    const scalars = ctx.data.scalars.get(run);
    if (scalars) Object.keys(scalars.series).forEach((tag) => tags.add(tag));
  }
  const all = [...tags];
  // A metric's `_low`/`_high` companions are drawn as a band on its own chart, not as charts of
  // their own: a filter matching a companion shows the metric's chart.
  const shown = [
    ...new Set(
      all
        .filter((tag) => (filter ? tag.toLowerCase().includes(filter) : defaultTag(tag)))
        .map((tag) => bandBase(tag, tags) || tag),
    ),
  ].sort((a, b) => Number(a.startsWith("insight/")) - Number(b.startsWith("insight/")) || a.localeCompare(b));
  for (const tag of shown.slice(0, MAX_DYNAMICS)) {
    const series = [];
    const bands = [];
    for (const run of ctx.state.selected) {
      const scalars = ctx.data.scalars.get(run);
      if (!scalars || !(tag in scalars.series)) continue;
      series.push({ label: run, color: ctx.runColor(run), points: points(scalars.epochs, scalars.series[tag]) });
      const [low, high] = [scalars.series[`${tag}_low`], scalars.series[`${tag}_high`]];
      if (low && high) {
        bands.push({
          color: ctx.runColor(run),
          label: `${run}: ${tag} interval (${tag}_low – ${tag}_high)`,
          points: scalars.epochs.map((epoch, i) => ({ epoch, low: low[i], high: high[i] })),
        });
      }
    }
    grid.append(chartBox(tag, lineChart({ ...ctx.chartOptions(), series, bands, width: 280, height: 150, label: tag })));
  }
  const charted = all.filter((tag) => !bandBase(tag, tags));
  const hidden = charted.length - Math.min(shown.length, MAX_DYNAMICS);
  const note = document.getElementById("dynamics-note");
  note.textContent = charted.length
    ? `${Math.min(shown.length, MAX_DYNAMICS)} of ${charted.length} scalar tags` +
      (hidden ? ` (${hidden} more: per-slice, gap and report tags: type in the filter to plot them)` : "") +
      (charted.length < all.length ? "; shaded: the _low–_high interval" : "")
    : "No scalars in the selected runs.";
}

// ---------------------------------------------------------------- slices

function sliceLegend(answer) {
  const legend = h("div", { class: "legend" });
  legend.append(h("span", {}, [h("span", { class: "swatch", style: "background:#212121" }), "overall"]));
  answer.slices.forEach((item, index) => {
    const excluded = item.excluded.some((reason) => reason);
    legend.append(
      h("span", { class: excluded ? "excluded" : "", title: excluded ? "excluded (min_support) at some epochs: greyed" : "" }, [
        h("span", { class: "swatch", style: `background:${color(index)}` }),
        item.slice,
      ]),
    );
  });
  return legend;
}

export async function renderSliceCharts(ctx, token) {
  const box = document.getElementById("slice-chart");
  const { dimension, metric, source } = ctx.state;
  if (!dimension || !metric) {
    clear(box);
    message(box, "No slice reports in the selected runs.");
    return;
  }
  const answers = await Promise.all(
    ctx.state.selected.map((run) =>
      ctx.reportEpochs(run, "fairness", source).length
        ? getOptional("slices", { run, dimension, metric, source }).catch((error) => ({ error }))
        : null,
    ),
  );
  if (!ctx.current("slices", token)) return;
  clear(box);
  ctx.state.selected.forEach((run, index) => {
    const answer = answers[index];
    if (!answer || answer.error) {
      box.append(chartBox(run, h("p", { class: "note", text: answer ? String(answer.error.message) : `no ${dimension} slices` })));
      return;
    }
    const series = [
      { label: "overall", color: "#212121", strong: true, dashed: true, points: points(answer.epochs, answer.overall) },
      ...answer.slices.map((item, sliceIndex) => ({
        label: item.slice,
        color: color(sliceIndex),
        points: points(answer.epochs, item.values, (i) => ({ excluded: item.excluded[i] })),
      })),
    ];
    const chart = lineChart({ ...ctx.chartOptions(), series, width: 460, height: 240, label: `${run} ${metric}` });
    box.append(chartBox(`${run} · ${metric} by ${dimension} (${source})`, chart, sliceLegend(answer)));
  });
}

function sortValue(row, key) {
  if (key === "run" || key === "slice" || key === "dimension") return row[key];
  if (key === "count") return row.count;
  const [kind, metric] = key.split(":");
  return kind === "diff" ? row.difference[metric] : row.values[metric];
}

function compare(a, b) {
  const missingA = a === null || a === undefined;
  const missingB = b === null || b === undefined;
  if (missingA || missingB) return Number(missingA) - Number(missingB);
  if (typeof a === "string" || typeof b === "string") return String(a).localeCompare(String(b));
  return a - b;
}

export async function renderSliceTable(ctx, token) {
  const box = document.getElementById("slice-table-box");
  const { epoch, source } = ctx.state;
  const answers = await Promise.all(
    ctx.state.selected.map((run) =>
      ctx.hasSliceTable(run, epoch) ? getOptional("slice_table", { run, epoch, source }).catch((error) => ({ error })) : null,
    ),
  );
  if (!ctx.current("table", token)) return;
  const notes = [];
  const rows = [];
  const metrics = [];
  ctx.state.selected.forEach((run, index) => {
    const answer = answers[index];
    if (!answer) notes.push(`${run}: no slice report at epoch ${epoch}`);
    else if (answer.error) notes.push(`${run}: ${answer.error.message}`);
    else {
      answer.metrics.forEach((metric) => metrics.includes(metric) || metrics.push(metric));
      answer.rows.forEach((row) => rows.push({ ...row, run }));
    }
  });
  const scope = ctx.state.tableScope;
  const visible = scope === "all" ? rows : rows.filter((row) => row.dimension === ctx.state.dimension);
  const { key, direction } = ctx.state.tableSort;
  visible.sort((a, b) => direction * compare(sortValue(a, key), sortValue(b, key)));
  const focus = metrics.includes(ctx.state.metric) ? ctx.state.metric : metrics[0];
  const lowerIsBetter = /loss|error|fpr|fnr/.test(focus || "");
  const columns = [
    ...(ctx.state.selected.length > 1 ? [["run", "run"]] : []),
    ["slice", "slice"],
    ["dimension", "dimension"],
    ["count", "count"],
    ...metrics.filter((metric) => metric !== "count").map((metric) => [`value:${metric}`, metric]),
    ...(focus ? [[`diff:${focus}`, `Δ ${focus} vs overall`]] : []),
  ];
  const table = h("table", { id: "slice-table" });
  const head = h("tr");
  for (const [columnKey, label] of columns) {
    const th = h("th", {
      class: "sortable" + (columnKey === key ? (direction > 0 ? " sorted-asc" : " sorted-desc") : ""),
      "data-key": columnKey,
      text: label,
      title: "sort",
    });
    th.addEventListener("click", () => {
      ctx.state.tableSort = { key: columnKey, direction: columnKey === key ? -direction : 1 };
      renderSliceTable(ctx, ctx.next("table"));
    });
    head.append(th);
  }
  table.append(h("thead", {}, [head]));
  const body = h("tbody");
  for (const row of visible) {
    const tr = h("tr", {
      class: row.excluded ? "excluded" : "",
      "data-slice": row.slice,
      "data-run": row.run,
      title: row.excluded ? `excluded from indicators: ${row.excluded}` : "",
    });
    for (const [columnKey] of columns) {
      if (columnKey === "run" || columnKey === "slice" || columnKey === "dimension") {
        tr.append(h("td", { text: row[columnKey] }));
      } else if (columnKey === "count") {
        tr.append(h("td", { class: "num", text: fmt(row.count) }));
      } else if (columnKey.startsWith("value:")) {
        const metric = columnKey.slice(6);
        const difference = row.difference[metric];
        tr.append(
          h("td", { class: "num", title: `difference to overall: ${fmtSigned(difference)}` }, [
            fmt(row.values[metric]),
            h("span", { class: "diff", text: fmtSigned(difference) }),
          ]),
        );
      } else {
        const difference = row.difference[focus];
        const worse = difference !== null && (lowerIsBetter ? difference > 0 : difference < 0);
        tr.append(h("td", { class: "num" }, [h("span", { class: worse ? "diff worse" : "diff", text: fmtSigned(difference) })]));
      }
    }
    body.append(tr);
  }
  table.append(body);
  clear(box);
  box.append(h("p", { class: "note", text: `Slices at epoch ${epoch} (${source}); greyed rows are excluded by min_support. Click a header to sort.` }));
  notes.forEach((text) => message(box, text));
  box.append(h("div", { class: "table-box" }, [table]));
}

// ---------------------------------------------------------------- fairness

export function renderFairness(ctx) {
  const box = clear(document.getElementById("fairness-charts"));
  const alertsBox = clear(document.getElementById("alert-list"));
  const answers = ctx.state.selected.map((run) => [run, ctx.data.fairness.get(run)]).filter(([, answer]) => answer);
  if (!answers.length) {
    message(box, "No fairness reports in the selected runs.");
    return;
  }
  const dimensions = [];
  for (const [, answer] of answers) {
    for (const [dimension, indicators] of Object.entries(answer.indicators)) {
      let entry = dimensions.find((item) => item.dimension === dimension);
      if (!entry) dimensions.push((entry = { dimension, indicators: [] }));
      Object.keys(indicators).forEach((name) => entry.indicators.includes(name) || entry.indicators.push(name));
    }
  }
  const [lo, hi] = ctx.domain();
  const allAlerts = [];
  for (const { dimension, indicators } of dimensions) {
    const grid = h("div", { class: "grid" });
    for (const indicator of indicators) {
      const series = [];
      const bands = [];
      const thresholds = [];
      const alerts = [];
      for (const [run, answer] of answers) {
        const values = (answer.indicators[dimension] || {})[indicator];
        if (!values) continue;
        series.push({ label: run, color: ctx.runColor(run), points: points(answer.epochs, values) });
        const band = ((answer.bands || {})[dimension] || {})[indicator];
        if (band) {
          bands.push({
            color: ctx.runColor(run),
            label: `${run}: ${indicator} confidence band`,
            points: answer.epochs.map((epoch, i) => ({ epoch, low: band.low[i], high: band.high[i] })),
          });
        }
        for (const rule of answer.rules || []) {
          const applies = rule.name === indicator && (rule.dimension === null || rule.dimension === undefined || rule.dimension === dimension);
          if (applies && !thresholds.some((item) => item.label === `rule: ${rule.rule}`)) {
            thresholds.push({ value: rule.threshold, label: `rule: ${rule.rule}` });
          }
        }
        for (const alert of answer.alerts || []) {
          if (alert.name === indicator && alert.dimension === dimension) {
            alerts.push({
              epoch: alert.epoch,
              value: alert.value,
              text: `${run} · epoch ${alert.epoch}: rule "${alert.rule}" fired (${indicator} = ${fmt(alert.value)} ${alert.op} ${fmt(alert.threshold)})` + (alert.message ? `\n${alert.message}` : ""),
            });
          }
        }
      }
      const chart = lineChart({ ...ctx.chartOptions(), series, bands, thresholds, alerts, width: 250, height: 140, label: `${dimension} ${indicator}` });
      grid.append(chartBox(indicator, chart));
    }
    box.append(h("h3", { class: "dimension-title", text: `${dimension}` }), grid);
  }
  for (const [run, answer] of answers) {
    for (const alert of answer.alerts || []) {
      if (alert.epoch >= lo && alert.epoch <= hi) allAlerts.push([run, alert]);
    }
  }
  if (allAlerts.length) {
    const list = h("ul", { class: "alerts" });
    for (const [run, alert] of allAlerts) {
      list.append(h("li", { text: `${run} · epoch ${alert.epoch}: ${alert.message || alert.rule}` }));
    }
    alertsBox.append(h("h3", { text: `Alerts (${allAlerts.length})` }), list);
  } else {
    message(alertsBox, "No alerts in the selected epochs.");
  }
}

// ---------------------------------------------------------------- correlation

const PREFERRED_SERIES = [/train.*loss/i, /^val_loss$/, /^lr|learning_rate/i, /overall\/accuracy$/, /worst\/accuracy$/, /gap\/[^/]+\/accuracy_difference$/];

export function defaultSeries(tags) {
  const picked = [];
  for (const pattern of PREFERRED_SERIES) {
    const tag = tags.find((item) => pattern.test(item) && !picked.includes(item));
    if (tag) picked.push(tag);
  }
  for (const tag of tags) {
    if (picked.length >= 2) break;
    if (!picked.includes(tag)) picked.push(tag);
  }
  return picked.slice(0, 6);
}

export function renderSeriesList(ctx) {
  const list = clear(document.getElementById("series-list"));
  const scalars = ctx.data.scalars.get(ctx.state.correlationRun);
  if (!scalars) return;
  const filter = ctx.state.seriesFilter.trim().toLowerCase();
  const tags = Object.keys(scalars.series).sort((a, b) => a.localeCompare(b));
  const chosen = ctx.state.correlationSeries;
  const ordered = [...chosen.filter((tag) => tags.includes(tag)), ...tags.filter((tag) => !chosen.includes(tag))];
  let count = 0;
  for (const tag of ordered) {
    if (filter && !tag.toLowerCase().includes(filter) && !chosen.includes(tag)) continue;
    if (count++ > 200) break;
    const box = h("input", { type: "checkbox", class: "series-checkbox", value: tag, checked: chosen.includes(tag) });
    box.addEventListener("change", () => {
      ctx.state.correlationSeries = box.checked ? [...chosen, tag] : chosen.filter((item) => item !== tag);
      ctx.state.correlationCell = null;
      renderSeriesList(ctx);
      renderCorrelation(ctx, ctx.next("correlation"));
    });
    list.append(h("label", { title: tag }, [box, " ", tag]));
  }
}

export async function renderCorrelation(ctx, token) {
  const box = clear(document.getElementById("correlation-matrix"));
  const run = ctx.state.correlationRun;
  const series = ctx.state.correlationSeries;
  const note = document.getElementById("correlation-note");
  note.textContent = "";
  if (!run) return;
  if (series.length < 2) {
    message(box, "Choose at least 2 series.");
    clear(document.getElementById("scatter"));
    return;
  }
  const lag = ctx.state.lag;
  const [start, end] = ctx.state.range || [null, null];
  if (ctx.state.range) note.textContent = `Over epochs ${start}–${end} (brushed).`;
  let answer;
  try {
    // repeated `series` parameters: a tag may hold a comma
    answer = await getJSON("correlation", { run, series, lag, start, end });
  } catch (error) {
    if (!ctx.current("correlation", token)) return;
    message(box, String(error.message));
    return;
  }
  if (!ctx.current("correlation", token)) return;
  const method = ctx.state.correlationMethod;
  box.append(
    correlationMatrix({
      labels: answer.series,
      values: answer[method],
      n: answer.n,
      lag: answer.lag,
      selected: ctx.state.correlationCell,
      onClick: (i, j) => {
        ctx.state.correlationCell = [i, j];
        renderCorrelation(ctx, ctx.next("correlation"));
      },
    }),
  );
  box.append(h("p", { class: "note", text: `${method === "pearson" ? "Pearson" : "Spearman"} correlation across epochs; cell [row, column] pairs the row's series at epoch e with the column's at e + lag (${answer.lag}). Click a cell for its scatter.` }));
  await renderScatter(ctx, token, answer.series);
}

async function renderScatter(ctx, token, series) {
  const box = document.getElementById("scatter");
  const cell = ctx.state.correlationCell;
  if (!cell || !series[cell[0]] || !series[cell[1]]) {
    clear(box);
    message(box, "Click a matrix cell to see the scatter of its two series by epoch.");
    return;
  }
  const [x, y] = [series[cell[0]], series[cell[1]]];
  const lag = ctx.state.lag;
  const [start, end] = ctx.state.range || [null, null];
  let answer;
  try {
    answer = await getJSON("scatter", { run: ctx.state.correlationRun, x, y, lag, start, end });
  } catch (error) {
    if (!ctx.current("correlation", token)) return;
    clear(box);
    message(box, String(error.message));
    return;
  }
  if (!ctx.current("correlation", token)) return;
  const shown = answer.points;
  clear(box);
  box.append(
    chartBox(
      `${y} vs ${x}` + (lag ? ` (y at epoch + ${lag})` : ""),
      scatterPlot({ points: shown, xLabel: x, yLabel: y, selectedEpoch: ctx.state.epoch, onHover: ctx.onHover, onSelect: ctx.onSelect }),
      h("p", { class: "note", text: `${shown.length} epochs; each point is an epoch (hover: linked).` }),
    ),
  );
}

// ---------------------------------------------------------------- reports

const KINDS = [
  ["discovery", "discovery-table", "Discovered slices"],
  ["comparison", "comparison-table", "Comparison clusters"],
  ["failure_modes", "failure-modes-table", "Failure modes"],
];

/**
 * The report at the selected epoch, else the latest one before it (monitors run every n epochs),
 * chosen from the `runs` route's `report_epochs` (any source): null, without a request, when none.
 */
async function findReport(ctx, run, kind, epoch) {
  const earlier = ctx.reportEpochs(run, kind).filter((item) => item <= epoch);
  if (!earlier.length) return null;
  return getJSON("report", { run, kind, epoch: Math.max(...earlier) });
}

function pathText(path, featureNames) {
  return (path || [])
    .map(([feature, threshold, op]) => `${featureNames && featureNames[feature] !== undefined ? featureNames[feature] : `feature[${feature}]`} ${op} ${fmt(threshold)}`)
    .join(" and ");
}

function reportRows(kind, report) {
  if (kind === "discovery") {
    return {
      headers: ["slice", "size", "error rate", "lift", "score", "confidence", "mislabel candidates", "first seen", "annotation"],
      rows: (report.slices || []).map((item) => [
        item.slice_id, item.size, item.error_rate, item.lift, item.score, item.mean_confidence,
        (item.mislabel_candidates || []).length, item.first_seen_epoch, item.annotation === null || item.annotation === undefined ? "" : String(item.annotation),
      ]),
    };
  }
  if (kind === "comparison") {
    return {
      headers: ["cluster", "regions", "images", "attribution A", "attribution B", "B − A", "interval", "effect size", "accuracy A", "accuracy B"],
      rows: (report.clusters || []).map((item) => [
        item.cluster_id, item.regions, item.images, item.attribution_a, item.attribution_b, item.difference,
        `[${fmt(item.lower)}, ${fmt(item.upper)}]`, item.effect_size, item.accuracy_a, item.accuracy_b,
      ]),
    };
  }
  return {
    headers: ["rank", "group", "rule", "size", "failures", "error rate", "error coverage", "importance"],
    rows: (report.modes || []).map((item, rank) => [
      rank, item.group, pathText(item.path, report.feature_names), item.size, item.failures, item.error_rate, item.error_coverage, item.importance,
    ]),
  };
}

// The monitors' pictures are small (32-px crops in a mosaic): show them at twice their size.
function enlarge(event) {
  const img = event.target;
  if (img.naturalWidth && img.naturalWidth <= 210) img.width = img.naturalWidth * 2;
}

export async function renderReports(ctx, token) {
  const epoch = ctx.state.epoch;
  const jobs = [];
  for (const run of ctx.state.selected) {
    const info = ctx.runInfo(run);
    for (const [kind] of KINDS) {
      if (info && info.kinds && info.kinds[kind]) {
        jobs.push(findReport(ctx, run, kind, epoch).then((answer) => [run, kind, answer]).catch((error) => [run, kind, { error }]));
      }
    }
  }
  const results = await Promise.all(jobs);
  if (!ctx.current("reports", token)) return;
  for (const [kind, id, title] of KINDS) {
    const box = clear(document.getElementById(`${id}-box`));
    const found = results.filter(([, k]) => k === kind);
    if (!found.length) {
      message(box, `No ${title.toLowerCase()} in the selected runs.`);
      box.append(h("table", { id }));
      continue;
    }
    let headers = null;
    const body = h("tbody");
    const gallery = h("div", { class: "gallery" });
    for (const [run, , answer] of found) {
      if (!answer) {
        message(box, `${run}: no ${title.toLowerCase()} report at or before epoch ${epoch}.`);
        continue;
      }
      if (answer.error) {
        message(box, `${run}: ${answer.error.message}`);
        continue;
      }
      if (answer.epoch !== epoch) message(box, `${run}: the latest report at or before epoch ${epoch} is from epoch ${answer.epoch}.`);
      const table = reportRows(kind, answer.report || {});
      headers = table.headers;
      for (const row of table.rows) {
        const tr = h("tr", { "data-run": run });
        tr.append(h("td", { text: run }), h("td", { class: "num", text: String(answer.epoch) }));
        for (const value of row) {
          tr.append(h("td", { class: typeof value === "number" ? "num" : "", text: typeof value === "number" ? fmt(value) : String(value) }));
        }
        body.append(tr);
      }
      for (const image of answer.images || []) {
        const src = safeImageUrl(image.url);
        if (!src) continue;
        gallery.append(
          h("figure", {}, [
            h("img", { src, alt: image.tag, on: { load: enlarge } }),
            h("figcaption", { text: `${run} · ${image.tag} (step ${image.step})` }),
          ]),
        );
      }
    }
    const table = h("table", { id });
    if (headers) {
      table.append(h("thead", {}, [h("tr", {}, ["run", "epoch", ...headers].map((text) => h("th", { text })))]));
    }
    table.append(body);
    box.append(h("div", { class: "table-box" }, [table]), gallery);
  }
}

export { brushStrip };
