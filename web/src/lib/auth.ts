// Which project the dashboard looks at, and with which credentials.
//
// A key reaches exactly one project and environment (docs/SECURITY.md), so choosing a project
// means choosing a key of it: one the user pasted, or one the dashboard created for itself. Keys
// are kept in localStorage (the user is told, and can forget them); the admin token only in
// sessionStorage, so it ends with the tab.
import { useEffect, useReducer } from 'preact/hooks';

export const KEY_RE = /^tlm_sk_[A-Za-z0-9]{32}$/;
export const ENVIRONMENTS = ['development', 'staging', 'production'] as const;
export const DEFAULT_PROJECT = 'default';

/** Why a pasted key cannot be one, in words; null when it has the right shape. */
export function keyProblem(raw: string): string | null {
  const s = raw.trim();
  if (!s) return 'Paste a key.';
  if (!s.startsWith('tlm_sk_')) return 'A TraceLLM key starts with tlm_sk_.';
  const rest = s.slice(7);
  if (/[^A-Za-z0-9]/.test(rest)) return 'After tlm_sk_ a key has only letters and digits.';
  if (rest.length !== 32) return `After tlm_sk_ a key has 32 letters and digits; this one has ${rest.length}.`;
  return null;
}

export const isKey = (s: string) => KEY_RE.test(s.trim());

/** The first characters the server shows in lists (`prefix`), to recognise a key. */
export const keyPrefix = (key: string) => key.slice(0, 11);

export interface StoredKey {
  key: string;
  /** the project it reaches, when known (a pasted key's project is learned from the key list) */
  project: string | null;
  environment: string | null;
  /** 'dashboard' when the dashboard created it for itself */
  source: 'entered' | 'dashboard';
}

/** What the switcher selects: a project id, or `key:<prefix>` for a pasted key of unknown project. */
export type Selection = string;

export interface KVStore {
  getItem(k: string): string | null;
  setItem(k: string, v: string): void;
  removeItem(k: string): void;
}

const KEYS = 'tracellm.keys';
const SELECTION = 'tracellm.project';
const ADMIN = 'tracellm.adminToken';

export function readKeys(store: KVStore | null): StoredKey[] {
  if (!store) return [];
  try {
    const v = JSON.parse(store.getItem(KEYS) ?? '[]');
    if (!Array.isArray(v)) return [];
    return v.filter((k) => k && typeof k.key === 'string' && isKey(k.key)) as StoredKey[];
  } catch {
    return [];
  }
}

export function writeKeys(store: KVStore | null, keys: StoredKey[]) {
  if (!store) return;
  if (keys.length) store.setItem(KEYS, JSON.stringify(keys));
  else store.removeItem(KEYS);
}

/** Add a key, replacing one with the same secret, and the dashboard's own key of that project. */
export function addKey(keys: StoredKey[], k: StoredKey): StoredKey[] {
  const rest = keys.filter((o) => o.key !== k.key && !(k.project && o.project === k.project));
  return [...rest, k];
}

/** The key used for a selection: the project's key, or the pasted key it names. */
export function keyFor(keys: StoredKey[], sel: Selection): StoredKey | null {
  if (sel.startsWith('key:')) return keys.find((k) => keyPrefix(k.key) === sel.slice(4)) ?? null;
  return keys.find((k) => k.project === sel) ?? null;
}

export function selectionOf(k: StoredKey): Selection {
  return k.project ?? 'key:' + keyPrefix(k.key);
}

function safe(get: () => Storage): KVStore | null {
  try {
    const s = get();
    return s ?? null;
  } catch {
    return null;
  }
}

type Listener = () => void;

/** The dashboard's credentials, with subscribers (the layout, the pages and the live stream). */
export class AuthState {
  keys: StoredKey[];
  selection: Selection;
  adminToken: string | null;
  /** set when a data call answered 401: the key entry is shown instead of the page */
  keyRequired: string | null = null;
  /** set when an admin call answered 401 */
  adminRequired = false;
  /** bumped on every change of the key in use: pages and the live stream start over */
  epoch = 0;
  /** bumped when projects or keys were created or revoked here: lists reload */
  rev = 0;
  private subs = new Set<Listener>();

  constructor(
    private local: KVStore | null,
    private session: KVStore | null,
  ) {
    this.keys = readKeys(local);
    this.selection = local?.getItem(SELECTION) || DEFAULT_PROJECT;
    this.adminToken = session?.getItem(ADMIN) || null;
  }

  /** The key sent with data calls; null for `default` without one (a loopback server's default). */
  get key(): string | null {
    return keyFor(this.keys, this.selection)?.key ?? null;
  }

  /** A project other than `default` is selected but no key of it is kept (forgotten or revoked). */
  get missingKey(): boolean {
    return this.selection !== DEFAULT_PROJECT && this.key === null;
  }

  get current(): StoredKey | null {
    return keyFor(this.keys, this.selection);
  }

  subscribe(f: Listener) {
    this.subs.add(f);
    return () => {
      this.subs.delete(f);
    };
  }

  private emit(keyChanged: boolean) {
    if (keyChanged) this.epoch++;
    for (const f of this.subs) f();
  }

  select(sel: Selection) {
    this.selection = sel;
    this.local?.setItem(SELECTION, sel);
    this.keyRequired = null;
    this.emit(true);
  }

  /** Remember a key and switch to it. */
  useKey(k: StoredKey) {
    this.keys = addKey(this.keys, { ...k, key: k.key.trim() });
    writeKeys(this.local, this.keys);
    this.select(selectionOf(k));
  }

  /** Drop every stored key and go back to `default`. */
  forgetKeys() {
    this.keys = [];
    writeKeys(this.local, []);
    this.select(DEFAULT_PROJECT);
  }

  /** Forget one key (revoked, or refused by the server). */
  dropKey(key: string) {
    this.keys = this.keys.filter((k) => k.key !== key);
    writeKeys(this.local, this.keys);
    this.emit(true);
  }

  /**
   * Record the projects of pasted keys, learned from the key list (by prefix). The key in use
   * stays the same, so nothing reloads; a selection naming the key now names its project.
   */
  learnProjects(listed: { prefix: string; project_id: string; environment: string }[]) {
    let changed = false;
    this.keys = this.keys.map((k) => {
      if (k.project) return k;
      const m = listed.find((l) => l.prefix === keyPrefix(k.key));
      if (!m) return k;
      changed = true;
      if (this.selection === 'key:' + keyPrefix(k.key)) {
        this.selection = m.project_id;
        this.local?.setItem(SELECTION, m.project_id);
      }
      return { ...k, project: m.project_id, environment: m.environment };
    });
    if (!changed) return;
    writeKeys(this.local, this.keys);
    this.emit(false);
  }

  setAdminToken(token: string | null) {
    this.adminToken = token && token.trim() ? token.trim() : null;
    if (this.adminToken) this.session?.setItem(ADMIN, this.adminToken);
    else this.session?.removeItem(ADMIN);
    this.adminRequired = false;
    this.emit(false);
  }

  changed() {
    this.rev++;
    this.emit(false);
  }

  requireKey(message: string) {
    if (this.keyRequired === message) return;
    this.keyRequired = message;
    this.emit(false);
  }

  requireAdmin() {
    if (this.adminRequired) return;
    this.adminRequired = true;
    this.emit(false);
  }
}

export const auth = new AuthState(
  safe(() => localStorage),
  safe(() => sessionStorage),
);

/** Re-render when the credentials change. */
export function useAuth(): AuthState {
  const [, force] = useReducer((x: number) => x + 1, 0);
  useEffect(() => auth.subscribe(force as () => void), []);
  return auth;
}
