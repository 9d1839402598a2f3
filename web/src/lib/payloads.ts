// Big traces are fetched without span payloads (inputs, outputs, tool arguments/results and
// events) and each span's payloads are loaded when it is opened. This module holds the pure
// parts: when a trace counts as big, which span counts the lists already told us, merging a
// loaded span into the light one, and a small cache of loaded spans with request coalescing.
import { ApiError, NetworkError, type Span } from './api';

/**
 * Above this many spans the inspector fetches the trace without payloads. Below it one full
 * fetch is small enough (a few MB even with multi-KB prompts) and every span opens at once;
 * above it the payloads are most of the bytes to fetch, parse and keep, and are rarely read.
 */
export const LARGE_TRACE_SPANS = 1000;

export function isLarge(spanCount: number | null | undefined): boolean {
  return spanCount != null && spanCount > LARGE_TRACE_SPANS;
}

/**
 * How to fetch a trace: `full` in one request, `light` without payloads, or `probe` when the
 * span count is unknown (opened by URL): fetch it light, then fully if it turns out small.
 */
export type LoadPlan = 'full' | 'light' | 'probe';

export function planTraceLoad(knownSpanCount: number | null | undefined): LoadPlan {
  if (knownSpanCount == null) return 'probe';
  return isLarge(knownSpanCount) ? 'light' : 'full';
}

// Span counts seen in trace lists (list page, overview, live stream), so that opening a trace
// from a list needs a single request. Bounded: the oldest entries go first.
const MAX_KNOWN = 5000;
const knownCounts = new Map<string, number>();

export function rememberSpanCount(traceId: string, spanCount: number | null | undefined) {
  if (spanCount == null || !Number.isFinite(spanCount)) return;
  if (knownCounts.get(traceId) === spanCount) return;
  knownCounts.delete(traceId);
  knownCounts.set(traceId, spanCount);
  if (knownCounts.size > MAX_KNOWN) knownCounts.delete(knownCounts.keys().next().value as string);
}

export function knownSpanCount(traceId: string): number | undefined {
  return knownCounts.get(traceId);
}

export function forgetSpanCounts() {
  knownCounts.clear();
}

/** The light span (its figures are the trace's) with the payloads of the whole one. */
export function mergeSpan(light: Span, full: Span): Span {
  return {
    ...light,
    input: full.input,
    output: full.output,
    events: full.events ?? [],
    tool: full.tool ?? light.tool ?? null,
    attributes: full.attributes ?? light.attributes,
  };
}

/** What changes about a span while its trace runs: a loaded span with another stamp is stale. */
function stamp(s: Span): string {
  return `${s.end_time ?? ''}|${s.status}`;
}

/** A sentence for a span whose payloads could not be loaded. */
export function payloadErrorText(e: unknown): string {
  if (e instanceof ApiError && e.status === 404)
    return 'The server has no stored content for this span (it may have been deleted since the trace was loaded).';
  if (e instanceof NetworkError) return 'The TraceLLM server cannot be reached, so the content of this span could not be loaded.';
  const msg = e instanceof Error ? e.message : String(e);
  return `The content of this span could not be loaded: ${msg}`;
}

export type FetchSpan = (spanId: string) => Promise<Span>;

/** Wait this long after the previous selection change before fetching (keys held down). */
export const DEBOUNCE_MS = 150;
/** A selection this long after the previous one is fetched at once (a click, a single key). */
export const QUIET_MS = 300;

/**
 * Loaded spans of one trace: at most `capacity` kept (least recently used go first), one
 * request per span however many callers ask, errors not cached (so a retry asks again).
 */
export class SpanPayloads {
  private cache = new Map<string, { full: Span; stamp: string }>();
  private inflight = new Map<string, Promise<Span>>();
  private lastChange = -Infinity;

  constructor(
    private readonly fetchSpan: FetchSpan,
    private readonly capacity = 300,
  ) {}

  /** The light span merged with its loaded payloads, if loaded and still current. */
  peek(light: Span): Span | undefined {
    const hit = this.cache.get(light.id);
    if (!hit) return undefined;
    this.cache.delete(light.id);
    if (hit.stamp !== stamp(light)) return undefined;
    this.cache.set(light.id, hit);
    return mergeSpan(light, hit.full);
  }

  load(light: Span): Promise<Span> {
    const hit = this.peek(light);
    if (hit) return Promise.resolve(hit);
    const key = light.id + '\n' + stamp(light);
    let p = this.inflight.get(key);
    if (!p) {
      p = this.fetchSpan(light.id).then(
        (full) => {
          this.inflight.delete(key);
          this.cache.set(light.id, { full, stamp: stamp(light) });
          while (this.cache.size > this.capacity) this.cache.delete(this.cache.keys().next().value as string);
          return full;
        },
        (e) => {
          this.inflight.delete(key);
          throw e;
        },
      );
      this.inflight.set(key, p);
    }
    return p.then((full) => mergeSpan(light, full));
  }

  /**
   * Note a change of the selected span at `now` (ms) and return how long to wait before
   * fetching it: nothing after a pause, a short debounce while selections come quickly.
   */
  delayFor(now: number): number {
    const d = now - this.lastChange > QUIET_MS ? 0 : DEBOUNCE_MS;
    this.lastChange = now;
    return d;
  }

  get size(): number {
    return this.cache.size;
  }
}
