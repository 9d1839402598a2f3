import { describe, expect, it } from 'vitest';
import { bucketFor, fillBuckets, parseBucket, shapeSeries } from './series';

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

describe('parseBucket', () => {
  it('reads the API bucket syntax', () => {
    expect(parseBucket('1m')).toBe(60_000);
    expect(parseBucket('5m')).toBe(300_000);
    expect(parseBucket('1h')).toBe(3_600_000);
    expect(parseBucket('1d')).toBe(86_400_000);
    expect(parseBucket('x')).toBeNull();
    expect(parseBucket('0m')).toBeNull();
  });
});

describe('fillBuckets', () => {
  const H = 3_600_000;
  const base = Date.parse('2026-05-31T00:00:00Z');
  it('fills missing buckets across the range with zeros', () => {
    const pts = [{ t: new Date(base + 2 * H).toISOString(), traces: 4, errors: 1, tokens: 10, cost_usd: 0.1, p95_ms: 5 }];
    const out = fillBuckets(pts, H, base + 30 * 60_000, base + 4 * H + 10);
    expect(out.map((p) => p.traces)).toEqual([0, 0, 4, 0, 0]);
    expect(Date.parse(out[0].t)).toBe(base);
    const s = shapeSeries(out);
    expect(s.latency.p95).toEqual([null, null, 5, null, null]);
    expect(s.percentiles).toEqual(['p95']);
  });
  it('leaves dense or oversized series alone', () => {
    const pts = [{ t: new Date(base).toISOString(), traces: 1, errors: 0, tokens: 1, cost_usd: 0 }];
    expect(fillBuckets(pts, 60_000, base - 365 * 86_400_000, base)).toBe(pts);
    expect(fillBuckets([], H)).toEqual([]);
  });
});
