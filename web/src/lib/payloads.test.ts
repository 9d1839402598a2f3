import { afterEach, describe, expect, it } from 'vitest';
import { ApiError, NetworkError, type Span } from './api';
import {
  DEBOUNCE_MS,
  LARGE_TRACE_SPANS,
  QUIET_MS,
  SpanPayloads,
  forgetSpanCounts,
  isLarge,
  knownSpanCount,
  mergeSpan,
  payloadErrorText,
  planTraceLoad,
  rememberSpanCount,
} from './payloads';

function light(id: string, extra: Partial<Span> = {}): Span {
  return {
    id,
    parent_id: null,
    name: 'openai.chat',
    kind: 'llm',
    start_time: '2026-01-01T00:00:00.000Z',
    end_time: '2026-01-01T00:00:01.000Z',
    latency_ms: 1000,
    status: 'success',
    model: 'gpt-4o',
    input: null,
    output: null,
    tool: null,
    tokens: { prompt: 10, completion: 5, total: 15 },
    cost_usd: 0.001,
    attributes: { temperature: 0.2 },
    events: [],
    ...extra,
  };
}

function whole(id: string, extra: Partial<Span> = {}): Span {
  return light(id, {
    input: { messages: [{ role: 'user', content: `question ${id}` }] },
    output: { messages: [{ role: 'assistant', content: `answer ${id}` }] },
    events: [{ name: 'first_token', time: '2026-01-01T00:00:00.300Z' }],
    ...extra,
  });
}

/** A fake span route: answers whole spans for known ids, counts requests, resolves on demand. */
function fakeRoute(known: string[]) {
  const calls: string[] = [];
  const pending: (() => void)[] = [];
  const fetchSpan = (spanId: string) => {
    calls.push(spanId);
    return new Promise<Span>((res, rej) => {
      pending.push(() => (known.includes(spanId) ? res(whole(spanId)) : rej(new ApiError(404, 'not_found', `no span "${spanId}"`))));
    });
  };
  const flush = async () => {
    while (pending.length) pending.shift()!();
    await new Promise((r) => setTimeout(r, 0));
  };
  return { calls, fetchSpan, flush };
}

describe('when a trace is big', () => {
  afterEach(() => forgetSpanCounts());

  it('counts spans above the threshold as big', () => {
    expect(isLarge(LARGE_TRACE_SPANS)).toBe(false);
    expect(isLarge(LARGE_TRACE_SPANS + 1)).toBe(true);
    expect(isLarge(null)).toBe(false);
  });

  it('plans one request when the span count is known, a probe when not', () => {
    expect(planTraceLoad(5)).toBe('full');
    expect(planTraceLoad(LARGE_TRACE_SPANS)).toBe('full');
    expect(planTraceLoad(LARGE_TRACE_SPANS + 1)).toBe('light');
    expect(planTraceLoad(undefined)).toBe('probe');
  });

  it('remembers span counts from lists, bounded', () => {
    rememberSpanCount('tr_a', 12);
    rememberSpanCount('tr_b', 20_000);
    rememberSpanCount('tr_c', null);
    expect(knownSpanCount('tr_a')).toBe(12);
    expect(planTraceLoad(knownSpanCount('tr_b'))).toBe('light');
    expect(knownSpanCount('tr_c')).toBeUndefined();
    for (let i = 0; i < 6000; i++) rememberSpanCount(`tr_${i}`, i);
    expect(knownSpanCount('tr_a')).toBeUndefined();
    expect(knownSpanCount('tr_5999')).toBe(5999);
  });
});

describe('mergeSpan', () => {
  it('takes payloads from the whole span and figures from the light one', () => {
    const l = light('sp_1', { cost_usd: 0.5 });
    const m = mergeSpan(l, whole('sp_1', { cost_usd: 0.1 }));
    expect(m.cost_usd).toBe(0.5);
    expect(m.input).toEqual({ messages: [{ role: 'user', content: 'question sp_1' }] });
    expect(m.events).toHaveLength(1);
  });

  it('keeps the tool name and fills arguments and result', () => {
    const l = light('sp_t', { kind: 'tool', tool: { name: 'search', arguments: null, result: null } });
    const m = mergeSpan(l, light('sp_t', { kind: 'tool', tool: { name: 'search', arguments: { q: 'x' }, result: { hits: 2 } } }));
    expect(m.tool).toEqual({ name: 'search', arguments: { q: 'x' }, result: { hits: 2 } });
  });
});

describe('SpanPayloads', () => {
  it('asks the server once per span, however many callers', async () => {
    const route = fakeRoute(['sp_1']);
    const store = new SpanPayloads(route.fetchSpan);
    const l = light('sp_1');
    const a = store.load(l);
    const b = store.load(l);
    await route.flush();
    expect((await a).output).toEqual({ messages: [{ role: 'assistant', content: 'answer sp_1' }] });
    expect((await b).input).toBeTruthy();
    expect(route.calls).toEqual(['sp_1']);
    // and serves it from the cache afterwards
    expect(store.peek(l)?.events).toHaveLength(1);
    await store.load(l);
    expect(route.calls).toEqual(['sp_1']);
  });

  it('does not cache errors, so a retry asks again', async () => {
    const route = fakeRoute([]);
    const store = new SpanPayloads(route.fetchSpan);
    const p = expect(store.load(light('sp_gone'))).rejects.toMatchObject({ status: 404 });
    await route.flush();
    await p;
    expect(store.peek(light('sp_gone'))).toBeUndefined();
    const again = expect(store.load(light('sp_gone'))).rejects.toBeInstanceOf(ApiError);
    await route.flush();
    await again;
    expect(route.calls).toEqual(['sp_gone', 'sp_gone']);
  });

  it('keeps at most `capacity` spans, dropping the least recently used', async () => {
    const ids = ['a', 'b', 'c', 'd'];
    const route = fakeRoute(ids);
    const store = new SpanPayloads(route.fetchSpan, 3);
    for (const id of ['a', 'b', 'c']) {
      const p = store.load(light(id));
      await route.flush();
      await p;
    }
    expect(store.peek(light('a'))).toBeDefined(); // a is now the most recently used
    const p = store.load(light('d'));
    await route.flush();
    await p;
    expect(store.size).toBe(3);
    expect(store.peek(light('b'))).toBeUndefined();
    expect(store.peek(light('a'))).toBeDefined();
  });

  it('loads a span again when it changed since (a running trace that was reloaded)', async () => {
    const route = fakeRoute(['sp_run']);
    const store = new SpanPayloads(route.fetchSpan);
    const running = light('sp_run', { end_time: null, status: 'running' });
    const p = store.load(running);
    await route.flush();
    await p;
    expect(store.peek(running)).toBeDefined();
    const ended = light('sp_run');
    expect(store.peek(ended)).toBeUndefined();
    const q = store.load(ended);
    await route.flush();
    await q;
    expect(route.calls).toEqual(['sp_run', 'sp_run']);
  });

  it('fetches at once after a pause and debounces quick selection changes', () => {
    const store = new SpanPayloads(fakeRoute([]).fetchSpan);
    expect(store.delayFor(1000)).toBe(0); // first selection
    expect(store.delayFor(1030)).toBe(DEBOUNCE_MS); // arrow key repeat
    expect(store.delayFor(1060)).toBe(DEBOUNCE_MS);
    expect(store.delayFor(1060 + QUIET_MS + 1)).toBe(0); // a click later on
  });
});

describe('payloadErrorText', () => {
  it('says what happened in words', () => {
    expect(payloadErrorText(new ApiError(404, 'not_found', 'no span'))).toMatch(/no stored content/);
    expect(payloadErrorText(new NetworkError('down'))).toMatch(/cannot be reached/);
    expect(payloadErrorText(new ApiError(500, 'internal', 'disk full'))).toMatch(/could not be loaded: disk full/);
  });
});
