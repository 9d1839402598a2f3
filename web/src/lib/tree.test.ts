import { describe, expect, it } from 'vitest';
import { ancestors, buildTree, collapseBelowDepth, visibleRows, type SpanInput } from './tree';

const T0 = Date.parse('2026-05-31T10:30:00Z');
const iso = (ms: number) => new Date(T0 + ms).toISOString();

function span(id: string, parent: string | null, s: number, e: number, extra: Partial<SpanInput> = {}): SpanInput {
  return { id, parent_id: parent, start_time: iso(s), end_time: iso(e), name: id, kind: 'span', status: 'success', ...extra };
}

const ids = (spans: SpanInput[], arr: ArrayLike<number>) => Array.from(arr, (i) => spans[i].id);

describe('buildTree', () => {
  const spans = [
    span('root', null, 0, 1000),
    span('a', 'root', 10, 400),
    span('a1', 'a', 20, 100),
    span('a2', 'a', 120, 390),
    span('b', 'root', 450, 990),
    span('b1', 'b', 460, 900),
  ];

  it('orders spans depth first with children by start time', () => {
    const t = buildTree(spans);
    expect(ids(spans, t.order)).toEqual(['root', 'a', 'a1', 'a2', 'b', 'b1']);
    expect(Array.from(t.depth)).toEqual([0, 1, 2, 2, 1, 2]);
    expect(t.roots).toEqual([0]);
    expect(t.maxDepth).toBe(2);
    expect(Array.from(t.childCount)).toEqual([2, 2, 0, 0, 1, 0]);
    expect(Array.from(t.subtreeSize)).toEqual([6, 3, 1, 1, 2, 1]);
    expect(t.minStart).toBe(T0);
    expect(t.maxEnd).toBe(T0 + 1000);
  });

  it('sorts siblings that arrive out of start order', () => {
    const shuffled = [spans[4], spans[3], spans[0], spans[5], spans[2], spans[1]];
    const t = buildTree(shuffled);
    expect(ids(shuffled, t.order)).toEqual(['root', 'a', 'a1', 'a2', 'b', 'b1']);
    for (let k = 0; k < t.n; k++) expect(t.pos[t.order[k]]).toBe(k);
  });

  it('treats spans with an unknown parent as roots and reports them', () => {
    const s = [span('x', null, 0, 10), span('y', 'missing', 5, 8)];
    const t = buildTree(s);
    expect(t.roots).toEqual([0, 1]);
    expect(t.orphans).toEqual([1]);
    expect(ids(s, t.order)).toEqual(['x', 'y']);
  });

  it('does not loop on parent cycles or self-parents', () => {
    const s = [span('p', 'q', 0, 10), span('q', 'p', 1, 9), span('s', 's', 2, 3)];
    const t = buildTree(s);
    expect(t.order.length).toBe(3);
    expect(new Set(Array.from(t.order)).size).toBe(3);
  });

  it('fills in end times from latency or the trace end', () => {
    const s: SpanInput[] = [
      { id: 'r', parent_id: null, start_time: iso(0), end_time: iso(500) },
      { id: 'l', parent_id: 'r', start_time: iso(100), end_time: null, latency_ms: 50 },
      { id: 'o', parent_id: 'r', start_time: iso(200), end_time: null, status: 'running' },
    ];
    const t = buildTree(s);
    expect(t.end[1]).toBe(T0 + 150);
    expect(t.open[2]).toBe(1);
    expect(t.end[2]).toBe(T0 + 500);
  });

  it('rolls errors up to ancestors', () => {
    const s = [span('r', null, 0, 10), span('c', 'r', 1, 9), span('g', 'c', 2, 3, { status: 'error' })];
    const t = buildTree(s);
    expect(Array.from(t.isError)).toEqual([0, 0, 1]);
    expect(Array.from(t.errorBelow)).toEqual([1, 1, 0]);
  });

  it('marks repeated calls after a failure as retries', () => {
    const s = [
      span('r', null, 0, 100),
      span('t1', 'r', 1, 10, { name: 'search', kind: 'tool', status: 'error' }),
      span('t2', 'r', 11, 20, { name: 'search', kind: 'tool', status: 'error' }),
      span('t3', 'r', 21, 30, { name: 'search', kind: 'tool' }),
      span('l1', 'r', 31, 40, { name: 'chat', kind: 'llm' }),
      span('l2', 'r', 41, 50, { name: 'chat', kind: 'llm' }),
    ];
    const t = buildTree(s);
    expect(Array.from(t.retry)).toEqual([0, 0, 1, 2, 0, 0]);
  });

  it('handles an empty trace', () => {
    const t = buildTree([]);
    expect(t.n).toBe(0);
    expect(t.order.length).toBe(0);
  });

  it('builds a 100,000-deep chain without recursion', () => {
    const n = 100_000;
    const s: SpanInput[] = [];
    for (let i = 0; i < n; i++) s.push(span('s' + i, i ? 's' + (i - 1) : null, i, 2 * n - i));
    const t = buildTree(s);
    expect(t.maxDepth).toBe(n - 1);
    expect(t.order[n - 1]).toBe(n - 1);
    expect(t.subtreeSize[0]).toBe(n);
  });

  it('scales linearly: 20x the spans costs nowhere near 400x the time', () => {
    const make = (n: number) => {
      const s: SpanInput[] = [span('root', null, 0, n + 1)];
      // wide and deep mix: every span hangs under one of the previous 10
      for (let i = 1; i < n; i++) s.push(span('s' + i, i < 10 ? 'root' : 's' + (i - 1 - (i % 10)), i, i + 1));
      return s;
    };
    const small = make(10_000);
    const big = make(200_000);
    buildTree(small); // warm up
    const time = (s: SpanInput[]) => {
      const t0 = performance.now();
      buildTree(s);
      return performance.now() - t0;
    };
    const a = Math.max(time(small), time(small), 0.5);
    const b = Math.min(time(big), time(big));
    expect(b / a).toBeLessThan(100);
  });
});

describe('visibleRows', () => {
  const spans = [
    span('root', null, 0, 1000),
    span('a', 'root', 10, 400),
    span('a1', 'a', 20, 100),
    span('a2', 'a', 120, 390),
    span('b', 'root', 450, 990),
    span('b1', 'b', 460, 900),
  ];
  const t = buildTree(spans);
  it('shows every span when nothing is collapsed', () => {
    expect(ids(spans, visibleRows(t, new Set()))).toEqual(['root', 'a', 'a1', 'a2', 'b', 'b1']);
  });
  it('hides the descendants of collapsed spans', () => {
    expect(ids(spans, visibleRows(t, new Set([1])))).toEqual(['root', 'a', 'b', 'b1']);
    expect(ids(spans, visibleRows(t, new Set([1, 4])))).toEqual(['root', 'a', 'b']);
    expect(ids(spans, visibleRows(t, new Set([0])))).toEqual(['root']);
  });
  it('ignores collapsing a leaf', () => {
    expect(ids(spans, visibleRows(t, new Set([2])))).toEqual(['root', 'a', 'a1', 'a2', 'b', 'b1']);
  });
  it('lists ancestors nearest first', () => {
    expect(ids(spans, ancestors(t, 5))).toEqual(['b', 'root']);
  });
  it('collapses below a depth', () => {
    const c = collapseBelowDepth(t, 1);
    expect(ids(spans, visibleRows(t, c))).toEqual(['root', 'a', 'b']);
  });
});
