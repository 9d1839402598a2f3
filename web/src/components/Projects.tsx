// The project switcher of the sidebar, the key entry shown when the server asks for a key, and
// the admin-token form.
import { useEffect, useState } from 'preact/hooks';
import { admin, ApiError, type ApiKey } from '../lib/api';
import { auth, DEFAULT_PROJECT, keyPrefix, keyProblem, selectionOf, useAuth } from '../lib/auth';
import { useFetch } from '../lib/hooks';
import { Icon } from './icons';
import { Link } from './ui';

/** Switch to a project; one this browser has no key for gets a key the dashboard makes for itself. */
export async function switchProject(sel: string): Promise<string | null> {
  if (sel === DEFAULT_PROJECT || sel.startsWith('key:') || auth.keys.some((k) => selectionOf(k) === sel)) {
    auth.select(sel);
    return null;
  }
  try {
    const k = await admin.createKey({ project: sel, environment: 'development', name: 'dashboard' });
    auth.useKey({ key: k.key!, project: k.project_id, environment: k.environment, source: 'dashboard' });
    auth.changed();
    return null;
  } catch (e) {
    return e instanceof ApiError && e.status === 401
      ? 'A key for this project needs the admin token; enter it in Settings, or paste a key of the project.'
      : (e as Error).message;
  }
}

export function ProjectSwitcher() {
  const a = useAuth();
  const projects = useFetch((signal) => admin.projects(signal), `projects:${a.adminToken ?? ''}:${a.rev}`);
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<string | null>(null);
  const ids = new Set<string>([DEFAULT_PROJECT]);
  const options: { value: string; label: string }[] = [{ value: DEFAULT_PROJECT, label: DEFAULT_PROJECT }];
  for (const p of projects.data ?? []) {
    if (ids.has(p.id)) continue;
    ids.add(p.id);
    options.push({ value: p.id, label: p.name || p.id });
  }
  for (const k of a.keys) {
    const sel = selectionOf(k);
    if (ids.has(sel)) continue;
    ids.add(sel);
    options.push({ value: sel, label: k.project ?? `key ${keyPrefix(k.key)}…` });
  }
  if (!ids.has(a.selection)) options.push({ value: a.selection, label: a.selection });
  // Once the admin routes answer, a pasted key's project can be named.
  const unknown = a.keys.some((k) => !k.project);
  useEffect(() => {
    if (!projects.data || !unknown) return;
    admin.keys(null).then(
      (listed) => auth.learnProjects(listed),
      () => {},
    );
  }, [projects.data, unknown]);
  const adminLocked = projects.error instanceof ApiError && projects.error.status === 401;
  const cur = a.current;

  async function choose(sel: string) {
    setProblem(null);
    setBusy(true);
    setProblem(await switchProject(sel));
    setBusy(false);
  }

  return (
    <div class="project-switch" data-testid="project-switcher">
      <label class="field-label" for="project-select">
        Project
      </label>
      <select
        id="project-select"
        class="select select-xs"
        value={a.selection}
        disabled={busy}
        onChange={(e) => choose((e.target as HTMLSelectElement).value)}
        data-testid="project-select"
      >
        {options.map((o) => (
          <option key={o.value} value={o.value}>
            {o.label}
          </option>
        ))}
      </select>
      <div class="project-key muted" data-testid="project-key">
        {cur ? (
          <>
            <Icon name="key" size={12} />
            <span class="mono">{keyPrefix(cur.key)}…</span>
            {cur.environment && <span class="env-tag">{cur.environment}</span>}
          </>
        ) : (
          <span>{a.missingKey ? 'no key of this project kept' : 'no key: local access'}</span>
        )}
      </div>
      {busy && <div class="project-note muted">Creating a key for this dashboard…</div>}
      {problem && <div class="project-note text-error">{problem}</div>}
      {adminLocked && (
        <div class="project-note muted">
          Listing projects needs the admin token: <Link href="/settings">enter it</Link>.
        </div>
      )}
      {a.keys.length > 0 && (
        <div class="project-note muted">
          Keys are kept in this browser.{' '}
          <button type="button" class="link-btn" onClick={() => auth.forgetKeys()} data-testid="forget-keys">
            Forget keys
          </button>
        </div>
      )}
    </div>
  );
}

/** Find the project of a pasted key from the key list, when the admin routes answer. */
async function projectOf(key: string): Promise<ApiKey | null> {
  try {
    const keys = await admin.keys(null);
    return keys.find((k) => k.prefix === keyPrefix(key)) ?? null;
  } catch {
    return null;
  }
}

export function KeyEntry({ message }: { message: string }) {
  const a = useAuth();
  const [value, setValue] = useState('');
  const [problem, setProblem] = useState<string | null>(null);
  const refused = a.current;

  async function submit(e: Event) {
    e.preventDefault();
    const p = keyProblem(value);
    setProblem(p);
    if (p) return;
    const key = value.trim();
    const known = await projectOf(key);
    if (refused && refused.key !== key) auth.dropKey(refused.key);
    auth.useKey({ key, project: known?.project_id ?? null, environment: known?.environment ?? null, source: 'entered' });
  }

  return (
    <div class="page page-narrow">
      <section class="panel card key-entry" data-testid="key-entry">
        <div class="key-entry-icon">
          <Icon name="key" size={22} />
        </div>
        <h2>{a.missingKey ? `A key of ${a.selection} is needed` : 'This server requires an API key'}</h2>
        {a.missingKey ? (
          <p class="muted">{message} Without one the requests would reach the default project instead.</p>
        ) : refused ? (
          <p>
            The key in use, <span class="mono">{keyPrefix(refused.key)}…</span>, was refused: {message}
          </p>
        ) : (
          <p class="muted">The server says: {message}</p>
        )}
        <p class="muted">
          Paste a key of the project you want to see. Create one with <code>tracellm keys create</code> or in Settings with
          the admin token. The dashboard keeps it in this browser (localStorage) until you forget it.
        </p>
        <form class="key-form" onSubmit={submit}>
          <input
            class="input mono grow"
            type="password"
            autocomplete="off"
            spellcheck={false}
            placeholder="tlm_sk_…"
            aria-label="API key"
            value={value}
            onInput={(e) => {
              setValue((e.target as HTMLInputElement).value);
              setProblem(null);
            }}
            data-testid="key-input"
          />
          <button class="btn btn-primary" type="submit" data-testid="key-submit">
            Use key
          </button>
        </form>
        {problem && (
          <p class="text-error" role="alert" data-testid="key-problem">
            {problem}
          </p>
        )}
        {refused && (
          <button type="button" class="link-btn" onClick={() => auth.dropKey(refused.key)}>
            Forget the refused key
          </button>
        )}
        {a.missingKey && (
          <div class="form-row">
            <button
              type="button"
              class="btn btn-xs"
              data-testid="key-create-own"
              onClick={async () => setProblem(await switchProject(a.selection))}
            >
              Let the dashboard create a key of {a.selection}
            </button>
            <button type="button" class="btn btn-xs btn-ghost" onClick={() => auth.select(DEFAULT_PROJECT)}>
              Back to default
            </button>
          </div>
        )}
      </section>
    </div>
  );
}

export function AdminTokenForm() {
  const a = useAuth();
  const [value, setValue] = useState('');
  if (a.adminToken && !a.adminRequired)
    return (
      <p class="muted admin-token-set" data-testid="admin-token-set">
        An admin token is set for this tab (sessionStorage).{' '}
        <button type="button" class="link-btn" onClick={() => auth.setAdminToken(null)}>
          Forget it
        </button>
      </p>
    );
  return (
    <form
      class="note note-retry admin-token"
      data-testid="admin-token-form"
      onSubmit={(e) => {
        e.preventDefault();
        auth.setAdminToken(value);
        setValue('');
      }}
    >
      <p>
        {a.adminToken ? 'The admin token was refused. ' : 'Projects and keys need the admin token on this server. '}
        It is <code>TRACELLM_ADMIN_TOKEN</code>, or the token printed at the server's first start; it is sent as{' '}
        <code>X-Admin-Token</code> and kept only in this tab.
      </p>
      <div class="key-form">
        <input
          class="input mono grow"
          type="password"
          autocomplete="off"
          placeholder="Admin token"
          aria-label="Admin token"
          value={value}
          onInput={(e) => setValue((e.target as HTMLInputElement).value)}
          data-testid="admin-token-input"
        />
        <button class="btn btn-primary" type="submit" disabled={!value.trim()}>
          Use token
        </button>
      </div>
    </form>
  );
}
