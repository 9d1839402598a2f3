import { useState } from 'preact/hooks';
import { admin, api, getJson, ApiError, type ApiKey } from '../lib/api';
import { auth, DEFAULT_PROJECT, ENVIRONMENTS, keyPrefix, useAuth } from '../lib/auth';
import { formatTime } from '../lib/format';
import { AdminTokenForm } from '../components/Projects';
import { useFetch } from '../lib/hooks';
import { live, useLiveState } from '../lib/live';
import { setChoice, useTheme, type ThemeChoice } from '../lib/theme';
import { SHORTCUTS } from '../components/Layout';
import { CodeBlock, CopyButton, ErrorState, Kbd, Loading, PageHeader } from '../components/ui';
import { JsonView } from '../components/JsonView';

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

export function Settings() {
  const health = useFetch((signal) => api.health(signal), 'health');
  const stats = useFetch((signal) => optionalObject('/stats', signal), 'stats');
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

      <ProjectsCard />
      <KeysCard />
      <BrowserKeysCard />

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
        <CodeBlock code={`export TRACELLM_ENDPOINT=${origin}/api\nexport TRACELLM_API_KEY=tlm_sk_…   # a key of the project (none needed for default on this machine)`} lang="Python SDK" />
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

const adminLocked = (e: Error | null) => e instanceof ApiError && e.status === 401;

/** A new key's secret, shown this once. */
function NewKey({ apiKey, what, onDone }: { apiKey: ApiKey; what: string; onDone: () => void }) {
  const a = useAuth();
  const used = a.keys.some((k) => k.key === apiKey.key);
  return (
    <div class="new-key" data-testid="new-key" role="status">
      <p>
        <strong>{what}</strong> Copy the key now: it will not be shown again (the server keeps only its hash).
      </p>
      <div class="new-key-secret">
        <code class="grow" data-testid="new-key-secret">
          {apiKey.key}
        </code>
        <CopyButton text={apiKey.key!} label="Copy key" />
      </div>
      <p class="muted small" style={{ margin: '8px 0 0' }}>
        Project <span class="mono">{apiKey.project_id}</span> · {apiKey.environment}. Send it as{' '}
        <code>Authorization: Bearer …</code>.
      </p>
      <div class="form-row">
        {!used && (
          <button
            type="button"
            class="btn btn-xs"
            onClick={() =>
              auth.useKey({ key: apiKey.key!, project: apiKey.project_id, environment: apiKey.environment, source: 'entered' })
            }
          >
            Use it in this dashboard
          </button>
        )}
        <button type="button" class="btn btn-xs" onClick={onDone} data-testid="new-key-done">
          I have copied it
        </button>
      </div>
    </div>
  );
}

function ProjectsCard() {
  const a = useAuth();
  const projects = useFetch((signal) => admin.projects(signal), `projects:${a.adminToken ?? ''}:${a.rev}`);
  const [name, setName] = useState('');
  const [environment, setEnvironment] = useState('development');
  const [description, setDescription] = useState('');
  const [created, setCreated] = useState<ApiKey | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function create(e: Event) {
    e.preventDefault();
    setError(null);
    setBusy(true);
    try {
      const r = await admin.createProject({ name: name.trim(), environment, description: description.trim() || undefined });
      setCreated(r.api_key);
      setName('');
      setDescription('');
      auth.changed();
    } catch (err) {
      setError(err instanceof ApiError && err.status === 409 ? `A project named “${name.trim()}” exists already.` : (err as Error).message);
    } finally {
      setBusy(false);
    }
  }

  const locked = adminLocked(projects.error);
  return (
    <section class="panel card" data-testid="projects-card">
      <h2>Projects</h2>
      <p class="muted">
        A project keeps its traces apart; each API key reaches one project and one environment. Traces sent without a key
        from this machine go to <span class="mono">default</span>.
      </p>
      {(locked || a.adminRequired) && <AdminTokenForm />}
      {!locked && a.adminToken && <AdminTokenForm />}
      {projects.error && !locked ? (
        <ErrorState error={projects.error} retry={projects.reload} what="projects" />
      ) : locked ? null : !projects.data ? (
        <Loading />
      ) : (
        <div class="table-wrap">
          <table class="table table-small" data-testid="projects-table">
            <thead>
              <tr>
                <th>Name</th>
                <th>ID</th>
                <th>Description</th>
                <th>Created</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {projects.data.map((p) => (
                <tr key={p.id} data-project-id={p.id}>
                  <td>{p.name}</td>
                  <td class="mono">{p.id}</td>
                  <td class="muted">{p.description || '—'}</td>
                  <td class="muted">{p.id === DEFAULT_PROJECT ? '—' : p.created_at ? formatTime(p.created_at) : '—'}</td>
                  <td>{a.selection === p.id ? <span class="badge badge-accent">selected</span> : null}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {created && <NewKey apiKey={created} what={`Project ${created.project_id} created with its first key.`} onDone={() => setCreated(null)} />}
      {!locked && (
        <form class="form-row" onSubmit={create} data-testid="create-project">
          <label class="field">
            <span class="field-label">Name</span>
            <input class="input" required value={name} placeholder="checkout-bot" onInput={(e) => setName((e.target as HTMLInputElement).value)} name="name" />
          </label>
          <label class="field">
            <span class="field-label">Environment of its key</span>
            <select class="select" value={environment} onChange={(e) => setEnvironment((e.target as HTMLSelectElement).value)} name="environment">
              {ENVIRONMENTS.map((env) => (
                <option key={env} value={env}>
                  {env}
                </option>
              ))}
            </select>
          </label>
          <label class="field grow">
            <span class="field-label">Description</span>
            <input class="input" value={description} placeholder="optional" onInput={(e) => setDescription((e.target as HTMLInputElement).value)} name="description" />
          </label>
          <button class="btn btn-primary" type="submit" disabled={busy || !name.trim()}>
            Create project
          </button>
        </form>
      )}
      {error && <p class="text-error" role="alert">{error}</p>}
    </section>
  );
}

function KeyRow({ k, inUse }: { k: ApiKey; inUse: boolean }) {
  const [confirm, setConfirm] = useState(false);
  const [error, setError] = useState<string | null>(null);
  async function revoke() {
    setError(null);
    try {
      await admin.revokeKey(k.id);
      const mine = auth.keys.find((s) => keyPrefix(s.key) === k.prefix && s.project === k.project_id);
      if (mine) auth.dropKey(mine.key);
      auth.changed();
    } catch (e) {
      setError((e as Error).message);
    }
    setConfirm(false);
  }
  const revoked = !!k.revoked_at;
  return (
    <tr data-key-id={k.id} data-key-status={revoked ? 'revoked' : 'active'}>
      <td class="mono">{k.prefix}…</td>
      <td>
        {k.name || '—'}
        {inUse && <span class="badge badge-accent" style={{ marginLeft: '6px' }}>used here</span>}
      </td>
      <td>{k.environment}</td>
      <td class="muted">{formatTime(k.created_at)}</td>
      <td class="muted">{k.last_used_at ? formatTime(k.last_used_at) : 'never'}</td>
      <td data-field="status">
        {revoked ? (
          <span class="status status-revoked" title={'Revoked ' + formatTime(k.revoked_at!)}>
            <span class="status-dot" />
            revoked
          </span>
        ) : (
          <span class="status status-success">
            <span class="status-dot" />
            active
          </span>
        )}
      </td>
      <td class="right">
        {revoked ? null : confirm ? (
          <span class="confirm" data-testid="revoke-confirm">
            <span class="small">Refuse it from now on?</span>
            <button type="button" class="btn btn-xs btn-error-soft" onClick={revoke}>
              Revoke
            </button>
            <button type="button" class="btn btn-xs btn-ghost" onClick={() => setConfirm(false)}>
              Cancel
            </button>
          </span>
        ) : (
          <button type="button" class="btn btn-xs" onClick={() => setConfirm(true)}>
            Revoke…
          </button>
        )}
        {error && <div class="text-error small">{error}</div>}
      </td>
    </tr>
  );
}

function KeysCard() {
  const a = useAuth();
  const project = a.current?.project ?? (a.selection.startsWith('key:') ? null : a.selection);
  const keys = useFetch((signal) => (project ? admin.keys(project, signal) : Promise.resolve([])), `keys:${project}:${a.adminToken ?? ''}:${a.rev}`);
  const [name, setName] = useState('');
  const [environment, setEnvironment] = useState('development');
  const [created, setCreated] = useState<ApiKey | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function create(e: Event) {
    e.preventDefault();
    if (!project) return;
    setError(null);
    try {
      setCreated(await admin.createKey({ project, environment, name: name.trim() || 'key' }));
      setName('');
      auth.changed();
    } catch (err) {
      setError((err as Error).message);
    }
  }

  const locked = adminLocked(keys.error);
  return (
    <section class="panel card" data-testid="keys-card">
      <h2>
        API keys{project ? ' of ' : ''}
        {project && <span class="mono">{project}</span>}
      </h2>
      {!project ? (
        <p class="muted">The project of the key in use is not known to this dashboard; choose a project to manage its keys.</p>
      ) : locked ? (
        <p class="muted">Listing keys needs the admin token (see Projects above).</p>
      ) : keys.error ? (
        <ErrorState error={keys.error} retry={keys.reload} what="API keys" />
      ) : !keys.data ? (
        <Loading />
      ) : !keys.data.length ? (
        <p class="muted">No keys for this project.{project === DEFAULT_PROJECT ? ' On this machine requests without a key reach it.' : ''}</p>
      ) : (
        <div class="table-wrap">
          <table class="table table-small" data-testid="keys-table">
            <thead>
              <tr>
                <th>Key</th>
                <th>Name</th>
                <th>Environment</th>
                <th>Created</th>
                <th>Last used</th>
                <th>Status</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {keys.data.map((k) => (
                <KeyRow key={k.id} k={k} inUse={a.current != null && keyPrefix(a.current.key) === k.prefix} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {created && <NewKey apiKey={created} what="Key created." onDone={() => setCreated(null)} />}
      {project && !locked && (
        <form class="form-row" onSubmit={create} data-testid="create-key">
          <label class="field grow">
            <span class="field-label">Name</span>
            <input class="input" value={name} placeholder="ci, staging-worker…" onInput={(e) => setName((e.target as HTMLInputElement).value)} name="key-name" />
          </label>
          <label class="field">
            <span class="field-label">Environment</span>
            <select class="select" value={environment} onChange={(e) => setEnvironment((e.target as HTMLSelectElement).value)} name="key-environment">
              {ENVIRONMENTS.map((env) => (
                <option key={env} value={env}>
                  {env}
                </option>
              ))}
            </select>
          </label>
          <button class="btn btn-primary" type="submit">
            Create key
          </button>
        </form>
      )}
      {error && <p class="text-error" role="alert">{error}</p>}
    </section>
  );
}

function BrowserKeysCard() {
  const a = useAuth();
  return (
    <section class="panel card" data-testid="browser-keys">
      <h2>Keys kept by this browser</h2>
      <p class="muted">
        To show a project, the dashboard uses a key of it: one you pasted, or one it created for itself (named{' '}
        <span class="mono">dashboard</span>, environment development). They are kept in this browser's localStorage; the
        admin token only for this tab. To look at another environment, create a key of it above and use it here.
      </p>
      {a.keys.length ? (
        <>
          <ul class="browser-keys">
            {a.keys.map((k) => (
              <li key={k.key}>
                <span class="mono">{keyPrefix(k.key)}…</span> · {k.project ?? 'unknown project'}
                {k.environment ? ` · ${k.environment}` : ''} · {k.source === 'dashboard' ? 'created by the dashboard' : 'pasted'}
              </li>
            ))}
          </ul>
          <button type="button" class="btn btn-xs" onClick={() => auth.forgetKeys()}>
            Forget keys
          </button>
        </>
      ) : (
        <p class="muted">None.</p>
      )}
    </section>
  );
}
