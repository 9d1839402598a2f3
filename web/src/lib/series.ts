// Shaping the analytics time series for the charts.
import { tokenTotal, type TimePoint } from './api';

export interface SeriesData {
  times: number[];
  traces: (number | null)[];
  errors: (number | null)[];
  tokens: (number | null)[];
  cost: (number | null)[];
  latency: Record<'p50' | 'p95' | 'p99', (number | null)[]>;
  /** which latency percentiles the server actually sent */
  percentiles: ('p50' | 'p95' | 'p99')[];
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** "1m" -> 60000, "6h" -> 21600000; null when the text is not a duration. */
export function parseBucket(b: string): number | null {
  const m = /^(\d+)\s*(s|m|h|d)$/.exec(b.trim());
  if (!m) return null;
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
  const v = Number(m[1]) * unit;
  return v > 0 ? v : null;
}

const MAX_FILLED = 5000;

/**
 * Empty buckets come back absent; charts need them as zeros (counts) or gaps (latency), from
 * the start of the range to its end, so bars sit at their true time.
 */
export function fillBuckets(points: TimePoint[], bucketMs: number, fromMs?: number, toMs?: number): TimePoint[] {
  if (!(bucketMs > 0)) return points;
  const byT = new Map<number, TimePoint>();
  for (const p of points) byT.set(Math.floor(Date.parse(p.t) / bucketMs) * bucketMs, p);
  const times = [...byT.keys()];
  if (!times.length && fromMs == null) return points;
  let lo = fromMs != null ? Math.floor(fromMs / bucketMs) * bucketMs : Math.min(...times);
  const hi = toMs != null ? Math.floor(toMs / bucketMs) * bucketMs : Math.max(...times);
  if (times.length) lo = Math.min(lo, Math.min(...times));
  if ((hi - lo) / bucketMs > MAX_FILLED) return points;
  const out: TimePoint[] = [];
  for (let t = lo; t <= Math.max(hi, ...times); t += bucketMs) {
    out.push(byT.get(t) ?? { t: new Date(t).toISOString(), traces: 0, errors: 0, tokens: 0, cost_usd: 0 });
  }
  return out;
}

export function shapeSeries(points: TimePoint[]): SeriesData {
  const pts = [...points].sort((a, b) => Date.parse(a.t) - Date.parse(b.t));
  const out: SeriesData = {
    times: [],
    traces: [],
    errors: [],
    tokens: [],
    cost: [],
    latency: { p50: [], p95: [], p99: [] },
    percentiles: [],
  };
  const seen = { p50: false, p95: false, p99: false };
  for (const p of pts) {
    out.times.push(Date.parse(p.t));
    out.traces.push(num(p.traces) ?? 0);
    out.errors.push(num(p.errors) ?? 0);
    out.tokens.push(tokenTotal(p.tokens as never) ?? 0);
    out.cost.push(num(p.cost_usd));
    for (const k of ['p50', 'p95', 'p99'] as const) {
      const v = num(p[`${k}_ms`]);
      if (p[`${k}_ms`] !== undefined) seen[k] = true;
      out.latency[k].push(v);
    }
  }
  out.percentiles = (['p50', 'p95', 'p99'] as const).filter((k) => seen[k]);
  return out;
}

/** A bucket size that gives a readable number of points for a range (the API's `bucket`). */
export function bucketFor(rangeMs: number | null): string {
  if (rangeMs == null) return '1d';
  if (rangeMs <= 3_600_000) return '1m';
  if (rangeMs <= 6 * 3_600_000) return '5m';
  if (rangeMs <= 8 * 86_400_000) return '1h';
  return '1d';
}
