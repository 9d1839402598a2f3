// Typed access to the TraceLLM HTTP API. The dashboard is served by the same binary that
// serves the API under /api, so every call is a same-origin relative URL. Data calls carry the
// selected project's key; admin calls (projects, keys) the admin token when one was entered.
import { auth } from './auth';

export type TraceStatus = 'success' | 'error' | 'retried' | 'running';
export type SpanKind =
  | 'llm'
  | 'tool'
  | 'retriever'
  | 'embedding'
  | 'agent'
  | 'chain'
  | 'reranker'
  | 'guardrail'
  | 'evaluator'
  | 'event'
  | 'span';

export interface Tokens {
  prompt?: number | null;
  completion?: number | null;
  total?: number | null;
  estimated?: boolean;
}

export interface TraceSummary {
  id: string;
  name: string | null;
  status: TraceStatus | string;
  timestamp: string;
  latency_ms: number | null;
  model: string | null;
  tokens: Tokens | null;
  cost_usd: number | null;
  span_count: number;
  error_count: number;
  session_id: string | null;
  user_id: string | null;
  tags: string[] | null;
  prompt_preview: string | null;
  response_preview: string | null;
}

export interface SpanError {
  type?: string | null;
  message?: string | null;
  stack?: string | null;
}

export interface SpanEvent {
  name: string;
  time?: string | null;
  attributes?: Record<string, unknown> | null;
}

export interface Span {
  id: string;
  parent_id: string | null;
  name: string;
  kind: SpanKind | string;
  start_time: string;
  end_time: string | null;
  latency_ms: number | null;
  status: string;
  model?: string | null;
  provider?: string | null;
  input?: unknown;
  output?: unknown;
  tool?: { name?: string; arguments?: unknown; result?: unknown } | null;
  tokens?: Tokens | null;
  cost_usd?: number | null;
  time_to_first_token_ms?: number | null;
  error?: SpanError | null;
  attributes?: Record<string, unknown> | null;
  events?: SpanEvent[] | null;
}

export interface Trace extends TraceSummary {
  project_id?: string;
  end_time?: string | null;
  prompt?: string | null;
  response?: string | null;
  provider?: string | null;
  retries?: number | null;
  failure_reason?: string | null;
  metadata?: Record<string, unknown> | null;
  spans: Span[];
}

export interface TraceList {
  traces: TraceSummary[];
  next_cursor: string | null;
}

export interface LatencyStats {
  avg?: number | null;
  p50?: number | null;
  p95?: number | null;
  p99?: number | null;
}

export interface ModelStats {
  model: string | null;
  traces: number;
  spans?: number;
  errors?: number;
  tokens: Tokens | number | null;
  cost_usd: number | null;
  latency_ms: LatencyStats | null;
}

export interface TimePoint {
  t: string;
  traces: number;
  errors: number;
  tokens: number | Tokens | null;
  cost_usd: number | null;
  p50_ms?: number | null;
  p95_ms?: number | null;
  p99_ms?: number | null;
  [k: string]: unknown;
}

export interface Analytics {
  totals: {
    traces: number;
    spans: number;
    errors: number;
    error_rate: number | null;
    tokens: Tokens | null;
    cost_usd: number | null;
    latency_ms: LatencyStats | null;
  };
  by_model: ModelStats[];
  timeseries: TimePoint[];
}

export interface Failure {
  id: string;
  name: string | null;
  status: string;
  failure_reason: string | null;
  timestamp: string;
  model: string | null;
  retries: number | null;
}

export interface FailureList {
  failures: Failure[];
  next_cursor: string | null;
}

export interface Health {
  status: string;
  version?: string;
  store?: string;
  [k: string]: unknown;
}

/** An error answered by the server in its `{"error":{"code","message"}}` shape. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The server could not be reached at all (not running, connection refused, ...). */
export class NetworkError extends Error {}

export const API_BASE = '/api';

export function apiUrl(path: string, params?: Record<string, string | number | null | undefined>): string {
  let url = API_BASE + path;
  if (params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
    }
    const s = q.toString();
    if (s) url += '?' + s;
  }
  return url;
}

const ADMIN_PATHS = ['/projects', '/api-keys'];
const isAdminPath = (path: string) => ADMIN_PATHS.some((p) => path === p || path.startsWith(p + '/'));

/** A call to the API; data routes get the key in use, admin routes the admin token. */
export async function request<T>(
  method: string,
  path: string,
  params?: Record<string, string | number | null | undefined>,
  signal?: AbortSignal,
): Promise<T> {
  const admin = isAdminPath(path);
  const headers: Record<string, string> = { Accept: 'application/json' };
  const key = admin ? null : auth.key;
  // Without a key a request would reach `default`, not the project on screen: ask for one instead.
  if (!admin && auth.missingKey) {
    const message = `No key of project ${auth.selection} is kept in this browser.`;
    auth.requireKey(message);
    throw new ApiError(401, 'unauthorized', message);
  }
  if (key) headers.Authorization = 'Bearer ' + key;
  if (admin && auth.adminToken) headers['X-Admin-Token'] = auth.adminToken;
  const epoch = auth.epoch;
  let res: Response;
  try {
    res = await fetch(apiUrl(path, params), { method, signal, headers });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new NetworkError('The TraceLLM server cannot be reached.');
  }
  const text = await res.text();
  let body: unknown = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!res.ok) {
    const err = (body as { error?: { code?: string; message?: string } } | null)?.error;
    // The server always answers errors in its JSON shape; a 5xx without it comes from a proxy
    // in front (the dev server) that could not reach it.
    if (!err && res.status >= 500) {
      throw new NetworkError('The TraceLLM server cannot be reached.');
    }
    const message = err?.message ?? `${res.status} ${res.statusText}`;
    // A 401 on a data route: no key where one is required, or the key in use was refused. The
    // key entry replaces the page (an answer to a request made with an older key is ignored).
    if (res.status === 401) {
      if (admin) auth.requireAdmin();
      else if (epoch === auth.epoch) auth.requireKey(message);
    }
    throw new ApiError(res.status, err?.code ?? `http_${res.status}`, message);
  }
  if (body === null && text) throw new ApiError(res.status, 'bad_json', 'The server answered with invalid JSON.');
  return body as T;
}

export function getJson<T>(
  path: string,
  params?: Record<string, string | number | null | undefined>,
  signal?: AbortSignal,
): Promise<T> {
  return request<T>('GET', path, params, signal);
}

export interface Project {
  id: string;
  name: string;
  description?: string | null;
  created_at?: string;
}

export interface ApiKey {
  id: string;
  project_id: string;
  environment: string;
  name: string | null;
  prefix: string;
  created_at: string;
  revoked_at: string | null;
  last_used_at: string | null;
  /** the secret, only in the answer that created it */
  key?: string;
}

export const admin = {
  projects: (signal?: AbortSignal) => getJson<{ projects: Project[] }>('/projects', undefined, signal).then((b) => b.projects),
  createProject: (p: { name: string; environment: string; description?: string }) =>
    request<{ project: Project; api_key: ApiKey }>('POST', '/projects', p),
  keys: (project: string | null, signal?: AbortSignal) =>
    getJson<{ api_keys: ApiKey[] }>('/api-keys', { project }, signal).then((b) => b.api_keys),
  createKey: (p: { project: string; environment: string; name: string }) =>
    request<{ api_key: ApiKey }>('POST', '/api-keys', p).then((b) => b.api_key),
  revokeKey: (id: string) => request<{ api_key: ApiKey }>('DELETE', '/api-keys/' + encodeURIComponent(id)).then((b) => b.api_key),
};

export interface TraceFilters {
  status?: string;
  model?: string;
  session_id?: string;
  user_id?: string;
  tag?: string;
  since?: string;
  until?: string;
  q?: string;
}

export const api = {
  health: (signal?: AbortSignal) => getJson<Health>('/', undefined, signal),
  traces: (f: TraceFilters & { limit?: number; cursor?: string | null }, signal?: AbortSignal) =>
    getJson<TraceList>('/traces', { ...f }, signal),
  /** A whole trace; with `payloads: false` its spans come without input, output, tool data and events. */
  trace: (id: string, signal?: AbortSignal, opts: { payloads?: boolean } = {}) =>
    getJson<Trace>('/traces/' + encodeURIComponent(id), opts.payloads === false ? { payloads: 'false' } : undefined, signal),
  /** One span of a trace, whole (payloads included). */
  span: (traceId: string, spanId: string, signal?: AbortSignal) =>
    getJson<Span>('/traces/' + encodeURIComponent(traceId) + '/spans/' + encodeURIComponent(spanId), undefined, signal),
  analytics: (p: { since?: string; until?: string; bucket?: string }, signal?: AbortSignal) =>
    getJson<Analytics>('/analytics', p, signal),
  failures: (p: { limit?: number; cursor?: string | null; since?: string }, signal?: AbortSignal) =>
    getJson<FailureList>('/failures', p, signal),
};

/** Token totals may come as an object or a bare number; this reads the total either way. */
export function tokenTotal(t: Tokens | number | null | undefined): number | null {
  if (t == null) return null;
  if (typeof t === 'number') return t;
  if (t.total != null) return t.total;
  if (t.prompt != null || t.completion != null) return (t.prompt ?? 0) + (t.completion ?? 0);
  return null;
}
