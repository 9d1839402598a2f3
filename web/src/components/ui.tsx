import type { ComponentChildren, JSX } from 'preact';
import { useState } from 'preact/hooks';
import { ApiError, NetworkError } from '../lib/api';
import { onLinkClick } from '../lib/router';
import { Icon } from './icons';

export function Link(props: JSX.HTMLAttributes<HTMLAnchorElement> & { href: string }) {
  const { href, onClick, ...rest } = props;
  return (
    <a
      href={href}
      onClick={(e) => {
        if (onClick) (onClick as (e: MouseEvent) => void)(e);
        onLinkClick(e, href);
      }}
      {...rest}
    />
  );
}

const STATUS_LABEL: Record<string, string> = {
  success: 'Success',
  error: 'Error',
  retried: 'Retried',
  running: 'Running',
};

export function StatusBadge({ status, compact }: { status: string; compact?: boolean }) {
  const s = STATUS_LABEL[status] ? status : 'unknown';
  return (
    <span class={`status status-${s}`} title={STATUS_LABEL[status] ?? status}>
      <span class="status-dot" />
      {!compact && <span>{STATUS_LABEL[status] ?? status}</span>}
    </span>
  );
}

const KIND_LABEL: Record<string, string> = {
  llm: 'LLM',
  tool: 'Tool',
  retriever: 'Retriever',
  embedding: 'Embed',
  agent: 'Agent',
  chain: 'Chain',
  reranker: 'Rerank',
  guardrail: 'Guard',
  evaluator: 'Eval',
  event: 'Event',
  span: 'Span',
};

export function kindClass(kind: string | null | undefined): string {
  return 'kind-' + (kind && KIND_LABEL[kind] ? kind : 'span');
}

export function KindBadge({ kind }: { kind: string | null | undefined }) {
  const k = kind && KIND_LABEL[kind] ? kind : 'span';
  return <span class={`kind ${kindClass(k)}`}>{KIND_LABEL[k] ?? kind}</span>;
}

export function Kbd({ children }: { children: ComponentChildren }) {
  return <kbd class="kbd">{children}</kbd>;
}

export function CopyButton({ text, label = 'Copy' }: { text: string | (() => string); label?: string }) {
  const [done, setDone] = useState(false);
  return (
    <button
      type="button"
      class="btn btn-ghost btn-xs"
      title={label}
      onClick={(e) => {
        e.stopPropagation();
        navigator.clipboard?.writeText(typeof text === 'function' ? text() : text).then(
          () => {
            setDone(true);
            setTimeout(() => setDone(false), 1200);
          },
          () => {},
        );
      }}
    >
      <Icon name={done ? 'check' : 'copy'} size={13} />
      <span>{done ? 'Copied' : label}</span>
    </button>
  );
}

export function CodeBlock({ code, lang }: { code: string; lang?: string }) {
  return (
    <div class="code-block">
      <div class="code-head">
        <span>{lang}</span>
        <CopyButton text={code} />
      </div>
      <pre>
        <code>{code}</code>
      </pre>
    </div>
  );
}

export function Loading({ label = 'Loading…' }: { label?: string }) {
  return (
    <div class="state state-loading" role="status" aria-live="polite">
      <span class="spinner" />
      <span>{label}</span>
    </div>
  );
}

export function EmptyState({
  icon = 'inbox',
  title,
  children,
}: {
  icon?: string;
  title: string;
  children?: ComponentChildren;
}) {
  return (
    <div class="state">
      <div class="state-icon">
        <Icon name={icon} size={22} />
      </div>
      <h3>{title}</h3>
      {children && <div class="state-body">{children}</div>}
    </div>
  );
}

export function ErrorState({ error, retry, what = 'data' }: { error: Error; retry?: () => void; what?: string }) {
  if (error instanceof NetworkError) {
    return (
      <div class="state state-error" data-state="server-down">
        <div class="state-icon">
          <Icon name="plug" size={22} />
        </div>
        <h3>The TraceLLM server is not reachable</h3>
        <div class="state-body">
          <p>
            The dashboard could not load {what}. Start the server in a terminal and this page reconnects by
            itself:
          </p>
          <CodeBlock code="tracellm start" lang="shell" />
          {retry && (
            <button class="btn" type="button" onClick={retry}>
              <Icon name="refresh" size={14} /> Try again now
            </button>
          )}
        </div>
      </div>
    );
  }
  const api = error instanceof ApiError ? error : null;
  return (
    <div class="state state-error" data-state="error">
      <div class="state-icon">
        <Icon name="alert" size={22} />
      </div>
      <h3>{api?.status === 404 ? 'Not found' : `Could not load ${what}`}</h3>
      <div class="state-body">
        <p>
          {error.message}
          {api && (
            <span class="muted">
              {' '}
              ({api.status} {api.code})
            </span>
          )}
        </p>
        {retry && api?.status !== 404 && (
          <button class="btn" type="button" onClick={retry}>
            <Icon name="refresh" size={14} /> Try again
          </button>
        )}
      </div>
    </div>
  );
}

export function PageHeader({
  title,
  subtitle,
  children,
}: {
  title: ComponentChildren;
  subtitle?: ComponentChildren;
  children?: ComponentChildren;
}) {
  return (
    <header class="page-header">
      <div class="page-title">
        <h1>{title}</h1>
        {subtitle && <div class="page-subtitle">{subtitle}</div>}
      </div>
      {children && <div class="page-actions">{children}</div>}
    </header>
  );
}

export function Stat({
  label,
  value,
  hint,
  tone,
  testId,
}: {
  label: string;
  value: ComponentChildren;
  hint?: ComponentChildren;
  tone?: 'error' | 'ok';
  testId?: string;
}) {
  return (
    <div class={'stat' + (tone ? ' stat-' + tone : '')} data-stat={testId}>
      <div class="stat-label">{label}</div>
      <div class="stat-value">{value}</div>
      {hint != null && <div class="stat-hint">{hint}</div>}
    </div>
  );
}

export const RANGES: { key: string; label: string; ms: number | null }[] = [
  { key: '15m', label: 'Last 15 minutes', ms: 15 * 60_000 },
  { key: '1h', label: 'Last hour', ms: 3_600_000 },
  { key: '24h', label: 'Last 24 hours', ms: 86_400_000 },
  { key: '7d', label: 'Last 7 days', ms: 7 * 86_400_000 },
  { key: '30d', label: 'Last 30 days', ms: 30 * 86_400_000 },
  { key: 'all', label: 'All time', ms: null },
];

export function rangeSince(key: string | null, now = Date.now()): string | undefined {
  const r = RANGES.find((x) => x.key === key);
  if (!r || r.ms == null) return undefined;
  return new Date(now - r.ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function RangeSelect({
  value,
  onChange,
  allowAll = true,
  label = 'Time range',
}: {
  value: string;
  onChange: (v: string) => void;
  allowAll?: boolean;
  label?: string;
}) {
  return (
    <label class="field field-inline">
      <span class="sr-only">{label}</span>
      <select class="select" value={value} aria-label={label} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        {RANGES.filter((r) => allowAll || r.ms != null).map((r) => (
          <option value={r.key} key={r.key}>
            {r.label}
          </option>
        ))}
      </select>
    </label>
  );
}
