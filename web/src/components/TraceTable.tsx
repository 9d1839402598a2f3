import { useEffect, useRef } from 'preact/hooks';
import { tokenTotal, type TraceSummary } from '../lib/api';
import { formatCost, formatDateTime, formatDuration, formatRelative, formatTokens, formatInt } from '../lib/format';
import { navigate, onLinkClick } from '../lib/router';
import { useTick } from '../lib/hooks';
import { rememberSpanCount } from '../lib/payloads';
import { StatusBadge } from './ui';

export function traceHref(id: string) {
  return '/traces/' + encodeURIComponent(id);
}

export function TraceTable({
  traces,
  selected = -1,
  onSelect,
  fresh,
  compact,
}: {
  traces: TraceSummary[];
  selected?: number;
  onSelect?: (i: number) => void;
  fresh?: Set<string>;
  compact?: boolean;
}) {
  useTick(15_000);
  const body = useRef<HTMLTableSectionElement>(null);
  useEffect(() => {
    if (selected < 0 || !body.current) return;
    const row = body.current.children[selected] as HTMLElement | undefined;
    row?.scrollIntoView({ block: 'nearest' });
  }, [selected]);
  const now = Date.now();
  return (
    <div class="table-wrap">
      <table class="table traces-table" data-testid="traces-table">
        <thead>
          <tr>
            <th class="col-status">Status</th>
            <th>Name</th>
            <th>Model</th>
            <th class="num">Latency</th>
            <th class="num">Tokens</th>
            <th class="num">Cost</th>
            {!compact && <th class="num">Spans</th>}
            <th class="num">Time</th>
          </tr>
        </thead>
        <tbody ref={body}>
          {traces.map((t, i) => {
            const href = traceHref(t.id);
            // opening the trace from here then needs one request, the right one for its size
            rememberSpanCount(t.id, t.span_count);
            const total = tokenTotal(t.tokens);
            return (
              <tr
                key={t.id}
                data-trace-id={t.id}
                class={(i === selected ? 'selected ' : '') + (fresh?.has(t.id) ? 'fresh ' : '') + 'clickable'}
                aria-selected={i === selected}
                onClick={(e) => {
                  if ((e.target as HTMLElement).closest('a')) return;
                  onSelect?.(i);
                  navigate(href);
                }}
              >
                <td class="col-status">
                  <StatusBadge status={t.status} />
                </td>
                <td class="col-name">
                  <a href={href} onClick={(e) => onLinkClick(e, href)} class="trace-name" tabIndex={-1}>
                    {t.name || <span class="muted">(unnamed)</span>}
                  </a>
                  {(t.prompt_preview || t.response_preview) && (
                    <div class="preview" title={t.prompt_preview ?? ''}>
                      {t.prompt_preview}
                      {t.response_preview && <span class="preview-resp"> → {t.response_preview}</span>}
                    </div>
                  )}
                </td>
                <td class="col-model">{t.model ? <span class="chip mono">{t.model}</span> : <span class="muted">—</span>}</td>
                <td class="num mono">{formatDuration(t.latency_ms)}</td>
                <td class="num mono" title={total != null ? formatInt(total) + ' tokens' : undefined}>
                  {formatTokens(total, !!t.tokens?.estimated)}
                </td>
                <td class="num mono">{formatCost(t.cost_usd)}</td>
                {!compact && (
                  <td class="num mono">
                    {t.span_count}
                    {t.error_count > 0 && <span class="err-count" title={`${t.error_count} failed spans`}> · {t.error_count}✕</span>}
                  </td>
                )}
                <td class="num muted" title={formatDateTime(t.timestamp)}>
                  {formatRelative(t.timestamp, now)}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
