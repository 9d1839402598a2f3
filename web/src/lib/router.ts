// A small history-API router: the app has seven routes, which does not need a library.
import { useEffect, useMemo, useState } from 'preact/hooks';

type Listener = () => void;
const listeners = new Set<Listener>();

function notify() {
  for (const l of listeners) l();
}

if (typeof window !== 'undefined') window.addEventListener('popstate', notify);

export interface Loc {
  path: string;
  search: string;
}

function current(): Loc {
  return { path: location.pathname, search: location.search };
}

export function navigate(to: string, opts: { replace?: boolean } = {}) {
  const before = location.pathname + location.search;
  if (to === before) return;
  const samePath = new URL(to, location.href).pathname === location.pathname;
  if (opts.replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  if (!samePath && !opts.replace) window.scrollTo(0, 0);
  notify();
}

export function useLocation(): Loc {
  const [loc, setLoc] = useState(current);
  useEffect(() => {
    const l = () => setLoc(current());
    listeners.add(l);
    l();
    return () => {
      listeners.delete(l);
    };
  }, []);
  return loc;
}

export function useQuery(): URLSearchParams {
  const { search } = useLocation();
  return useMemo(() => new URLSearchParams(search), [search]);
}

/** Build a query string from a record, dropping empty values; keeps a stable key order. */
export function buildQuery(params: Record<string, string | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? '?' + s : '';
}

/** Update some query parameters of the current URL (null removes one). */
export function setQuery(updates: Record<string, string | null | undefined>, opts: { replace?: boolean } = {}) {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(updates)) {
    if (v == null || v === '') q.delete(k);
    else q.set(k, v);
  }
  const s = q.toString();
  navigate(location.pathname + (s ? '?' + s : ''), opts);
}

/** Intercept plain left clicks on in-app links so they navigate without a page load. */
export function onLinkClick(e: MouseEvent, href: string) {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(href);
}

export function matchRoute(pattern: string, path: string): Record<string, string> | null {
  const pp = pattern.split('/').filter(Boolean);
  const sp = path.split('/').filter(Boolean);
  if (pp.length !== sp.length) return null;
  const out: Record<string, string> = {};
  for (let i = 0; i < pp.length; i++) {
    if (pp[i].startsWith(':')) out[pp[i].slice(1)] = decodeURIComponent(sp[i]);
    else if (pp[i] !== sp[i]) return null;
  }
  return out;
}
