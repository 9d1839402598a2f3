import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import type { Span, Trace } from '../lib/api';
import type { SpanPayload } from '../lib/hooks';
import { payloadErrorText } from '../lib/payloads';
import type { SpanTree } from '../lib/tree';
import { extractMessages, type ChatMessage } from '../lib/messages';
import { formatCost, formatDateTime, formatDuration, formatInt, formatTokens } from '../lib/format';
import { Conversation } from './Conversation';
import { JsonView, TextBlock, ValueView } from './JsonView';
import { CopyButton, KindBadge, Loading, StatusBadge } from './ui';
import { Icon } from './icons';

function Tabs<T extends string>({ tabs, value, onChange }: { tabs: [T, string][]; value: T; onChange: (t: T) => void }) {
  return (
    <div class="tabs" role="tablist">
      {tabs.map(([k, label]) => (
        <button
          type="button"
          role="tab"
          key={k}
          aria-selected={value === k}
          class={'tab' + (value === k ? ' tab-active' : '')}
          onClick={() => onChange(k)}
        >
          {label}
        </button>
      ))}
    </div>
  );
}

function Meta({ items }: { items: [string, ComponentChildren][] }) {
  return (
    <dl class="meta">
      {items.map(([k, v]) => (
        <div class="meta-item" key={k}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

function Section({ title, children, extra }: { title: string; children: ComponentChildren; extra?: ComponentChildren }) {
  return (
    <section class="d-section">
      <h4>
        <span>{title}</span>
        {extra}
      </h4>
      {children}
    </section>
  );
}

function tokensText(t: Span['tokens']) {
  if (!t) return '—';
  const est = !!t.estimated;
  const parts = [];
  if (t.prompt != null) parts.push(`${formatTokens(t.prompt, est)} in`);
  if (t.completion != null) parts.push(`${formatTokens(t.completion, est)} out`);
  const total = t.total ?? (t.prompt != null || t.completion != null ? (t.prompt ?? 0) + (t.completion ?? 0) : null);
  return (
    <span title={est ? 'Estimated from the text (the provider did not report counts)' : undefined}>
      {formatInt(total)}
      {parts.length > 0 && <span class="muted"> ({parts.join(' · ')})</span>}
      {est && <span class="badge badge-est">estimated</span>}
    </span>
  );
}

export function ErrorBox({ error, status }: { error: Span['error']; status?: string }) {
  if (!error && status !== 'error') return null;
  return (
    <div class="error-box" role="alert" data-testid="span-error">
      <div class="error-title">
        <strong>{error?.type || 'Error'}</strong>
      </div>
      {error?.message && <div class="error-message">{error.message}</div>}
      {!error && <div class="error-message">This span ended with status error and no error details.</div>}
      {error?.stack && (
        <details class="error-stack">
          <summary>Stack trace</summary>
          <pre>{error.stack}</pre>
        </details>
      )}
    </div>
  );
}

function Payloads({ span }: { span: Span }) {
  const inMsgs = extractMessages(span.input);
  const outMsgs = extractMessages(span.output);
  if (span.kind === 'tool' || span.tool) {
    const args = span.tool?.arguments ?? span.input;
    const result = span.tool?.result ?? span.output;
    return (
      <>
        <Section title={span.tool?.name ? `Arguments · ${span.tool.name}` : 'Arguments'}>
          <div data-testid="tool-arguments">
            <ValueView value={args} />
          </div>
        </Section>
        <Section title="Result">
          <div data-testid="tool-result">
            <ValueView value={result} />
          </div>
        </Section>
      </>
    );
  }
  if (inMsgs || outMsgs) {
    return (
      <>
        <Conversation input={inMsgs} output={outMsgs} />
        {!inMsgs && span.input != null && (
          <Section title="Input">
            <ValueView value={span.input} />
          </Section>
        )}
        {!outMsgs && span.output != null && (
          <Section title="Output">
            <ValueView value={span.output} />
          </Section>
        )}
      </>
    );
  }
  return (
    <>
      {span.input != null && (
        <Section title="Input">
          <ValueView value={span.input} />
        </Section>
      )}
      {span.output != null && (
        <Section title="Output">
          <ValueView value={span.output} />
        </Section>
      )}
      {span.input == null && span.output == null && <p class="muted">This span recorded no input or output.</p>}
    </>
  );
}

/** In place of a tab whose content (a span's payloads) is still loading or failed to load. */
function PayloadPending({ payload }: { payload: SpanPayload }) {
  if (payload.state === 'loading')
    return (
      <div data-testid="payload-loading">
        <Loading label="Loading span content…" />
      </div>
    );
  if (payload.state === 'error')
    return (
      <div class="note note-error" role="alert" data-testid="payload-error">
        <p>{payloadErrorText(payload.error)}</p>
        <button type="button" class="btn btn-xs" onClick={payload.retry}>
          <Icon name="refresh" size={13} /> Try again
        </button>
      </div>
    );
  return null;
}

type SpanTab = 'details' | 'attributes' | 'events' | 'json';

export function SpanDetail({ payload, tree, index, traceStart }: { payload: SpanPayload; tree: SpanTree; index: number; traceStart: number }) {
  const [tab, setTab] = useState<SpanTab>('details');
  const span = payload.span;
  const ready = payload.state === 'ready';
  const retry = tree.retry[index];
  const offset = tree.start[index] - traceStart;
  const nAttr = span.attributes ? Object.keys(span.attributes).length : 0;
  const nEv = ready ? (span.events?.length ?? 0) : 0;
  const items: [string, ComponentChildren][] = [
    ['Duration', tree.open[index] ? 'running' : formatDuration(span.latency_ms ?? tree.end[index] - tree.start[index])],
    ['Starts at', <span title={formatDateTime(span.start_time)}>+{formatDuration(offset)}</span>],
  ];
  if (span.model) items.push(['Model', <span class="chip mono">{span.model}</span>]);
  if (span.provider) items.push(['Provider', span.provider]);
  if (span.tokens) items.push(['Tokens', tokensText(span.tokens)]);
  if (span.cost_usd !== undefined && (span.kind === 'llm' || span.kind === 'embedding' || span.cost_usd != null))
    items.push(['Cost', <span title={span.cost_usd == null ? 'Unknown price for this model' : undefined}>{formatCost(span.cost_usd)}</span>]);
  if (span.time_to_first_token_ms != null) items.push(['Time to first token', formatDuration(span.time_to_first_token_ms)]);
  if (tree.childCount[index] > 0) items.push(['Children', `${tree.childCount[index]} (${tree.subtreeSize[index] - 1} below)`]);
  return (
    <div class="detail-inner" data-testid="span-detail" data-span-id={span.id} data-payload={payload.state}>
      <div class="detail-head">
        <div class="detail-title">
          <KindBadge kind={span.kind} />
          <h3 title={span.name}>{span.name}</h3>
        </div>
        <div class="detail-sub">
          <StatusBadge status={span.status} />
          {retry > 0 && <span class="badge badge-retry">retry {retry}</span>}
          <span class="mono muted id-text">{span.id}</span>
          <CopyButton text={span.id} label="ID" />
        </div>
      </div>
      <Meta items={items} />
      {retry > 0 && (
        <div class="note note-retry">
          Attempt {retry + 1}: an earlier <code>{span.name}</code> call under the same parent failed.
        </div>
      )}
      <ErrorBox error={span.error} status={span.status} />
      <Tabs<SpanTab>
        tabs={[
          ['details', span.kind === 'llm' ? 'Conversation' : 'Input / output'],
          ['attributes', `Attributes${nAttr ? ` (${nAttr})` : ''}`],
          ['events', `Events${nEv ? ` (${nEv})` : ''}`],
          ['json', 'JSON'],
        ]}
        value={tab}
        onChange={setTab}
      />
      <div class="tab-body">
        {!ready && tab !== 'attributes' && <PayloadPending payload={payload} />}
        {ready && tab === 'details' && <Payloads span={span} />}
        {tab === 'attributes' &&
          (nAttr ? <JsonView value={span.attributes} openDepth={3} /> : <p class="muted">No attributes.</p>)}
        {ready &&
          tab === 'events' &&
          (nEv ? (
            <ul class="events">
              {span.events!.map((ev, k) => (
                <li key={k}>
                  <div class="event-head">
                    <strong>{ev.name}</strong>
                    {ev.time && <span class="muted mono">+{formatDuration(Date.parse(ev.time) - traceStart)}</span>}
                  </div>
                  {ev.attributes && Object.keys(ev.attributes).length > 0 && <JsonView value={ev.attributes} copy={false} />}
                </li>
              ))}
            </ul>
          ) : (
            <p class="muted">No events.</p>
          ))}
        {ready && tab === 'json' && <JsonView value={span} openDepth={2} />}
      </div>
    </div>
  );
}

type TraceTab = 'summary' | 'metadata' | 'json';

export function TraceDetail({
  trace,
  tree,
  onSelect,
  light = false,
}: {
  trace: Trace;
  tree: SpanTree;
  onSelect: (i: number) => void;
  light?: boolean;
}) {
  const [tab, setTab] = useState<TraceTab>('summary');
  const [showAllCalls, setShowAllCalls] = useState(false);
  const calls: number[] = [];
  for (let k = 0; k < tree.n; k++) {
    const i = tree.order[k];
    if (trace.spans[i].kind === 'llm') calls.push(i);
  }
  const shown = showAllCalls ? calls : calls.slice(0, 50);
  const convo: ChatMessage[] = [];
  if (trace.prompt) convo.push({ role: 'user', text: trace.prompt, parts: [], toolCalls: [] });
  const reply: ChatMessage[] = trace.response ? [{ role: 'assistant', text: trace.response, parts: [], toolCalls: [] }] : [];
  const nMeta = trace.metadata ? Object.keys(trace.metadata).length : 0;
  return (
    <div class="detail-inner" data-testid="trace-detail">
      <div class="detail-head">
        <div class="detail-title">
          <span class="kind kind-trace">Trace</span>
          <h3>{trace.name || '(unnamed)'}</h3>
        </div>
        <p class="muted small">Select a span in the waterfall to see its messages, tool calls and timing.</p>
      </div>
      <Tabs<TraceTab>
        tabs={[
          ['summary', 'Summary'],
          ['metadata', `Metadata${nMeta ? ` (${nMeta})` : ''}`],
          ['json', 'JSON'],
        ]}
        value={tab}
        onChange={setTab}
      />
      <div class="tab-body">
        {tab === 'summary' && (
          <>
            {(convo.length > 0 || reply.length > 0) && (
              <Section title="Prompt and response">
                <Conversation input={convo} output={reply} />
              </Section>
            )}
            <Section title={`LLM calls (${calls.length})`}>
              {calls.length === 0 ? (
                <p class="muted">This trace has no LLM spans.</p>
              ) : (
                <table class="table table-small calls" data-testid="llm-calls">
                  <thead>
                    <tr>
                      <th>Call</th>
                      <th class="num">Tokens</th>
                      <th class="num">Cost</th>
                      <th class="num">Latency</th>
                    </tr>
                  </thead>
                  <tbody>
                    {shown.map((i) => {
                      const s = trace.spans[i];
                      const t = s.tokens;
                      return (
                        <tr key={i} class={'clickable' + (tree.isError[i] ? ' row-error' : '')} onClick={() => onSelect(i)}>
                          <td>
                            <div class="call-name">{s.name}</div>
                            {s.model && <div class="muted mono small">{s.model}</div>}
                          </td>
                          <td class="num mono">
                            {t ? (
                              <span title={`${formatInt(t.prompt)} in · ${formatInt(t.completion)} out`}>
                                {formatTokens(t.total ?? (t.prompt ?? 0) + (t.completion ?? 0), !!t.estimated)}
                              </span>
                            ) : (
                              '—'
                            )}
                          </td>
                          <td class="num mono">{formatCost(s.cost_usd)}</td>
                          <td class="num mono">{formatDuration(s.latency_ms)}</td>
                        </tr>
                      );
                    })}
                  </tbody>
                  <tfoot>
                    <tr>
                      <td>Total</td>
                      <td class="num mono">{formatTokens(trace.tokens?.total ?? null, !!trace.tokens?.estimated)}</td>
                      <td class="num mono">{formatCost(trace.cost_usd)}</td>
                      <td class="num mono">{formatDuration(trace.latency_ms)}</td>
                    </tr>
                  </tfoot>
                </table>
              )}
              {calls.length > shown.length && (
                <button type="button" class="link-btn" onClick={() => setShowAllCalls(true)}>
                  Show all {calls.length} calls
                </button>
              )}
            </Section>
            {trace.session_id || trace.user_id || (trace.tags?.length ?? 0) > 0 ? (
              <Section title="Context">
                <Meta
                  items={[
                    ['Session', trace.session_id ?? '—'],
                    ['User', trace.user_id ?? '—'],
                    ['Tags', (trace.tags ?? []).length ? (trace.tags ?? []).map((t) => <span class="chip" key={t}>{t}</span>) : '—'],
                  ]}
                />
              </Section>
            ) : null}
          </>
        )}
        {tab === 'metadata' && (nMeta ? <JsonView value={trace.metadata} openDepth={3} /> : <p class="muted">No metadata.</p>)}
        {tab === 'json' && (
          <>
            {light && (
              <p class="muted small">
                This trace is big, so its spans are shown here without their inputs, outputs, tool data and events;
                open a span to see them.
              </p>
            )}
            <JsonView value={trace} openDepth={1} />
          </>
        )}
      </div>
    </div>
  );
}

export { TextBlock };
