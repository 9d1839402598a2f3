import { describe, expect, it } from 'vitest';
import type { TraceSummary } from './api';
import { hasFilters, matchesFilters, mergeTrace, readFilters, toApiFilters } from './filters';

const NOW = Date.parse('2026-05-31T12:00:00Z');
function tr(id: string, over: Partial<TraceSummary> = {}): TraceSummary {
  return {
    id,
    name: 'support-agent',
    status: 'success',
    timestamp: '2026-05-31T11:59:00Z',
    latency_ms: 100,
    model: 'gpt-4o',
    tokens: { prompt: 1, completion: 2, total: 3 },
    cost_usd: null,
    span_count: 1,
    error_count: 0,
    session_id: 's1',
    user_id: 'u1',
    tags: ['prod'],
    prompt_preview: 'Explain transformers',
    response_preview: 'A transformer is',
    ...over,
  };
}

describe('URL filters', () => {
  it('reads only known keys', () => {
    const f = readFilters(new URLSearchParams('q=hi&status=error&x=1&model='));
    expect(f).toEqual({ q: 'hi', status: 'error' });
    expect(hasFilters(f)).toBe(true);
    expect(hasFilters({})).toBe(false);
  });
  it('resolves a relative range to since', () => {
    expect(toApiFilters({ range: '1h', model: 'gpt-4o' }, NOW)).toEqual({ model: 'gpt-4o', since: '2026-05-31T11:00:00Z' });
    expect(toApiFilters({ range: 'all' }, NOW)).toEqual({});
    expect(toApiFilters({ range: '1h', since: '2026-01-01T00:00:00Z' }, NOW).since).toBe('2026-01-01T00:00:00Z');
  });
});

describe('matchesFilters', () => {
  it('matches exact fields', () => {
    expect(matchesFilters(tr('a'), {}, NOW)).toBe(true);
    expect(matchesFilters(tr('a'), { status: 'error' }, NOW)).toBe(false);
    expect(matchesFilters(tr('a', { status: 'error' }), { status: 'error' }, NOW)).toBe(true);
    expect(matchesFilters(tr('a'), { model: 'claude' }, NOW)).toBe(false);
    expect(matchesFilters(tr('a'), { session_id: 's2' }, NOW)).toBe(false);
    expect(matchesFilters(tr('a'), { user_id: 'u1' }, NOW)).toBe(true);
    expect(matchesFilters(tr('a'), { tag: 'prod' }, NOW)).toBe(true);
    expect(matchesFilters(tr('a', { tags: null }), { tag: 'prod' }, NOW)).toBe(false);
  });
  it('checks the time range', () => {
    expect(matchesFilters(tr('a'), { range: '15m' }, NOW)).toBe(true);
    expect(matchesFilters(tr('a', { timestamp: '2026-05-31T10:00:00Z' }), { range: '15m' }, NOW)).toBe(false);
    expect(matchesFilters(tr('a'), { until: '2026-05-31T11:00:00Z' }, NOW)).toBe(false);
  });
  it('searches the name and previews case-insensitively, all words', () => {
    expect(matchesFilters(tr('a'), { q: 'TRANSFORMER' }, NOW)).toBe(true);
    expect(matchesFilters(tr('a'), { q: 'explain transformer' }, NOW)).toBe(true);
    expect(matchesFilters(tr('a'), { q: 'explain kittens' }, NOW)).toBe(false);
  });
});

describe('mergeTrace', () => {
  it('inserts newest first and replaces by id', () => {
    const a = tr('a', { timestamp: '2026-05-31T11:00:00Z' });
    const b = tr('b', { timestamp: '2026-05-31T10:00:00Z' });
    const c = tr('c', { timestamp: '2026-05-31T10:30:00Z' });
    let list = mergeTrace([a, b], c);
    expect(list.map((x) => x.id)).toEqual(['a', 'c', 'b']);
    list = mergeTrace(list, tr('d', { timestamp: '2026-05-31T11:30:00Z' }));
    expect(list[0].id).toBe('d');
    list = mergeTrace(list, { ...c, status: 'error' });
    expect(list.length).toBe(4);
    expect(list[2].status).toBe('error');
  });
});
