import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api, type TraceSummary } from '../lib/api';
import { FILTER_KEYS, hasFilters, matchesFilters, mergeTrace, readFilters, toApiFilters, type UrlFilters } from '../lib/filters';
import { navigate, setQuery, useQuery } from '../lib/router';
import { useLiveMessages, useLiveState, useReconnect } from '../lib/live';
import { typingInField, useFetch } from '../lib/hooks';
import { Icon } from '../components/icons';
import { ErrorState, Kbd, Loading, PageHeader, RANGES, EmptyState } from '../components/ui';
import { TraceTable, traceHref } from '../components/TraceTable';
import { Onboarding } from '../components/Onboarding';

const PAGE = 50;

function TextFilter({ name, label, value, placeholder }: { name: string; label: string; value?: string; placeholder: string }) {
  const [v, setV] = useState(value ?? '');
  useEffect(() => setV(value ?? ''), [value]);
  const commit = () => {
    if ((value ?? '') !== v.trim()) setQuery({ [name]: v.trim() || null }, { replace: false });
  };
  return (
    <label class="field">
      <span class="field-label">{label}</span>
      <input
        class="input"
        name={name}
        value={v}
        placeholder={placeholder}
        onInput={(e) => setV((e.target as HTMLInputElement).value)}
        onBlur={commit}
        onKeyDown={(e) => {
          if (e.key === 'Enter') commit();
          if (e.key === 'Escape') (e.target as HTMLInputElement).blur();
        }}
      />
    </label>
  );
}

function SearchBox({ value }: { value?: string }) {
  const [v, setV] = useState(value ?? '');
  const ref = useRef<HTMLInputElement>(null);
  useEffect(() => setV(value ?? ''), [value]);
  // Search as the user types, without a history entry per keystroke.
  useEffect(() => {
    if ((value ?? '') === v.trim()) return;
    const t = setTimeout(() => setQuery({ q: v.trim() || null }, { replace: true }), 300);
    return () => clearTimeout(t);
  }, [v]);
  useEffect(() => {
    const f = (e: KeyboardEvent) => {
      if (e.key === '/' && !typingInField(e) && !e.metaKey && !e.ctrlKey) {
        e.preventDefault();
        ref.current?.focus();
        ref.current?.select();
      }
    };
    window.addEventListener('keydown', f);
    return () => window.removeEventListener('keydown', f);
  }, []);
  return (
    <label class="search">
      <Icon name="search" size={15} />
      <span class="sr-only">Search prompts, responses and tool data</span>
      <input
        ref={ref}
        type="search"
        name="q"
        class="search-input"
        placeholder="Search prompts, responses, tool data…"
        value={v}
        onInput={(e) => setV((e.target as HTMLInputElement).value)}
        onKeyDown={(e) => {
          if (e.key === 'Enter') setQuery({ q: v.trim() || null }, { replace: true });
          if (e.key === 'Escape') {
            (e.target as HTMLInputElement).blur();
          }
          if (e.key === 'ArrowDown') (e.target as HTMLInputElement).blur();
        }}
      />
      <Kbd>/</Kbd>
    </label>
  );
}

export function Traces() {
  const query = useQuery();
  const filters = useMemo(() => readFilters(query), [query]);
  const key = useMemo(() => FILTER_KEYS.map((k) => `${k}=${filters[k] ?? ''}`).join('&'), [filters]);
  const liveState = useLiveState();
  // Remember the list's filters so "back to traces" from a trace returns to the same view.
  useEffect(() => {
    try {
      sessionStorage.setItem('tracellm.listSearch', location.search);
    } catch {
      /* ignore */
    }
  }, [query]);

  const [traces, setTraces] = useState<TraceSummary[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [more, setMore] = useState<{ loading: boolean; error: Error | null }>({ loading: false, error: null });
  const [selected, setSelected] = useState(-1);
  const [fresh, setFresh] = useState<Set<string>>(new Set());
  const filtersRef = useRef<UrlFilters>(filters);
  filtersRef.current = filters;

  const first = useFetch((signal) => api.traces({ ...toApiFilters(filters), limit: PAGE }, signal), key);
  useReconnect(first.reload);
  useEffect(() => {
    if (first.data) {
      setTraces(first.data.traces);
      setCursor(first.data.next_cursor);
      setSelected((s) => Math.min(s, first.data!.traces.length - 1));
      setMore({ loading: false, error: null });
    }
  }, [first.data]);

  // Models for the filter come from the analytics breakdown (all time).
  const models = useFetch((signal) => api.analytics({}, signal), 'models');
  const modelOptions = useMemo(() => {
    const s = new Set<string>();
    for (const m of models.data?.by_model ?? []) if (m.model) s.add(m.model);
    if (filters.model) s.add(filters.model);
    return [...s].sort();
  }, [models.data, filters.model]);

  useLiveMessages((m) => {
    if ((m.type !== 'trace.created' && m.type !== 'trace.updated') || !m.trace) return;
    const t = m.trace;
    setTraces((list) => {
      const present = list.some((x) => x.id === t.id);
      if (!present && !matchesFilters(t, filtersRef.current)) return list;
      if (present && !matchesFilters(t, filtersRef.current)) return list.filter((x) => x.id !== t.id);
      return mergeTrace(list, t);
    });
    if (m.type === 'trace.created' && matchesFilters(t, filtersRef.current)) {
      setFresh((f) => new Set(f).add(t.id));
      setTimeout(() => setFresh((f) => {
        const n = new Set(f);
        n.delete(t.id);
        return n;
      }), 2500);
    }
  });

  const loadMore = useCallback(() => {
    if (!cursor || more.loading) return;
    setMore({ loading: true, error: null });
    api.traces({ ...toApiFilters(filtersRef.current), limit: PAGE, cursor }).then(
      (page) => {
        setTraces((list) => {
          const seen = new Set(list.map((t) => t.id));
          return list.concat(page.traces.filter((t) => !seen.has(t.id)));
        });
        setCursor(page.next_cursor);
        setMore({ loading: false, error: null });
      },
      (error: Error) => setMore({ loading: false, error }),
    );
  }, [cursor, more.loading]);

  // Load the next page when the end of the list scrolls into view.
  const sentinel = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = sentinel.current;
    if (!el || !cursor) return;
    const io = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) loadMore();
    }, { rootMargin: '200px' });
    io.observe(el);
    return () => io.disconnect();
  }, [cursor, loadMore]);

  // Keyboard: j/k or arrows move, Enter opens. The listener reads the latest list through a
  // ref so a key pressed right after a render never sees a stale one.
  const kb = useRef({ traces, selected });
  kb.current = { traces, selected };
  useEffect(() => {
    const f = (e: KeyboardEvent) => {
      if (typingInField(e) || e.metaKey || e.ctrlKey || e.altKey) return;
      const { traces: list, selected: sel } = kb.current;
      if (!list.length) return;
      let next = -2;
      if (e.key === 'j' || e.key === 'ArrowDown') next = Math.min(list.length - 1, sel + 1);
      else if (e.key === 'k' || e.key === 'ArrowUp') next = Math.max(0, sel - 1);
      else if (e.key === 'Home') next = 0;
      else if (e.key === 'End' || e.key === 'G') next = list.length - 1;
      else if (e.key === 'Enter' && sel >= 0 && list[sel]) {
        e.preventDefault();
        navigate(traceHref(list[sel].id));
        return;
      }
      if (next === -2) return;
      e.preventDefault();
      kb.current.selected = next;
      setSelected(next);
    };
    window.addEventListener('keydown', f);
    return () => window.removeEventListener('keydown', f);
  }, []);

  const filtered = hasFilters(filters);
  const rangeValue = filters.since || filters.until ? 'custom' : (filters.range ?? 'all');

  let content;
  if (first.error && traces.length === 0) content = <ErrorState error={first.error} retry={first.reload} what="traces" />;
  else if (first.loading && !first.data && traces.length === 0) content = <Loading label="Loading traces…" />;
  else if (traces.length === 0 && !filtered) content = <Onboarding />;
  else if (traces.length === 0)
    content = (
      <EmptyState icon="search" title="No traces match these filters">
        <p>Loosen a filter or clear them all.</p>
        <button class="btn" type="button" onClick={() => navigate('/traces')}>
          Clear filters
        </button>
      </EmptyState>
    );
  else
    content = (
      <>
        <TraceTable traces={traces} selected={selected} onSelect={setSelected} fresh={fresh} />
        <div ref={sentinel} class="list-foot">
          {cursor ? (
            <button class="btn" type="button" onClick={loadMore} disabled={more.loading} data-testid="load-more">
              {more.loading ? 'Loading…' : 'Load more'}
            </button>
          ) : (
            <span class="muted">
              {traces.length} trace{traces.length === 1 ? '' : 's'} · end of list
            </span>
          )}
          {more.error && <span class="text-error"> {more.error.message}</span>}
        </div>
      </>
    );

  return (
    <div class="page">
      <PageHeader
        title="Traces"
        subtitle={
          <>
            Every run of your app, newest first.{' '}
            {liveState === 'open' ? (
              <span class="live-note">New traces appear live.</span>
            ) : (
              <span class="muted">Live updates paused while the stream reconnects.</span>
            )}
          </>
        }
      />
      <div class="filters panel" role="search">
        <SearchBox value={filters.q} />
        <div class="filter-row">
          <label class="field">
            <span class="field-label">Status</span>
            <select
              class="select"
              name="status"
              value={filters.status ?? ''}
              onChange={(e) => setQuery({ status: (e.target as HTMLSelectElement).value || null })}
            >
              <option value="">Any</option>
              <option value="success">Success</option>
              <option value="error">Error</option>
              <option value="retried">Retried</option>
              <option value="running">Running</option>
            </select>
          </label>
          <label class="field">
            <span class="field-label">Model</span>
            <select
              class="select"
              name="model"
              value={filters.model ?? ''}
              onChange={(e) => setQuery({ model: (e.target as HTMLSelectElement).value || null })}
            >
              <option value="">Any</option>
              {modelOptions.map((m) => (
                <option value={m} key={m}>
                  {m}
                </option>
              ))}
            </select>
          </label>
          <label class="field">
            <span class="field-label">Time</span>
            <select
              class="select"
              name="range"
              value={rangeValue}
              onChange={(e) => {
                const v = (e.target as HTMLSelectElement).value;
                if (v === 'custom') {
                  setQuery({ range: null, since: new Date(Date.now() - 3_600_000).toISOString().slice(0, 19) + 'Z', until: null });
                } else setQuery({ range: v === 'all' ? null : v, since: null, until: null });
              }}
            >
              {RANGES.map((r) => (
                <option value={r.key} key={r.key}>
                  {r.label}
                </option>
              ))}
              <option value="custom">Custom…</option>
            </select>
          </label>
          {rangeValue === 'custom' && (
            <>
              <DateFilter name="since" label="From" value={filters.since} />
              <DateFilter name="until" label="To" value={filters.until} />
            </>
          )}
          <TextFilter name="session_id" label="Session" value={filters.session_id} placeholder="session id" />
          <TextFilter name="user_id" label="User" value={filters.user_id} placeholder="user id" />
          <TextFilter name="tag" label="Tag" value={filters.tag} placeholder="tag" />
          {filtered && (
            <button class="btn btn-ghost clear-filters" type="button" onClick={() => navigate('/traces')}>
              <Icon name="x" size={14} /> Clear
            </button>
          )}
        </div>
      </div>
      {first.error && traces.length > 0 && <ErrorState error={first.error} retry={first.reload} what="traces" />}
      {content}
    </div>
  );
}

function toLocalInput(iso?: string): string {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function DateFilter({ name, label, value }: { name: string; label: string; value?: string }) {
  return (
    <label class="field">
      <span class="field-label">{label}</span>
      <input
        class="input"
        type="datetime-local"
        name={name}
        value={toLocalInput(value)}
        onChange={(e) => {
          const v = (e.target as HTMLInputElement).value;
          setQuery({ [name]: v ? new Date(v).toISOString().replace(/\.\d{3}Z$/, 'Z') : null });
        }}
      />
    </label>
  );
}
