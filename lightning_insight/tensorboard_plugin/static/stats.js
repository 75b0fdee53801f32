// Correlations over a brushed epoch range, with the `correlation` route's definitions: cell [i][j]
// pairs series i at epoch e with series j at epoch e + lag, over the epochs where both are finite;
// null when fewer than 3 pairs (or a constant series). Spearman is Pearson on average ranks.

function finite(value) {
  return typeof value === "number" && Number.isFinite(value);
}

export function laggedPairs(epochs, xs, ys, lag, range) {
  const index = new Map(epochs.map((epoch, i) => [epoch, i]));
  const inRange = (epoch) => !range || (epoch >= range[0] && epoch <= range[1]);
  const pairs = [];
  epochs.forEach((epoch, i) => {
    const j = index.get(epoch + lag);
    if (j === undefined || !inRange(epoch) || !inRange(epoch + lag)) return;
    if (finite(xs[i]) && finite(ys[j])) pairs.push({ epoch, x: xs[i], y: ys[j] });
  });
  return pairs;
}

export function pearson(xs, ys) {
  const n = xs.length;
  if (n < 3) return null;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let k = 0; k < n; k += 1) {
    sxy += (xs[k] - mx) * (ys[k] - my);
    sxx += (xs[k] - mx) ** 2;
    syy += (ys[k] - my) ** 2;
  }
  if (sxx <= 0 || syy <= 0) return null;
  return Math.max(-1, Math.min(1, sxy / Math.sqrt(sxx * syy)));
}

function ranks(values) {
  const order = values.map((value, index) => [value, index]).sort((a, b) => a[0] - b[0]);
  const result = new Array(values.length);
  for (let k = 0; k < order.length; ) {
    let end = k;
    while (end + 1 < order.length && order[end + 1][0] === order[k][0]) end += 1;
    const rank = (k + end) / 2 + 1;
    for (let m = k; m <= end; m += 1) result[order[m][1]] = rank;
    k = end + 1;
  }
  return result;
}

export function spearman(xs, ys) {
  if (xs.length < 3) return null;
  return pearson(ranks(xs), ranks(ys));
}

/** The `correlation` route's answer, computed in the browser over epochs in `range`. */
export function correlationMatrix(scalars, series, lag, range) {
  const pearsonRows = [];
  const spearmanRows = [];
  const counts = [];
  for (const a of series) {
    const pRow = [];
    const sRow = [];
    const nRow = [];
    for (const b of series) {
      const pairs = laggedPairs(scalars.epochs, scalars.series[a] || [], scalars.series[b] || [], lag, range);
      const xs = pairs.map((pair) => pair.x);
      const ys = pairs.map((pair) => pair.y);
      pRow.push(pearson(xs, ys));
      sRow.push(spearman(xs, ys));
      nRow.push(pairs.length);
    }
    pearsonRows.push(pRow);
    spearmanRows.push(sRow);
    counts.push(nRow);
  }
  return { series, lag, pearson: pearsonRows, spearman: spearmanRows, n: counts };
}
