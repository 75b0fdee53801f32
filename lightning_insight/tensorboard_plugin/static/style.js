// The page's stylesheet, applied as a <style> element: TensorBoard's CSP allows inline styles, and
// this way the CSS does not depend on the MIME type the static route gives a .css file.

export const CSS = `
:root { --grey: #9e9e9e; --ink: #212121; --muted: #616161; --line: #e0e0e0; --accent: #f57c00; }
body { margin: 0; font: 13px/1.4 Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--ink); background: #fafafa; }
#insightboard { padding: 12px 16px 40px; }
header.controls { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; padding: 8px 0 12px;
  border-bottom: 1px solid var(--line); }
header.controls label { display: flex; flex-direction: column; gap: 2px; font-size: 11px; color: var(--muted); text-transform: uppercase; }
select, input, button { font: inherit; }
#run-select { min-width: 180px; }
#brush-box { display: flex; flex-direction: column; gap: 2px; }
#brush-label { font-size: 11px; color: var(--muted); }
#run-legend { display: flex; flex-direction: column; gap: 2px; font-size: 12px; }
#run-legend .swatch { display: inline-block; width: 18px; height: 3px; margin-right: 6px; vertical-align: middle; }
svg text.empty { font-size: 11px; fill: var(--grey); }
#status { color: #b71c1c; font-size: 12px; min-height: 1em; }
#hover-readout { font-size: 12px; color: var(--accent); min-width: 70px; }
section { margin-top: 18px; }
section > h2 { font-size: 15px; font-weight: 500; margin: 0 0 6px; }
.section-controls { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-end; margin-bottom: 8px; }
.section-controls label { display: flex; flex-direction: column; font-size: 11px; color: var(--muted); }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
.chart-box { background: #fff; border: 1px solid var(--line); border-radius: 3px; padding: 4px 6px; }
.chart-box h3 { font-size: 12px; font-weight: 500; margin: 2px 0; max-width: 300px; overflow-wrap: anywhere; }
.note { color: var(--muted); font-size: 12px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 11px; max-width: 640px; }
.legend .swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: middle; }
.legend .excluded { color: var(--grey); }
svg.chart { display: block; user-select: none; }
svg .background { fill: transparent; }
svg .axis line { stroke: #bdbdbd; stroke-width: 1; }
svg .axis line.grid { stroke: #f0f0f0; }
svg .axis text, svg text.tick { font-size: 10px; fill: var(--muted); }
svg .axis-label { font-size: 11px; fill: var(--ink); }
svg path.series { fill: none; stroke-width: 1.5; pointer-events: visibleStroke; }
svg path.series.strong { stroke-width: 2.5; }
svg path.series.dashed { stroke-dasharray: 5 3; }
svg path.excluded-segment { stroke: var(--grey); stroke-width: 2; stroke-dasharray: 2 2; }
svg circle.point.excluded { fill: #fff; stroke: var(--grey); stroke-width: 1.5; }
svg polygon.band { opacity: 0.18; }
svg line.threshold { stroke: #b71c1c; stroke-width: 1.2; stroke-dasharray: 6 4; }
svg path.alert-marker { fill: #d32f2f; stroke: #fff; stroke-width: 1; cursor: help; }
svg line.epoch-marker { stroke: transparent; stroke-width: 1; pointer-events: none; }
svg line.epoch-marker.selected { stroke: #9e9e9e; stroke-dasharray: 3 3; }
svg line.epoch-marker.highlight { stroke: var(--accent); stroke-width: 2; stroke-dasharray: none; }
svg .brush-selection { fill: rgba(245, 124, 0, 0.15); stroke: var(--accent); }
svg .axis-line { stroke: #bdbdbd; }
svg .corr-cell { cursor: pointer; stroke: #fff; }
svg .corr-cell.selected { stroke: var(--ink); stroke-width: 2; }
svg .cell-value { font-size: 10px; pointer-events: none; }
svg .row-label, svg .col-label { font-size: 10px; fill: var(--ink); }
svg circle.scatter-point { fill: #1f77b4; fill-opacity: 0.75; stroke: #fff; cursor: pointer; }
svg circle.scatter-point.selected { stroke: var(--ink); stroke-width: 1.5; }
svg circle.scatter-point.highlight { fill: var(--accent); r: 6; }
table { border-collapse: collapse; background: #fff; font-size: 12px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { font-weight: 500; color: var(--muted); white-space: nowrap; }
th.sortable { cursor: pointer; }
th.sorted-asc::after { content: " ▲"; }
th.sorted-desc::after { content: " ▼"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td .diff { display: block; font-size: 10px; color: var(--muted); }
td .diff.worse { color: #c62828; }
tr.excluded td { color: var(--grey); }
.table-box { overflow-x: auto; max-width: 100%; }
#correlation .columns { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
#series-list { max-height: 260px; overflow-y: auto; border: 1px solid var(--line); background: #fff; padding: 4px 6px; min-width: 280px; }
#series-list label { display: block; font-size: 11px; white-space: nowrap; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; margin: 6px 0 12px; align-items: flex-start; }
.gallery figure { margin: 0; background: #fff; border: 1px solid var(--line); padding: 4px; }
.gallery img { display: block; image-rendering: pixelated; max-width: 420px; }
.gallery figcaption { font-size: 10px; color: var(--muted); max-width: 420px; overflow-wrap: anywhere; }
ul.alerts { margin: 4px 0; padding-left: 18px; font-size: 12px; }
`;
