// The trace-list filters as they live in the URL, and the client-side check that decides
// whether a trace announced over the WebSocket belongs in the list currently shown.
import type { TraceFilters, TraceSummary } from './api';

export const FILTER_KEYS = ['q', 'status', 'model', 'session_id', 'user_id', 'tag', 'range', 'since', 'until'] as const;
export type FilterKey = (typeof FILTER_KEYS)[number];
export type UrlFilters = Partial<Record<FilterKey, string>>;

export const RANGE_MS: Record<string, number> = {
  '15m': 15 * 60_000,
  '1h': 3_600_000,
  '24h': 86_400_000,
  '7d': 7 * 86_400_000,
  '30d': 30 * 86_400_000,
};

export function readFilters(q: URLSearchParams): UrlFilters {
  const out: UrlFilters = {};
  for (const k of FILTER_KEYS) {
    const v = q.get(k);
    if (v) out[k] = v;
  }
  return out;
}

export function hasFilters(f: UrlFilters): boolean {
  return FILTER_KEYS.some((k) => f[k]);
}

function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Turn URL filters into API parameters; relative ranges are resolved against `now`. */
export function toApiFilters(f: UrlFilters, now = Date.now()): TraceFilters {
  const out: TraceFilters = {};
  if (f.q) out.q = f.q;
  if (f.status) out.status = f.status;
  if (f.model) out.model = f.model;
  if (f.session_id) out.session_id = f.session_id;
  if (f.user_id) out.user_id = f.user_id;
  if (f.tag) out.tag = f.tag;
  if (f.since) out.since = f.since;
  else if (f.range && RANGE_MS[f.range]) out.since = isoSeconds(now - RANGE_MS[f.range]);
  if (f.until) out.until = f.until;
  return out;
}

/**
 * Does a live trace belong in a list filtered by `f`? Full-text search runs on the server
 * over prompts, responses and tool data; locally only the name and previews are known, so a
 * live trace shows up under a search only when those match.
 */
export function matchesFilters(t: TraceSummary, f: UrlFilters, now = Date.now()): boolean {
  if (f.status && t.status !== f.status) return false;
  if (f.model && t.model !== f.model) return false;
  if (f.session_id && t.session_id !== f.session_id) return false;
  if (f.user_id && t.user_id !== f.user_id) return false;
  if (f.tag && !(t.tags ?? []).includes(f.tag)) return false;
  const ts = Date.parse(t.timestamp);
  const api = toApiFilters(f, now);
  if (api.since && !(ts >= Date.parse(api.since))) return false;
  if (api.until && !(ts <= Date.parse(api.until))) return false;
  if (f.q) {
    const needle = f.q.toLowerCase();
    const hay = [t.name, t.prompt_preview, t.response_preview, t.model, t.id].filter(Boolean).join('\n').toLowerCase();
    const words = needle.split(/\s+/).filter(Boolean);
    if (!words.every((w) => hay.includes(w.replace(/^"|"$/g, '')))) return false;
  }
  return true;
}

/** Merge a live trace into a list kept newest first: replace by id or insert in order. */
export function mergeTrace(list: TraceSummary[], t: TraceSummary): TraceSummary[] {
  const i = list.findIndex((x) => x.id === t.id);
  if (i >= 0) {
    const next = list.slice();
    next[i] = { ...list[i], ...t };
    return next;
  }
  const ts = Date.parse(t.timestamp);
  let at = 0;
  while (at < list.length && Date.parse(list[at].timestamp) > ts) at++;
  const next = list.slice();
  next.splice(at, 0, t);
  return next;
}
