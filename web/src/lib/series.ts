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
