// InsightBoard: TensorBoard loads this ES module in the plugin's iframe and calls render().
// Relative URLs resolve against /data/plugin/lightning_insight/ (the iframe's <base>); the other
// modules live under ./static/. No inline scripts or handlers: TensorBoard's CSP blocks them.

import { clearCache, getJSON, getOptional } from "./static/api.js";
import { brushStrip, highlightEpoch, selectEpoch } from "./static/charts.js";
import { clear, color, h } from "./static/dom.js";
import { CSS } from "./static/style.js";
import {
  defaultSeries,
  renderCorrelation,
  renderDynamics,
  renderFairness,
  renderReports,
  renderSeriesList,
  renderSliceCharts,
  renderSliceTable,
} from "./static/views.js";

const state = {
  runs: [],
  selected: [],
  epochs: [],
  epoch: null,
  range: null,
  source: "val",
  dimension: null,
  metric: null,
  dimensions: [],
  metrics: [],
  tableSort: { key: "slice", direction: 1 },
  tableScope: "all",
  dynamicsFilter: "",
  correlationRun: null,
  correlationSeries: [],
  correlationMethod: "pearson",
  correlationCell: null,
  lag: 0,
  seriesFilter: "",
};

const data = { scalars: new Map(), fairness: new Map() };
const tokens = {};

function status(text) {
  document.getElementById("status").textContent = text || "";
}

const ctx = {
  state,
  data,
  next(name) {
    tokens[name] = (tokens[name] || 0) + 1;
    return tokens[name];
  },
  current(name, token) {
    return tokens[name] === token;
  },
  runInfo(run) {
    return state.runs.find((item) => item.run === run);
  },
  /** Epochs with a `kind` report in `run` (the `runs` route's report_epochs), of one source or any. */
  reportEpochs(run, kind, source) {
    const bySource = ((ctx.runInfo(run) || {}).report_epochs || {})[kind] || {};
    return source === undefined ? [...new Set(Object.values(bySource).flat())] : bySource[source] || [];
  },
  /** Whether `run` has a fairness report (hence a slice table) of the selected source at `epoch`. */
  hasSliceTable(run, epoch) {
    return ctx.reportEpochs(run, "fairness", state.source).includes(epoch);
  },
  runColor(run) {
    return color(state.runs.findIndex((item) => item.run === run));
  },
  domain() {
    if (state.range) return state.range;
    if (!state.epochs.length) return [0, 0];
    return [state.epochs[0], state.epochs[state.epochs.length - 1]];
  },
  chartOptions() {
    return { domain: ctx.domain(), epochs: state.epochs, selectedEpoch: state.epoch, onHover: ctx.onHover, onSelect: ctx.onSelect };
  },
  onHover(epoch) {
    highlightEpoch(document, epoch);
    document.getElementById("hover-readout").textContent = epoch === null ? "" : `epoch ${epoch}`;
  },
  onSelect(epoch) {
    setEpoch(epoch);
  },
};

function option(value, text, selected) {
  return h("option", { value, text: text === undefined ? value : text, selected: Boolean(selected) });
}

function control(label, element) {
  return h("label", {}, [label, element]);
}

function layout(root) {
  const runSelect = h("select", { id: "run-select", multiple: true, size: 4, title: "runs (ctrl/shift-click for several)" });
  runSelect.addEventListener("change", () => {
    state.selected = [...runSelect.selectedOptions].map((item) => item.value);
    reload();
  });
  const epochSelect = h("select", { id: "epoch-select" });
  epochSelect.addEventListener("change", () => setEpoch(Number(epochSelect.value)));
  const sourceSelect = h("select", { id: "source-select" });
  sourceSelect.addEventListener("change", () => {
    state.source = sourceSelect.value;
    reload();
  });
  const brushReset = h("button", { id: "brush-reset", type: "button", text: "all epochs" });
  brushReset.addEventListener("click", () => setRange(null));
  const reloadButton = h("button", { id: "reload", type: "button", text: "reload" });
  reloadButton.addEventListener("click", () => {
    clearCache();
    start();
  });
  const header = h("header", { class: "controls" }, [
    control("runs", runSelect),
    control("epoch", epochSelect),
    control("source", sourceSelect),
    h("div", { id: "brush-box" }, [
      h("span", { id: "brush-label", text: "epoch range (drag to brush)" }),
      h("div", { id: "brush" }),
      h("div", {}, [brushReset]),
    ]),
    h("div", { id: "run-legend" }),
    h("div", {}, [reloadButton, h("div", { id: "hover-readout" })]),
    h("div", { id: "status", role: "status" }),
  ]);

  const dynamicsFilter = h("input", { id: "dynamics-filter", type: "search", placeholder: "filter tags (e.g. loss, slice/weather)" });
  dynamicsFilter.addEventListener("input", () => {
    state.dynamicsFilter = dynamicsFilter.value;
    renderDynamics(ctx);
    selectEpoch(document, state.epoch);
  });
  const dynamics = h("section", { id: "dynamics" }, [
    h("h2", { text: "Training dynamics" }),
    h("div", { class: "section-controls" }, [control("filter", dynamicsFilter), h("span", { id: "dynamics-note", class: "note" })]),
    h("div", { id: "dynamics-charts", class: "grid" }),
  ]);

  const dimensionSelect = h("select", { id: "dimension-select" });
  dimensionSelect.addEventListener("change", () => {
    state.dimension = dimensionSelect.value;
    renderSliceCharts(ctx, ctx.next("slices"));
    if (state.tableScope !== "all") renderSliceTable(ctx, ctx.next("table"));
  });
  const metricSelect = h("select", { id: "metric-select" });
  metricSelect.addEventListener("change", () => {
    state.metric = metricSelect.value;
    renderSliceCharts(ctx, ctx.next("slices"));
    renderSliceTable(ctx, ctx.next("table"));
  });
  const scopeSelect = h("select", { id: "table-scope" }, [option("all", "all dimensions", true), option("dimension", "chosen dimension")]);
  scopeSelect.addEventListener("change", () => {
    state.tableScope = scopeSelect.value;
    renderSliceTable(ctx, ctx.next("table"));
  });
  const slices = h("section", { id: "slices" }, [
    h("h2", { text: "Slices" }),
    h("div", { class: "section-controls" }, [control("dimension", dimensionSelect), control("metric", metricSelect), control("table rows", scopeSelect)]),
    h("div", { id: "slice-chart", class: "grid" }),
    h("div", { id: "slice-table-box" }),
  ]);

  const fairness = h("section", { id: "fairness" }, [
    h("h2", { text: "Fairness indicators" }),
    h("p", { class: "note", text: "Dashed red line: the alert rule's threshold; red triangles: alerts (hover for the rule); shaded: confidence band." }),
    h("div", { id: "alert-list" }),
    h("div", { id: "fairness-charts" }),
  ]);

  const correlationRun = h("select", { id: "correlation-run" });
  correlationRun.addEventListener("change", () => {
    state.correlationRun = correlationRun.value;
    state.correlationCell = null;
    chooseDefaultSeries();
    renderSeriesList(ctx);
    renderCorrelation(ctx, ctx.next("correlation"));
  });
  const seriesFilter = h("input", { id: "series-filter", type: "search", placeholder: "filter series" });
  seriesFilter.addEventListener("input", () => {
    state.seriesFilter = seriesFilter.value;
    renderSeriesList(ctx);
  });
  const lagInput = h("input", { id: "lag-input", type: "number", value: "0", step: "1", style: "width:5em" });
  lagInput.addEventListener("change", () => {
    const limit = Math.max(0, (ctx.runInfo(state.correlationRun)?.epochs.length || 1) - 1);
    const lag = Math.max(-limit, Math.min(limit, Math.trunc(Number(lagInput.value) || 0)));
    lagInput.value = String(lag);
    state.lag = lag;
    renderCorrelation(ctx, ctx.next("correlation"));
  });
  const methodSelect = h("select", { id: "correlation-method" }, [option("pearson", "Pearson", true), option("spearman", "Spearman")]);
  methodSelect.addEventListener("change", () => {
    state.correlationMethod = methodSelect.value;
    renderCorrelation(ctx, ctx.next("correlation"));
  });
  const correlation = h("section", { id: "correlation" }, [
    h("h2", { text: "Correlation across epochs" }),
    h("div", { class: "section-controls" }, [
      control("run", correlationRun),
      control("lag (epochs)", lagInput),
      control("method", methodSelect),
      h("span", { id: "correlation-note", class: "note" }),
    ]),
    h("div", { class: "columns" }, [
      h("div", {}, [control("series", seriesFilter), h("div", { id: "series-list" })]),
      h("div", { id: "correlation-matrix" }),
      h("div", { id: "scatter" }),
    ]),
  ]);

  const reports = h("section", { id: "reports" }, [
    h("h2", { text: "Reports at the selected epoch" }),
    h("h3", { text: "Discovered slices" }),
    h("div", { id: "discovery-table-box" }),
    h("h3", { text: "Comparison clusters" }),
    h("div", { id: "comparison-table-box" }),
    h("h3", { text: "Failure modes" }),
    h("div", { id: "failure-modes-table-box" }),
  ]);
  root.append(header, dynamics, slices, fairness, correlation, reports);
}

function fillSelect(select, values, chosen, labels) {
  clear(select);
  for (const value of values) select.append(option(value, labels ? labels(value) : value, value === chosen));
}

function chooseDefaultSeries() {
  const scalars = data.scalars.get(state.correlationRun);
  const tags = scalars ? Object.keys(scalars.series) : [];
  const kept = state.correlationSeries.filter((tag) => tags.includes(tag));
  state.correlationSeries = kept.length >= 2 ? kept : defaultSeries(tags);
}

function renderBrush() {
  brushStrip(document.getElementById("brush"), {
    epochs: state.epochs,
    range: state.range,
    selectedEpoch: state.epoch,
    onHover: ctx.onHover,
    onChange: setRange,
  });
  const [lo, hi] = ctx.domain();
  document.getElementById("brush-label").textContent = state.range ? `epochs ${lo}–${hi} (brushed)` : "epoch range: drag to brush";
}

function fillEpochSelect() {
  const [lo, hi] = ctx.domain();
  fillSelect(document.getElementById("epoch-select"), state.epochs.filter((epoch) => epoch >= lo && epoch <= hi).map(String), String(state.epoch));
}

/** Everything drawn over epochs, after a change of runs, source or brushed range. */
function drawCharts() {
  renderBrush();
  fillEpochSelect();
  renderDynamics(ctx);
  renderFairness(ctx);
  renderSliceCharts(ctx, ctx.next("slices")).then(() => selectEpoch(document, state.epoch));
  renderCorrelation(ctx, ctx.next("correlation")).then(() => selectEpoch(document, state.epoch));
  selectEpoch(document, state.epoch);
}

function setEpoch(epoch) {
  if (epoch === null || epoch === undefined || Number.isNaN(epoch)) return;
  state.epoch = epoch;
  document.getElementById("epoch-select").value = String(epoch);
  selectEpoch(document, epoch);
  renderSliceTable(ctx, ctx.next("table"));
  renderReports(ctx, ctx.next("reports"));
}

function setRange(range) {
  state.range = range;
  const [lo, hi] = ctx.domain();
  if (state.epoch === null || state.epoch < lo || state.epoch > hi) {
    const inside = state.epochs.filter((epoch) => epoch >= lo && epoch <= hi);
    state.epoch = inside.length ? inside[inside.length - 1] : state.epoch;
  }
  drawCharts();
  renderSliceTable(ctx, ctx.next("table"));
  renderReports(ctx, ctx.next("reports"));
}

/** Dimensions and metrics of the selected runs, from their slice tables at the selected epoch. */
async function loadSliceChoices() {
  const answers = await Promise.all(
    state.selected.map((run) =>
      ctx.hasSliceTable(run, state.epoch) ? getOptional("slice_table", { run, epoch: state.epoch, source: state.source }).catch(() => null) : null,
    ),
  );
  const dimensions = [];
  const metrics = [];
  for (const answer of answers) {
    if (!answer) continue;
    Object.keys(answer.dimensions).forEach((dimension) => dimensions.includes(dimension) || dimensions.push(dimension));
    answer.metrics.forEach((metric) => metric === "count" || metrics.includes(metric) || metrics.push(metric));
  }
  state.dimensions = dimensions;
  state.metrics = metrics;
  if (!dimensions.includes(state.dimension)) state.dimension = dimensions[0] || null;
  if (!metrics.includes(state.metric)) state.metric = metrics.includes("accuracy") ? "accuracy" : metrics[0] || null;
  fillSelect(document.getElementById("dimension-select"), dimensions, state.dimension);
  fillSelect(document.getElementById("metric-select"), metrics, state.metric);
}

async function reload() {
  const token = ctx.next("reload");
  const chosen = state.runs.filter((item) => state.selected.includes(item.run));
  state.epochs = [...new Set(chosen.flatMap((item) => item.epochs))].sort((a, b) => a - b);
  if (state.range && (state.range[0] > state.epochs[state.epochs.length - 1] || state.range[1] < state.epochs[0])) state.range = null;
  if (!state.epochs.includes(state.epoch)) state.epoch = state.epochs.length ? state.epochs[state.epochs.length - 1] : null;
  const sources = [...new Set(chosen.flatMap((item) => item.sources || []))];
  if (!sources.includes(state.source)) state.source = sources.includes("val") ? "val" : sources[0] || "val";
  fillSelect(document.getElementById("source-select"), sources.length ? sources : [state.source], state.source);
  if (!state.selected.includes(state.correlationRun)) state.correlationRun = state.selected[0] || null;
  fillSelect(document.getElementById("correlation-run"), state.selected, state.correlationRun);
  const legend = clear(document.getElementById("run-legend"));
  for (const run of state.selected) {
    legend.append(h("span", {}, [h("span", { class: "swatch", style: `background:${ctx.runColor(run)}` }), run]));
  }
  status(state.selected.length ? "loading…" : "Select a run.");
  try {
    await Promise.all(
      chosen.flatMap((item) => [
        getJSON("scalars", { run: item.run }).then((answer) => data.scalars.set(item.run, answer)),
        ctx.reportEpochs(item.run, "fairness", state.source).length
          ? getOptional("fairness", { run: item.run, source: state.source }).then((answer) => data.fairness.set(item.run, answer))
          : Promise.resolve(data.fairness.delete(item.run)),
      ]),
    );
    await loadSliceChoices();
  } catch (error) {
    if (ctx.current("reload", token)) status(String(error.message));
    return;
  }
  if (!ctx.current("reload", token)) return;
  status("");
  chooseDefaultSeries();
  renderSeriesList(ctx);
  drawCharts();
  renderSliceTable(ctx, ctx.next("table"));
  renderReports(ctx, ctx.next("reports"));
}

async function start() {
  let answer;
  try {
    answer = await getJSON("runs");
  } catch (error) {
    status(`Could not list runs: ${error.message}`);
    return;
  }
  state.runs = [...answer.runs].sort((a, b) => (a.run < b.run ? -1 : a.run > b.run ? 1 : 0));
  const names = state.runs.map((item) => item.run);
  const kept = state.selected.filter((run) => names.includes(run));
  state.selected = kept.length ? kept : names.slice(0, 4);
  fillSelect(document.getElementById("run-select"), names, null);
  for (const item of document.getElementById("run-select").options) item.selected = state.selected.includes(item.value);
  if (!names.length) {
    status("No runs with lightning_insight data in this log directory yet.");
    return;
  }
  await reload();
}

export async function render() {
  document.head.append(h("style", { text: CSS }));
  const root = h("div", { id: "insightboard" });
  document.body.append(root);
  layout(root);
  await start();
}
