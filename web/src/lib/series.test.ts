import { describe, expect, it } from 'vitest';
import { bucketFor, shapeSeries } from './series';

describe('shapeSeries', () => {
  it('sorts points and splits them into chart series', () => {
    const s = shapeSeries([
      { t: '2026-05-31T11:00:00Z', traces: 3, errors: 1, tokens: 300, cost_usd: 0.3, p95_ms: 900 },
      { t: '2026-05-31T10:00:00Z', traces: 2, errors: 0, tokens: { prompt: 10, completion: 5, total: 15 }, cost_usd: null, p95_ms: null },
    ]);
    expect(s.times).toEqual([Date.parse('2026-05-31T10:00:00Z'), Date.parse('2026-05-31T11:00:00Z')]);
    expect(s.traces).toEqual([2, 3]);
    expect(s.errors).toEqual([0, 1]);
    expect(s.tokens).toEqual([15, 300]);
    expect(s.cost).toEqual([null, 0.3]);
    expect(s.latency.p95).toEqual([null, 900]);
    expect(s.percentiles).toEqual(['p95']);
  });
  it('notices every percentile the server sends', () => {
    const s = shapeSeries([{ t: '2026-05-31T10:00:00Z', traces: 1, errors: 0, tokens: 1, cost_usd: 0, p50_ms: 1, p95_ms: 2, p99_ms: 3 }]);
    expect(s.percentiles).toEqual(['p50', 'p95', 'p99']);
  });
  it('handles an empty series', () => {
    expect(shapeSeries([]).times).toEqual([]);
  });
});

describe('bucketFor', () => {
  it('keeps the number of points readable', () => {
    expect(bucketFor(3_600_000)).toBe('1m');
    expect(bucketFor(86_400_000)).toBe('1h');
    expect(bucketFor(7 * 86_400_000)).toBe('1h');
    expect(bucketFor(30 * 86_400_000)).toBe('1d');
    expect(bucketFor(null)).toBe('1d');
  });
});
