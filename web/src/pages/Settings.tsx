import { api, getJson, ApiError } from '../lib/api';
import { useFetch } from '../lib/hooks';
import { live, useLiveState } from '../lib/live';
import { setChoice, useTheme, type ThemeChoice } from '../lib/theme';
import { SHORTCUTS } from '../components/Layout';
import { CodeBlock, ErrorState, Kbd, Loading, PageHeader } from '../components/ui';
import { JsonView } from '../components/JsonView';

interface Listing {
  status: 'ok' | 'absent' | 'error';
  items: Record<string, unknown>[];
  message?: string;
}

/** Projects and API keys arrive with a later server version: show them when the routes exist. */
async function optionalList(path: string, field: string, signal: AbortSignal): Promise<Listing> {
  try {
    const body = await getJson<Record<string, unknown>>(path, undefined, signal);
    const items = Array.isArray(body) ? body : Array.isArray(body[field]) ? (body[field] as Record<string, unknown>[]) : [];
    return { status: 'ok', items };
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 405 || e.status === 501)) return { status: 'absent', items: [] };
    if ((e as Error).name === 'AbortError') throw e;
    return { status: 'error', items: [], message: (e as Error).message };
  }
}

/** The server's store statistics, when this server version has the route. */
async function optionalObject(path: string, signal: AbortSignal): Promise<Record<string, unknown> | null> {
  try {
    return await getJson<Record<string, unknown>>(path, undefined, signal);
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    return null;
  }
}

const STAT_LABELS: Record<string, string> = {
  backend: 'Backend',
  location: 'Location',
  traces: 'Traces stored',
  spans: 'Spans stored',
  price_table_as_of: 'Prices as of',
  price_table_models: 'Models priced',
};

function cell(v: unknown): string {
  if (v == null) return '—';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function ListingTable({ listing, columns, empty }: { listing: Listing; columns: [string, string][]; empty: string }) {
  if (listing.status === 'absent')
    return <p class="muted">This server version does not manage them yet; they arrive with projects and API keys.</p>;
  if (listing.status === 'error') return <p class="text-error">{listing.message}</p>;
  if (!listing.items.length) return <p class="muted">{empty}</p>;
  return (
    <div class="table-wrap">
      <table class="table table-small">
        <thead>
          <tr>
            {columns.map(([, label]) => (
              <th key={label}>{label}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {listing.items.map((it, i) => (
            <tr key={i}>
              {columns.map(([k]) => (
                <td key={k} class="mono">
                  {cell(it[k])}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function Settings() {
  const health = useFetch((signal) => api.health(signal), 'health');
  const stats = useFetch((signal) => optionalObject('/stats', signal), 'stats');
  const projects = useFetch((signal) => optionalList('/projects', 'projects', signal), 'projects');
  const keys = useFetch((signal) => optionalList('/api-keys', 'api_keys', signal), 'keys');
  const liveState = useLiveState();
  const { choice } = useTheme();
  const origin = location.origin;
  const h = health.data;

  return (
    <div class="page page-narrow">
      <PageHeader title="Settings" subtitle="This server, how to send it data, and how the dashboard looks." />

      <section class="panel card">
        <h2>Server</h2>
        {health.error && !h ? (
          <ErrorState error={health.error} retry={health.reload} what="server status" />
        ) : !h ? (
          <Loading />
        ) : (
          <dl class="meta meta-wide" data-testid="server-info">
            <div class="meta-item">
              <dt>Status</dt>
              <dd>
                <span class={'status ' + (h.status === 'ok' ? 'status-success' : 'status-error')}>
                  <span class="status-dot" />
                  {h.status}
                </span>
              </dd>
            </div>
            <div class="meta-item">
              <dt>Version</dt>
              <dd class="mono" data-field="version">
                {h.version ?? '—'}
              </dd>
            </div>
            <div class="meta-item">
              <dt>Store</dt>
              <dd class="mono" data-field="store">
                {h.store ?? '—'}
              </dd>
            </div>
            <div class="meta-item">
              <dt>Live stream</dt>
              <dd>
                {liveState === 'open' ? 'connected' : liveState}
                {live.version ? ` (v${live.version})` : ''}
              </dd>
            </div>
            {Object.entries(h)
              .filter(([k]) => !['status', 'version', 'store'].includes(k))
              .map(([k, v]) => (
                <div class="meta-item" key={k}>
                  <dt>{k}</dt>
                  <dd class="mono">{typeof v === 'object' ? <JsonView value={v} copy={false} /> : String(v)}</dd>
                </div>
              ))}
          </dl>
        )}
      </section>

      {stats.data && (
        <section class="panel card">
          <h2>Store</h2>
          <dl class="meta meta-wide" data-testid="store-stats">
            {Object.entries(stats.data)
              .filter(([k]) => k !== 'version')
              .map(([k, v]) => (
                <div class="meta-item" key={k}>
                  <dt>{STAT_LABELS[k] ?? k.replace(/_/g, ' ')}</dt>
                  <dd class="mono">{typeof v === 'number' ? v.toLocaleString('en-US') : typeof v === 'object' ? JSON.stringify(v) : String(v)}</dd>
                </div>
              ))}
          </dl>
        </section>
      )}

      <section class="panel card">
        <h2>Sending data</h2>
        <p class="muted">
          This dashboard's origin also serves the whole API under <code>/api</code>; the API port of{' '}
          <code>tracellm start</code> (8000 by default) serves the same routes without the prefix.
        </p>
        <dl class="meta meta-wide">
          <div class="meta-item">
            <dt>Native ingest</dt>
            <dd class="mono">POST {origin}/api/traces</dd>
          </div>
          <div class="meta-item">
            <dt>OTLP/HTTP</dt>
            <dd class="mono">POST {origin}/api/v1/traces</dd>
          </div>
          <div class="meta-item">
            <dt>WebSocket</dt>
            <dd class="mono">{origin.replace(/^http/, 'ws')}/api/ws</dd>
          </div>
          <div class="meta-item">
            <dt>OpenAPI</dt>
            <dd class="mono">
              <a href="/api/openapi.json">{origin}/api/openapi.json</a>
            </dd>
          </div>
        </dl>
        <CodeBlock code={`export TRACELLM_ENDPOINT=${origin}/api`} lang="Python SDK" />
      </section>

      <section class="panel card">
        <h2>Projects</h2>
        {projects.data ? (
          <ListingTable
            listing={projects.data}
            columns={[
              ['name', 'Name'],
              ['id', 'ID'],
              ['environment', 'Environment'],
              ['created_at', 'Created'],
            ]}
            empty="No projects yet: traces go to the default project."
          />
        ) : (
          <Loading />
        )}
      </section>

      <section class="panel card">
        <h2>API keys</h2>
        {keys.data ? (
          <ListingTable
            listing={keys.data}
            columns={[
              ['prefix', 'Key'],
              ['name', 'Name'],
              ['project_id', 'Project'],
              ['environment', 'Environment'],
              ['created_at', 'Created'],
              ['revoked_at', 'Revoked'],
            ]}
            empty="No API keys. On this machine requests without a key reach the default project."
          />
        ) : (
          <Loading />
        )}
      </section>

      <section class="panel card">
        <h2>Appearance</h2>
        <div class="segmented" role="radiogroup" aria-label="Theme">
          {(['system', 'light', 'dark'] as ThemeChoice[]).map((c) => (
            <label key={c} class={'seg' + (choice === c ? ' seg-active' : '')}>
              <input type="radio" name="theme" value={c} checked={choice === c} onChange={() => setChoice(c)} />
              {c === 'system' ? 'Match system' : c === 'light' ? 'Light' : 'Dark'}
            </label>
          ))}
        </div>
      </section>

      <section class="panel card">
        <h2>Keyboard</h2>
        <table class="shortcuts">
          <tbody>
            {SHORTCUTS.map(([k, d]) => (
              <tr key={k}>
                <td>
                  <Kbd>{k}</Kbd>
                </td>
                <td>{d}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </div>
  );
}
