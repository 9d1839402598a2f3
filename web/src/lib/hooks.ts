import { useCallback, useEffect, useLayoutEffect, useReducer, useRef, useState } from 'preact/hooks';
import {
  Virtualizer,
  elementScroll,
  observeElementOffset,
  observeElementRect,
  type VirtualizerOptions,
} from '@tanstack/virtual-core';
import { NetworkError, type Span } from './api';
import type { SpanPayloads } from './payloads';

export interface FetchState<T> {
  data: T | null;
  error: Error | null;
  loading: boolean;
  reload: () => void;
}

/**
 * Load data for a component; re-runs when `key` changes, aborts stale requests, and retries
 * by itself every few seconds while the server cannot be reached.
 */
export function useFetch<T>(load: (signal: AbortSignal) => Promise<T>, key: string): FetchState<T> {
  const [state, setState] = useState<{ data: T | null; error: Error | null; loading: boolean; key: string }>({
    data: null,
    error: null,
    loading: true,
    key,
  });
  const [nonce, setNonce] = useState(0);
  const reload = useCallback(() => setNonce((n) => n + 1), []);
  useEffect(() => {
    const ctl = new AbortController();
    let retry: ReturnType<typeof setTimeout> | null = null;
    setState((s) => ({ data: s.key === key ? s.data : null, error: s.key === key ? s.error : null, loading: true, key }));
    load(ctl.signal).then(
      (data) => {
        if (!ctl.signal.aborted) setState({ data, error: null, loading: false, key });
      },
      (error: Error) => {
        if (ctl.signal.aborted || error.name === 'AbortError') return;
        setState((s) => ({ data: s.key === key ? s.data : null, error, loading: false, key }));
        if (error instanceof NetworkError) retry = setTimeout(() => setNonce((n) => n + 1), 3000);
      },
    );
    return () => {
      ctl.abort();
      if (retry) clearTimeout(retry);
    };
  }, [key, nonce]);
  return { data: state.data, error: state.error, loading: state.loading, reload };
}

export function useDebounced<T>(value: T, ms: number): T {
  const [v, setV] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setV(value), ms);
    return () => clearTimeout(t);
  }, [value, ms]);
  return v;
}

/** Re-render every `ms` milliseconds (relative times such as "5s ago"). */
export function useTick(ms: number) {
  const [, force] = useReducer((x: number) => x + 1, 0);
  useEffect(() => {
    const t = setInterval(force, ms);
    return () => clearInterval(t);
  }, [ms]);
}

type VOpts = Pick<
  VirtualizerOptions<HTMLElement, Element>,
  'count' | 'getScrollElement' | 'estimateSize' | 'overscan' | 'getItemKey' | 'paddingStart'
>;

/** A Preact binding for @tanstack/virtual-core with fixed-size rows. */
export function useVirtualizer(opts: VOpts): Virtualizer<HTMLElement, Element> {
  const [, rerender] = useReducer((x: number) => x + 1, 0);
  const full: VirtualizerOptions<HTMLElement, Element> = {
    observeElementRect,
    observeElementOffset,
    scrollToFn: elementScroll,
    ...opts,
    onChange: () => rerender(0),
  };
  const ref = useRef<Virtualizer<HTMLElement, Element> | null>(null);
  if (!ref.current) ref.current = new Virtualizer(full);
  else ref.current.setOptions(full);
  useLayoutEffect(() => ref.current!._didMount(), []);
  useLayoutEffect(() => {
    ref.current!._willUpdate();
  });
  return ref.current;
}

/** Width of an element, kept current with a ResizeObserver. */
export function useWidth(ref: { current: HTMLElement | null }): number {
  const [w, setW] = useState(0);
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    setW(el.clientWidth);
    const ro = new ResizeObserver(() => setW(el.clientWidth));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  return w;
}

/** Is focus in a text field (where single-key shortcuts must not fire)? */
export function typingInField(e: KeyboardEvent): boolean {
  const t = e.target as HTMLElement | null;
  if (!t) return false;
  const tag = t.tagName;
  return tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT' || t.isContentEditable;
}

/** A selected span with its payloads: ready, still loading, or failed to load. */
export type SpanPayload =
  | { state: 'ready'; span: Span }
  | { state: 'loading'; span: Span }
  | { state: 'error'; span: Span; error: unknown; retry: () => void };

/**
 * The payloads of the selected span of a trace fetched without them (`store` is null when the
 * trace came whole). Loads through the store's cache; fetches at once after a pause and with a
 * short debounce while the selection moves quickly (arrow keys held down).
 */
export function useSpanPayload(store: SpanPayloads | null, light: Span | null): SpanPayload | null {
  const [res, setRes] = useState<{ light: Span; span?: Span; error?: unknown } | null>(null);
  const [nonce, setNonce] = useState(0);
  useEffect(() => {
    if (!store || !light) return;
    const delay = store.delayFor(performance.now());
    if (store.peek(light)) return;
    let live = true;
    const t = setTimeout(() => {
      store.load(light).then(
        (span) => live && setRes({ light, span }),
        (error) => live && setRes({ light, error }),
      );
    }, delay);
    return () => {
      live = false;
      clearTimeout(t);
    };
  }, [store, light, nonce]);
  const retry = useCallback(() => {
    setRes(null);
    setNonce((n) => n + 1);
  }, []);
  if (!light) return null;
  if (!store) return { state: 'ready', span: light };
  const cached = store.peek(light);
  if (cached) return { state: 'ready', span: cached };
  if (res?.light === light) {
    if (res.span) return { state: 'ready', span: res.span };
    return { state: 'error', span: light, error: res.error, retry };
  }
  return { state: 'loading', span: light };
}
