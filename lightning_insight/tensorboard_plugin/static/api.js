// The HTTP API of docs/insightboard.md. Relative URLs: inside TensorBoard's iframe the page's base
// is /data/plugin/lightning_insight/, so "runs" is /data/plugin/lightning_insight/runs.

export class ApiError extends Error {
  constructor(route, status, message) {
    super(`${route}: ${status} ${message}`);
    this.route = route;
    this.status = status;
  }
}

const cache = new Map();

/** A route's URL; an array value repeats its parameter (series=a&series=b: tags may hold commas). */
export function url(route, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null) query.append(key, String(item));
    }
  }
  const text = query.toString();
  return text ? `./${route}?${text}` : `./${route}`;
}

/** GET a JSON route once; later calls with the same URL share the answer (or the error). */
export function getJSON(route, params = {}) {
  const key = url(route, params);
  if (!cache.has(key)) {
    const pending = fetch(key, { headers: { Accept: "application/json" } }).then(async (response) => {
      let body = null;
      try {
        body = await response.json();
      } catch (error) {
        throw new ApiError(route, response.status, "answer is not JSON");
      }
      if (!response.ok) {
        throw new ApiError(route, response.status, (body && body.error) || response.statusText);
      }
      return body;
    });
    cache.set(key, pending);
    // A failed request may succeed later (TensorBoard still loading files): do not keep the error.
    pending.catch(() => cache.delete(key));
  }
  return cache.get(key);
}

/** The same, but null for a 404 (no such report at that epoch, say). */
export async function getOptional(route, params = {}) {
  try {
    return await getJSON(route, params);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

export function clearCache() {
  cache.clear();
}

/** An image URL from the report route, kept only when it stays on this server. */
export function safeImageUrl(value) {
  try {
    const resolved = new URL(String(value), document.baseURI);
    const base = new URL(document.baseURI);
    if (resolved.origin !== base.origin) return null;
    if (resolved.protocol !== "http:" && resolved.protocol !== "https:") return null;
    return resolved.href;
  } catch (error) {
    return null;
  }
}
