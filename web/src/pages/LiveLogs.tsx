import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { live, useLiveState, type LogEntry } from '../lib/live';
import { tokenTotal } from '../lib/api';
import { formatCost, formatDuration, formatTokens } from '../lib/format';
import { useVirtualizer } from '../lib/hooks';
import { onLinkClick } from '../lib/router';
import { Icon } from '../components/icons';
import { EmptyState, PageHeader, StatusBadge } from '../components/ui';
import { JsonView } from '../components/JsonView';
import { traceHref } from '../components/TraceTable';
import { rememberSpanCount } from '../lib/payloads';

const ROW = 30;

function clock(ms: number): string {
  const d = new Date(ms);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function matches(e: LogEntry, type: string, text: string): boolean {
  if (type && !e.msg.type.startsWith(type)) return false;
  if (!text) return true;
  return e.raw.toLowerCase().includes(text.toLowerCase());
}

export function LiveLogs() {
  const state = useLiveState();
  const [version, setVersion] = useState(0);
  const [paused, setPaused] = useState(false);
  const [frozen, setFrozen] = useState<LogEntry[] | null>(null);
  const [type, setType] = useState('');
  const [text, setText] = useState('');
  const [selectedSeq, setSelectedSeq] = useState<number | null>(null);
  const [follow, setFollow] = useState(true);
  const scrollRef = useRef<HTMLDivElement>(null);

  useEffect(() => {
    let raf = 0;
    const off = live.onMessage(() => {
      if (!raf)
        raf = requestAnimationFrame(() => {
          raf = 0;
          setVersion((v) => v + 1);
        });
    });
    const off2 = live.onState(() => setVersion((v) => v + 1));
    setVersion((v) => v + 1); // pick up what arrived between the first render and now
    return () => {
      off();
      off2();
      if (raf) cancelAnimationFrame(raf);
    };
  }, []);

  const source = paused && frozen ? frozen : live.log;
  const entries = useMemo(() => source.filter((e) => matches(e, type, text)), [source, type, text, version]);

  const v = useVirtualizer({
    count: entries.length,
    getScrollElement: () => scrollRef.current,
    estimateSize: () => ROW,
    overscan: 10,
  });

  useEffect(() => {
    if (follow && entries.length) v.scrollToIndex(entries.length - 1, { align: 'end' });
  }, [entries.length, follow]);

  const onScroll = () => {
    const el = scrollRef.current;
    if (!el) return;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < ROW * 1.5;
    if (atBottom !== follow) setFollow(atBottom);
  };

  const selected = selectedSeq != null ? source.find((e) => e.seq === selectedSeq) : undefined;
  const counts = useMemo(() => {
    let created = 0;
    let failed = 0;
    for (const e of live.log) {
      if (e.msg.type === 'trace.created') created++;
      if (e.msg.trace && (e.msg.trace.status === 'error' || e.msg.trace.status === 'retried')) failed++;
    }
    return { created, failed };
  }, [version]);

  return (
    <div class="page page-fill">
      <PageHeader
        title="Live logs"
        subtitle={
          <>
            The server's event stream as it happens: every stored trace, the moment it is committed.{' '}
            <span class="muted">
              {counts.created} {counts.created === 1 ? 'trace' : 'traces'} · {counts.failed} failed since this page opened
            </span>
          </>
        }
      >
        <span class={`live-ind live-${state}`} data-live-state={state}>
          <span class="live-dot" />
          {state === 'open' ? 'Streaming' : state === 'connecting' ? 'Connecting…' : 'Disconnected: retrying'}
        </span>
      </PageHeader>
      <div class="logs-toolbar panel">
        <button
          type="button"
          class={'btn btn-xs' + (paused ? ' btn-primary' : '')}
          onClick={() => {
            if (paused) {
              setPaused(false);
              setFrozen(null);
            } else {
              setPaused(true);
              setFrozen(live.log.slice());
            }
          }}
          data-testid="pause"
        >
          <Icon name={paused ? 'play' : 'pause'} size={13} /> {paused ? 'Resume' : 'Pause'}
        </button>
        <button
          type="button"
          class="btn btn-xs"
          onClick={() => {
            live.clearLog();
            setFrozen(paused ? [] : null);
            setSelectedSeq(null);
          }}
        >
          <Icon name="trash" size={13} /> Clear
        </button>
        <select class="select select-xs" value={type} onChange={(e) => setType((e.target as HTMLSelectElement).value)} aria-label="Event type">
          <option value="">All events</option>
          <option value="trace.created">trace.created</option>
          <option value="trace.updated">trace.updated</option>
          <option value="system">system</option>
        </select>
        <input
          class="input input-xs"
          type="search"
          placeholder="Filter by text…"
          value={text}
          onInput={(e) => setText((e.target as HTMLInputElement).value)}
          aria-label="Filter by text"
        />
        <span class="grow" />
        {!follow && entries.length > 0 && (
          <button
            type="button"
            class="btn btn-xs"
            onClick={() => {
              setFollow(true);
              v.scrollToIndex(entries.length - 1, { align: 'end' });
            }}
          >
            ↓ Jump to latest
          </button>
        )}
        <span class="muted small">
          {entries.length} event{entries.length === 1 ? '' : 's'}
          {paused && ' · paused'}
        </span>
      </div>
      <div class="logs-body">
        <div class="logs panel" ref={scrollRef} onScroll={onScroll} data-testid="live-log">
          {entries.length === 0 ? (
            <EmptyState icon="live" title={state === 'open' ? 'Waiting for events' : 'Not connected yet'}>
              <p>Send a trace and it shows up here within a moment. Events are kept while this tab is open.</p>
            </EmptyState>
          ) : (
            <div style={{ height: v.getTotalSize() + 'px', position: 'relative' }}>
              {counts.created === 0 && !text && !type && (
                <div class="logs-hint" style={{ top: v.getTotalSize() + 'px' }}>
                  Waiting for traces: send one and it appears here the moment it is stored.
                </div>
              )}
              {v.getVirtualItems().map((it) => {
                const e = entries[it.index];
                const t = e.msg.trace;
                return (
                  <div
                    key={e.seq}
                    class={'log-line' + (selectedSeq === e.seq ? ' selected' : '') + (t?.status === 'error' ? ' log-error' : '')}
                    style={{ transform: `translateY(${it.start}px)` }}
                    onClick={() => setSelectedSeq(e.seq)}
                    data-type={e.msg.type}
                  >
                    <span class="log-time mono">{clock(e.at)}</span>
                    <span class={'log-type mono type-' + e.msg.type.replace(/\./g, '-')}>{e.msg.type}</span>
                    {t ? (
                      <>
                        <StatusBadge status={t.status} />
                        <a
                          class="log-name"
                          href={traceHref(t.id)}
                          onClick={(ev) => {
                            rememberSpanCount(t.id, t.span_count);
                            onLinkClick(ev, traceHref(t.id));
                          }}
                        >
                          {t.name || t.id}
                        </a>
                        <span class="mono muted log-id">{t.id}</span>
                        {t.model && <span class="chip mono">{t.model}</span>}
                        <span class="log-nums mono">
                          {formatDuration(t.latency_ms)} · {formatTokens(tokenTotal(t.tokens))} tok · {formatCost(t.cost_usd)} · {t.span_count} spans
                        </span>
                      </>
                    ) : (
                      <span class="mono muted">{e.msg.version ? `server v${e.msg.version}` : e.raw.slice(0, 160)}</span>
                    )}
                  </div>
                );
              })}
            </div>
          )}
        </div>
        {selected && (
          <aside class="panel logs-detail">
            <div class="modal-head">
              <h3 class="mono">{selected.msg.type}</h3>
              <button class="btn btn-ghost btn-xs" type="button" onClick={() => setSelectedSeq(null)} aria-label="Close">
                <Icon name="x" size={13} />
              </button>
            </div>
            <p class="muted small">Received {clock(selected.at)}</p>
            <JsonView value={selected.msg} openDepth={3} />
          </aside>
        )}
      </div>
    </div>
  );
}
