import { useEffect, useRef, useState } from 'preact/hooks';
import { api, type Failure } from '../lib/api';
import { formatDateTime, formatRelative } from '../lib/format';
import { navigate, onLinkClick } from '../lib/router';
import { typingInField, useFetch, useTick } from '../lib/hooks';
import { useLiveMessages, useReconnect } from '../lib/live';
import { EmptyState, ErrorState, Link, Loading, PageHeader, StatusBadge } from '../components/ui';
import { traceHref } from '../components/TraceTable';

const PAGE = 50;

export function Failures() {
  const [nonce, setNonce] = useState(0);
  const first = useFetch((signal) => api.failures({ limit: PAGE }, signal), 'failures:' + nonce);
  useReconnect(first.reload);
  const [items, setItems] = useState<Failure[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loadingMore, setLoadingMore] = useState(false);
  const [moreError, setMoreError] = useState<Error | null>(null);
  const [selected, setSelected] = useState(-1);
  const [fresh, setFresh] = useState<Set<string>>(new Set());
  const known = useRef<Set<string>>(new Set());
  useTick(15_000);

  useEffect(() => {
    if (!first.data) return;
    const incoming = first.data.failures;
    const newIds = known.current.size ? incoming.filter((f) => !known.current.has(f.id)).map((f) => f.id) : [];
    setItems((prev) => {
      // keep what was already loaded below the refreshed first page
      const ids = new Set(incoming.map((f) => f.id));
      const last = incoming.length ? Date.parse(incoming[incoming.length - 1].timestamp) : Infinity;
      return incoming.concat(prev.filter((f) => !ids.has(f.id) && Date.parse(f.timestamp) <= last));
    });
    if (!known.current.size || nonce === 0) setCursor(first.data.next_cursor);
    for (const f of incoming) known.current.add(f.id);
    if (newIds.length) {
      setFresh(new Set(newIds));
      setTimeout(() => setFresh(new Set()), 2500);
    }
  }, [first.data]);

  // A failed or retried trace arriving live: refresh the first page (it carries the reason).
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  useLiveMessages((m) => {
    if (!m.trace || (m.trace.status !== 'error' && m.trace.status !== 'retried')) return;
    if (timer.current) clearTimeout(timer.current);
    timer.current = setTimeout(() => setNonce((n) => n + 1), 300);
  });

  const loadMore = () => {
    if (!cursor || loadingMore) return;
    setLoadingMore(true);
    api.failures({ limit: PAGE, cursor }).then(
      (p) => {
        setItems((list) => {
          const seen = new Set(list.map((f) => f.id));
          return list.concat(p.failures.filter((f) => !seen.has(f.id)));
        });
        setCursor(p.next_cursor);
        setLoadingMore(false);
        setMoreError(null);
      },
      (e: Error) => {
        setLoadingMore(false);
        setMoreError(e);
      },
    );
  };

  useEffect(() => {
    if (selected >= 0) document.querySelector('.failure.selected')?.scrollIntoView({ block: 'nearest' });
  }, [selected]);
  const kb = useRef({ items, selected });
  kb.current = { items, selected };
  useEffect(() => {
    const f = (e: KeyboardEvent) => {
      if (typingInField(e) || e.metaKey || e.ctrlKey || e.altKey) return;
      const { items: list, selected: sel } = kb.current;
      if (!list.length) return;
      let next = -2;
      if (e.key === 'j' || e.key === 'ArrowDown') next = Math.min(list.length - 1, sel + 1);
      else if (e.key === 'k' || e.key === 'ArrowUp') next = Math.max(0, sel - 1);
      else if (e.key === 'Enter' && list[sel]) {
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

  const now = Date.now();
  let content;
  if (first.error && !items.length) content = <ErrorState error={first.error} retry={first.reload} what="failures" />;
  else if (!first.data && !items.length) content = <Loading />;
  else if (!items.length)
    content = (
      <EmptyState icon="check" title="No failures">
        <p>
          No trace has failed or needed a retry. Failed runs show up here with their reason, newest first.{' '}
          <Link href="/traces">See all traces</Link>.
        </p>
      </EmptyState>
    );
  else
    content = (
      <>
        <div class="failure-list" data-testid="failures">
          {items.map((f, i) => {
            const href = traceHref(f.id);
            return (
              <a
                key={f.id}
                href={href}
                onClick={(e) => onLinkClick(e, href)}
                class={'failure panel' + (i === selected ? ' selected' : '') + (fresh.has(f.id) ? ' fresh' : '')}
                data-trace-id={f.id}
              >
                <div class="failure-main">
                  <div class="failure-title">
                    <StatusBadge status={f.status} />
                    <strong>{f.name || '(unnamed)'}</strong>
                    {f.model && <span class="chip mono">{f.model}</span>}
                    {(f.retries ?? 0) > 0 && (
                      <span class="badge badge-retry">
                        {f.retries} {f.retries === 1 ? 'retry' : 'retries'}
                      </span>
                    )}
                  </div>
                  <div class={'failure-reason' + (f.status === 'retried' ? ' reason-retried' : '')}>
                    {f.failure_reason || <span class="muted">No reason recorded</span>}
                  </div>
                </div>
                <div class="failure-side">
                  <span title={formatDateTime(f.timestamp)}>{formatRelative(f.timestamp, now)}</span>
                  <span class="mono muted small">{f.id}</span>
                </div>
              </a>
            );
          })}
        </div>
        <div class="list-foot">
          {cursor ? (
            <button class="btn" type="button" onClick={loadMore} disabled={loadingMore}>
              {loadingMore ? 'Loading…' : 'Load more'}
            </button>
          ) : (
            <span class="muted">{items.length} shown · end of list</span>
          )}
          {moreError && <span class="text-error"> {moreError.message}</span>}
        </div>
      </>
    );

  return (
    <div class="page">
      <PageHeader title="Failures" subtitle="Failed traces and traces that succeeded only after retries, with the reason." />
      {content}
    </div>
  );
}
