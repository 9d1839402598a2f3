import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api, tokenTotal, type Trace } from '../lib/api';
import { ancestors, buildTree, visibleRows } from '../lib/tree';
import { formatCost, formatDateTime, formatDuration, formatInt, formatTokens } from '../lib/format';
import { navigate, setQuery, useQuery } from '../lib/router';
import { typingInField, useFetch, useSpanPayload } from '../lib/hooks';
import { isLarge, knownSpanCount, planTraceLoad, SpanPayloads, type LoadPlan } from '../lib/payloads';
import { useLiveMessages } from '../lib/live';
import { Waterfall } from '../components/Waterfall';
import { SpanDetail, TraceDetail } from '../components/SpanDetail';
import { CopyButton, ErrorState, Link, Loading, StatusBadge, Kbd } from '../components/ui';
import { Icon } from '../components/icons';

export function listHref(): string {
  try {
    return '/traces' + (sessionStorage.getItem('tracellm.listSearch') ?? '');
  } catch {
    return '/traces';
  }
}

/**
 * A trace as fetched: whole, or (big traces) without span payloads, which then load per span.
 * `whole` is the full fetch of a small trace opened by URL, still on its way.
 */
interface Loaded {
  trace: Trace;
  light: boolean;
  whole?: Promise<Trace>;
}

async function loadTrace(id: string, signal: AbortSignal, known: { id: string; light: boolean } | null): Promise<Loaded> {
  // A reload (live update) fetches the way the first load did.
  const plan: LoadPlan = known?.id === id ? (known.light ? 'light' : 'full') : planTraceLoad(knownSpanCount(id));
  if (plan === 'probe') {
    // Opened by URL: the span count is unknown until the trace is here, so fetch it without
    // payloads. A big one stays so; a small one is shown at once and fetched whole meanwhile.
    const trace = await api.trace(id, signal, { payloads: false });
    if (isLarge(Math.max(trace.span_count ?? 0, trace.spans?.length ?? 0))) return { trace, light: true };
    const whole = api.trace(id, signal);
    whole.catch(() => {}); // an abort (the page moved on) or a failure is handled where it is awaited
    return { trace, light: false, whole };
  }
  if (plan === 'light') return { trace: await api.trace(id, signal, { payloads: false }), light: true };
  return { trace: await api.trace(id, signal), light: false };
}

export function TraceInspector({ id }: { id: string }) {
  const how = useRef<{ id: string; light: boolean } | null>(null);
  const res = useFetch(async (signal) => {
    const loaded = await loadTrace(id, signal, how.current);
    how.current = { id, light: loaded.light };
    return loaded;
  }, id);
  // Loaded spans of a big trace, kept across live reloads of the same trace.
  const payloads = useMemo(() => new SpanPayloads((spanId) => api.span(id, spanId)), [id]);
  // The whole fetch of a small trace shown light meanwhile; should it fail, its spans load one
  // by one like a big trace's.
  const [whole, setWhole] = useState<{ of: Loaded; trace: Trace | null } | null>(null);
  useEffect(() => {
    const d = res.data;
    if (!d?.whole) return;
    let live = true;
    d.whole.then(
      (trace) => live && setWhole({ of: d, trace }),
      (e: Error) => live && e.name !== 'AbortError' && setWhole({ of: d, trace: null }),
    );
    return () => {
      live = false;
    };
  }, [res.data]);
  // A trace still running gets new spans: reload it when the server says it changed.
  const reloadTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  useLiveMessages(
    (m) => {
      if ((m.type === 'trace.updated' || m.type === 'trace.created') && m.trace?.id === id && res.data) {
        if (reloadTimer.current) clearTimeout(reloadTimer.current);
        reloadTimer.current = setTimeout(res.reload, 400);
      }
    },
    [id, res.data],
  );

  if (res.error && !res.data)
    return (
      <div class="page">
        <BackLink />
        <ErrorState error={res.error} retry={res.reload} what={`trace ${id}`} />
      </div>
    );
  if (!res.data)
    return (
      <div class="page">
        <BackLink />
        <Loading label="Loading trace…" />
      </div>
    );
  const d = res.data;
  const done = d.whole && whole?.of === d ? whole : null;
  if (done?.trace) return <Inspector trace={done.trace} payloads={null} />;
  return <Inspector trace={d.trace} payloads={d.light || done ? payloads : null} waiting={!!d.whole && !done} />;
}

function BackLink() {
  const href = listHref();
  return (
    <Link href={href} class="back-link">
      <Icon name="back" size={14} /> Traces
    </Link>
  );
}

function Inspector({ trace, payloads, waiting = false }: { trace: Trace; payloads: SpanPayloads | null; waiting?: boolean }) {
  const spans = trace.spans ?? [];
  const tree = useMemo(() => buildTree(spans, (i) => !!spans[i].error), [trace]);
  const query = useQuery();
  const spanId = query.get('span');
  const selected = spanId != null ? (tree.index.get(spanId) ?? -1) : -1;
  const loaded = useSpanPayload(waiting ? null : payloads, selected >= 0 ? spans[selected] : null);
  // while the whole trace is on its way, the selected span's content is too
  const payload = waiting && loaded ? ({ state: 'loading', span: loaded.span } as const) : loaded;

  const [collapsed, setCollapsed] = useState<Set<number>>(() => {
    // Open the trace with the selected span visible.
    const s = new Set<number>();
    return s;
  });
  const rows = useMemo(() => visibleRows(tree, collapsed), [tree, collapsed]);
  const [scrollTo, setScrollTo] = useState<{ row: number; n: number } | null>(null);
  const bump = useRef(0);

  const rowOf = useCallback(
    (i: number) => {
      for (let r = 0; r < rows.length; r++) if (rows[r] === i) return r;
      return -1;
    },
    [rows],
  );

  const reveal = useCallback(
    (i: number) => {
      const anc = ancestors(tree, i);
      if (anc.some((a) => collapsed.has(a))) {
        setCollapsed((c) => {
          const n = new Set(c);
          for (const a of anc) n.delete(a);
          return n;
        });
      }
    },
    [tree, collapsed],
  );

  const select = useCallback(
    (i: number, scroll = false) => {
      if (i < 0) setQuery({ span: null }, { replace: true });
      else {
        setQuery({ span: spans[i].id }, { replace: true });
        reveal(i);
        if (scroll) setScrollTo({ row: -2, n: ++bump.current });
      }
    },
    [spans, reveal],
  );

  // Scroll the selected row into view once the rows include it (after reveal).
  useEffect(() => {
    if (!scrollTo || selected < 0) return;
    const r = rowOf(selected);
    if (r >= 0 && scrollTo.row !== r) setScrollTo({ row: r, n: scrollTo.n });
  }, [scrollTo, rows, selected]);

  // A shared link with ?span= opens with that span revealed and in view.
  useEffect(() => {
    if (selected >= 0) select(selected, true);
  }, []);

  const toggle = useCallback((i: number) => {
    setCollapsed((c) => {
      const n = new Set(c);
      if (n.has(i)) n.delete(i);
      else n.add(i);
      return n;
    });
  }, []);

  const errorSpans = useMemo(() => {
    const out: number[] = [];
    for (let k = 0; k < tree.n; k++) if (tree.isError[tree.order[k]]) out.push(tree.order[k]);
    return out;
  }, [tree]);

  /** Select the next (or previous) span of `list` (in tree order) after the selected one. */
  const jumpIn = useCallback(
    (list: number[], dir: 1 | -1) => {
      if (!list.length) return;
      const cur = selected >= 0 ? tree.pos[selected] : dir === 1 ? -1 : tree.n;
      let target = -1;
      if (dir === 1) target = list.find((i) => tree.pos[i] > cur) ?? list[0];
      else {
        for (let k = list.length - 1; k >= 0; k--)
          if (tree.pos[list[k]] < cur) {
            target = list[k];
            break;
          }
        if (target < 0) target = list[list.length - 1];
      }
      select(target, true);
    },
    [selected, tree, select],
  );
  const jumpError = useCallback((dir: 1 | -1) => jumpIn(errorSpans, dir), [jumpIn, errorSpans]);

  // Zoom: the waterfall can show a time window instead of the whole trace.
  const [view, setView] = useState<{ from: number; to: number } | null>(null);
  const zoomToSpan = useCallback(
    (i: number) => {
      if (i < 0) return;
      const a = tree.start[i];
      const b = Math.max(tree.end[i], a + 0.001);
      const pad = (b - a) * 0.04;
      setView({ from: a - pad, to: b + pad });
    },
    [tree],
  );

  // Find spans by name, kind, model or id; matches are highlighted and Enter walks through them.
  const [find, setFind] = useState('');
  const findRef = useRef<HTMLInputElement>(null);
  const matches = useMemo(() => {
    const q = find.trim().toLowerCase();
    if (!q) return [] as number[];
    const out: number[] = [];
    for (let k = 0; k < tree.n; k++) {
      const i = tree.order[k];
      const sp = spans[i];
      if (
        sp.name?.toLowerCase().includes(q) ||
        sp.kind?.toLowerCase() === q ||
        sp.model?.toLowerCase().includes(q) ||
        sp.id.toLowerCase() === q
      )
        out.push(i);
    }
    return out;
  }, [find, tree]);
  const matchMask = useMemo(() => {
    if (!matches.length) return null;
    const m = new Uint8Array(tree.n);
    for (const i of matches) m[i] = 1;
    return m;
  }, [matches, tree]);
  const matchPos = selected >= 0 && matchMask?.[selected] ? matches.indexOf(selected) + 1 : 0;

  // Keyboard navigation of the tree. The listener is registered once and reads the latest
  // state through a ref (and the selection from the URL, which changes synchronously), so
  // keys pressed faster than renders never act on a stale tree.
  const kb = useRef({ rows, collapsed, tree, spans, select, toggle, jumpError, rowOf, findRef, zoomToSpan });
  kb.current = { rows, collapsed, tree, spans, select, toggle, jumpError, rowOf, findRef, zoomToSpan };
  useEffect(() => {
    const f = (e: KeyboardEvent) => {
      if (typingInField(e) || e.metaKey || e.ctrlKey || e.altKey) return;
      if ((e.target as HTMLElement)?.closest?.('.modal')) return;
      const { rows, collapsed, tree, select, toggle, jumpError, rowOf, zoomToSpan } = kb.current;
      const id = new URLSearchParams(location.search).get('span');
      const selected = id != null ? (tree.index.get(id) ?? -1) : -1;
      const r = selected >= 0 ? rowOf(selected) : -1;
      const go = (row: number) => {
        if (row < 0 || row >= rows.length) return;
        e.preventDefault();
        select(rows[row], true);
      };
      switch (e.key) {
        case 'ArrowDown':
        case 'j':
          return go(r < 0 ? 0 : Math.min(rows.length - 1, r + 1));
        case 'ArrowUp':
        case 'k':
          return go(r < 0 ? 0 : Math.max(0, r - 1));
        case 'Home':
          return go(0);
        case 'End':
        case 'G':
          return go(rows.length - 1);
        case 'ArrowLeft':
        case 'h':
          if (selected < 0) return;
          e.preventDefault();
          if (tree.childCount[selected] > 0 && !collapsed.has(selected)) toggle(selected);
          else if (tree.parent[selected] >= 0) select(tree.parent[selected], true);
          return;
        case 'ArrowRight':
        case 'l':
          if (selected < 0) return;
          e.preventDefault();
          if (tree.childCount[selected] > 0) {
            if (collapsed.has(selected)) toggle(selected);
            else select(tree.order[tree.pos[selected] + 1], true);
          }
          return;
        case 'Enter':
        case ' ':
          if (selected >= 0 && tree.childCount[selected] > 0) {
            e.preventDefault();
            toggle(selected);
          }
          return;
        case 'z':
          if (selected >= 0) {
            e.preventDefault();
            zoomToSpan(selected);
          }
          return;
        case 'Z':
        case '0':
          e.preventDefault();
          setView(null);
          return;
        case '/':
          e.preventDefault();
          kb.current.findRef.current?.focus();
          kb.current.findRef.current?.select();
          return;
        case 'n':
          e.preventDefault();
          return jumpError(1);
        case 'N':
          e.preventDefault();
          return jumpError(-1);
        case 'Escape':
          e.preventDefault();
          if (selected >= 0) select(-1);
          else navigate(listHref());
          return;
      }
    };
    window.addEventListener('keydown', f);
    return () => window.removeEventListener('keydown', f);
  }, []);

  const expandAll = () => setCollapsed(new Set());
  const collapseAll = () => {
    const s = new Set<number>();
    for (let i = 0; i < tree.n; i++) if (tree.childCount[i] > 0 && tree.depth[i] >= 1) s.add(i);
    setCollapsed(s);
  };

  const total = tokenTotal(trace.tokens);
  const failure = trace.failure_reason;
  return (
    <div class="page page-inspector">
      <div class="inspector-top">
        <BackLink />
        <div class="trace-title">
          <h1 title={trace.name ?? ''}>{trace.name || '(unnamed trace)'}</h1>
          <StatusBadge status={trace.status} />
          {(trace.retries ?? 0) > 0 && <span class="badge badge-retry">{trace.retries} {trace.retries === 1 ? 'retry' : 'retries'}</span>}
        </div>
        <div class="trace-facts" data-testid="trace-facts">
          <span class="fact">
            <span class="fact-k">ID</span>
            <span class="mono">{trace.id}</span>
            <CopyButton text={trace.id} label="" />
          </span>
          <span class="fact">
            <span class="fact-k">Started</span>
            {formatDateTime(trace.timestamp)}
          </span>
          <span class="fact">
            <span class="fact-k">Duration</span>
            <span class="mono">{formatDuration(trace.latency_ms)}</span>
          </span>
          <span class="fact">
            <span class="fact-k">Spans</span>
            <span class="mono">{formatInt(spans.length)}</span>
            {trace.error_count > 0 && <span class="text-error"> · {trace.error_count} failed</span>}
          </span>
          <span class="fact">
            <span class="fact-k">Tokens</span>
            <span class="mono" title={`${formatInt(trace.tokens?.prompt)} in · ${formatInt(trace.tokens?.completion)} out`}>
              {formatTokens(total, !!trace.tokens?.estimated)}
            </span>
          </span>
          <span class="fact">
            <span class="fact-k">Cost</span>
            <span class="mono">{formatCost(trace.cost_usd)}</span>
          </span>
          {trace.model && (
            <span class="fact">
              <span class="fact-k">Model</span>
              <span class="chip mono">{trace.model}</span>
            </span>
          )}
          {trace.session_id && (
            <span class="fact">
              <span class="fact-k">Session</span>
              <Link href={'/traces?session_id=' + encodeURIComponent(trace.session_id)} class="mono">
                {trace.session_id}
              </Link>
            </span>
          )}
          {trace.user_id && (
            <span class="fact">
              <span class="fact-k">User</span>
              <Link href={'/traces?user_id=' + encodeURIComponent(trace.user_id)} class="mono">
                {trace.user_id}
              </Link>
            </span>
          )}
          {(trace.tags ?? []).map((t) => (
            <Link key={t} href={'/traces?tag=' + encodeURIComponent(t)} class="chip">
              #{t}
            </Link>
          ))}
        </div>
        {failure && (
          <div class="failure-banner" role="alert" data-testid="failure-reason">
            <Icon name="alert" size={16} />
            <span>
              <strong>Failed:</strong> {failure}
            </span>
            {errorSpans.length > 0 && (
              <button type="button" class="btn btn-xs" onClick={() => jumpError(1)}>
                Show failing span <Kbd>n</Kbd>
              </button>
            )}
          </div>
        )}
      </div>
      <div class="inspector-body">
        <section class="panel wf-panel" aria-label="Waterfall">
          <div class="wf-toolbar">
            <span class="muted small">
              {formatInt(spans.length)} spans · depth {tree.maxDepth + 1}
              {rows.length !== spans.length && ` · ${formatInt(rows.length)} shown`}
              {view && ` · ${formatDuration(view.to - view.from)} window`}
              {payloads && (
                <span data-testid="payloads-per-span" title="A big trace is fetched without span inputs and outputs; each span's content loads when it is opened">
                  {' '}
                  · content loads per span
                </span>
              )}
            </span>
            <span class="grow" />
            <label class={'find' + (find && !matches.length ? ' find-none' : '')}>
              <Icon name="search" size={13} />
              <span class="sr-only">Find spans</span>
              <input
                ref={findRef}
                class="find-input"
                type="search"
                name="find"
                placeholder="Find span"
                value={find}
                onInput={(e) => setFind((e.target as HTMLInputElement).value)}
                onKeyDown={(e) => {
                  if (e.key === 'Enter') {
                    e.preventDefault();
                    jumpIn(matches, e.shiftKey ? -1 : 1);
                  } else if (e.key === 'Escape') {
                    setFind('');
                    (e.target as HTMLInputElement).blur();
                  }
                }}
              />
              {find && (
                <span class="find-count" data-testid="find-count">
                  {matches.length ? `${matchPos || '–'}/${matches.length}` : 'none'}
                </span>
              )}
            </label>
            {view ? (
              <button type="button" class="btn btn-xs btn-primary" onClick={() => setView(null)} title="Show the whole trace (0)" data-testid="zoom-reset">
                <Icon name="x" size={13} /> Reset zoom
              </button>
            ) : (
              selected >= 0 && (
                <button type="button" class="btn btn-xs" onClick={() => zoomToSpan(selected)} title="Zoom the time axis to the selected span (z)">
                  <Icon name="search" size={13} /> Zoom to span
                </button>
              )
            )}
            {errorSpans.length > 0 && (
              <button type="button" class="btn btn-xs btn-error-soft" onClick={() => jumpError(1)} title="Next failed span (n)">
                <Icon name="next" size={13} /> Next error ({errorSpans.length})
              </button>
            )}
            <button type="button" class="btn btn-xs btn-square" onClick={expandAll} title="Expand all spans" aria-label="Expand all spans">
              <Icon name="expand" size={13} />
            </button>
            <button type="button" class="btn btn-xs btn-square" onClick={collapseAll} title="Collapse all spans" aria-label="Collapse all spans">
              <Icon name="collapse" size={13} />
            </button>
          </div>
          {spans.length === 0 ? (
            <p class="muted pad">This trace has no spans.</p>
          ) : (
            <Waterfall
              spans={spans}
              tree={tree}
              rows={rows}
              collapsed={collapsed}
              selected={selected}
              onSelect={(i) => select(i)}
              onToggle={toggle}
              scrollTo={scrollTo}
              highlight={matchMask}
              view={view}
              onZoom={setView}
            />
          )}
        </section>
        <aside class="panel detail" aria-label="Details">
          {selected >= 0 ? (
            <>
              <button type="button" class="btn btn-ghost btn-xs detail-close" onClick={() => select(-1)} title="Back to the trace summary (Esc)">
                <Icon name="x" size={13} /> Trace summary
              </button>
              <SpanDetail key={selected} payload={payload!} tree={tree} index={selected} traceStart={tree.minStart} />
            </>
          ) : (
            <TraceDetail trace={trace} tree={tree} onSelect={(i) => select(i, true)} light={!!payloads} />
          )}
        </aside>
      </div>
    </div>
  );
}
