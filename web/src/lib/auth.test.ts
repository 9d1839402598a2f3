import { describe, expect, test } from 'vitest';
import { addKey, AuthState, isKey, keyFor, keyPrefix, keyProblem, readKeys, selectionOf, writeKeys, type KVStore, type StoredKey } from './auth';

class Mem implements KVStore {
  m = new Map<string, string>();
  getItem(k: string) {
    return this.m.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.m.set(k, v);
  }
  removeItem(k: string) {
    this.m.delete(k);
  }
}

const K1 = 'tlm_sk_' + 'a'.repeat(16) + 'B'.repeat(8) + '01234567';
const K2 = 'tlm_sk_' + 'Zz9'.repeat(10) + 'Q1';

describe('key format', () => {
  test('accepts tlm_sk_ and 32 letters and digits', () => {
    expect(K1.length).toBe(39);
    expect(isKey(K1)).toBe(true);
    expect(isKey('  ' + K2 + '\n')).toBe(true);
    expect(keyProblem(K1)).toBeNull();
  });
  test('says what is wrong', () => {
    expect(keyProblem('')).toMatch(/Paste/);
    expect(keyProblem('sk-' + 'a'.repeat(32))).toMatch(/starts with tlm_sk_/);
    expect(keyProblem('tlm_sk_abc')).toMatch(/32 letters and digits; this one has 3/);
    expect(keyProblem('tlm_sk_' + 'a'.repeat(31) + '-')).toMatch(/only letters and digits/);
    expect(keyProblem(K1 + 'x')).toMatch(/this one has 33/);
    expect(isKey(K1 + 'x')).toBe(false);
  });
  test('prefix matches what the server lists', () => {
    expect(keyPrefix(K1)).toBe('tlm_sk_aaaa');
  });
});

describe('stored keys', () => {
  const a: StoredKey = { key: K1, project: 'shop', environment: 'development', source: 'dashboard' };
  const b: StoredKey = { key: K2, project: null, environment: null, source: 'entered' };

  test('round trip, ignoring garbage', () => {
    const s = new Mem();
    writeKeys(s, [a, b]);
    expect(readKeys(s)).toEqual([a, b]);
    s.setItem('tracellm.keys', '{not json');
    expect(readKeys(s)).toEqual([]);
    s.setItem('tracellm.keys', JSON.stringify([{ key: 'nope' }, a]));
    expect(readKeys(s)).toEqual([a]);
    writeKeys(s, []);
    expect(s.getItem('tracellm.keys')).toBeNull();
    expect(readKeys(null)).toEqual([]);
  });

  test('a new key of a project replaces the old one', () => {
    const a2 = { ...a, key: K2 };
    expect(addKey([a], a2)).toEqual([a2]);
    expect(addKey([a], b)).toEqual([a, b]);
  });

  test('selections name a project or a pasted key', () => {
    expect(selectionOf(a)).toBe('shop');
    expect(selectionOf(b)).toBe('key:' + keyPrefix(K2));
    expect(keyFor([a, b], 'shop')).toBe(a);
    expect(keyFor([a, b], selectionOf(b))).toBe(b);
    expect(keyFor([a, b], 'default')).toBeNull();
  });
});

describe('AuthState', () => {
  test('selection and keys persist in local storage, the admin token in session storage', () => {
    const local = new Mem();
    const session = new Mem();
    const st = new AuthState(local, session);
    expect(st.selection).toBe('default');
    expect(st.key).toBeNull();
    let calls = 0;
    st.subscribe(() => calls++);
    const e0 = st.epoch;
    st.useKey({ key: K1, project: 'shop', environment: 'development', source: 'dashboard' });
    expect(st.key).toBe(K1);
    expect(st.epoch).toBe(e0 + 1);
    st.setAdminToken(' secret ');
    expect(session.getItem('tracellm.adminToken')).toBe('secret');
    expect(local.getItem('tracellm.adminToken')).toBeNull();

    const again = new AuthState(local, session);
    expect(again.selection).toBe('shop');
    expect(again.key).toBe(K1);
    expect(again.adminToken).toBe('secret');

    st.requireKey('an API key is required');
    expect(st.keyRequired).toBe('an API key is required');
    st.select('default');
    expect(st.keyRequired).toBeNull();
    st.forgetKeys();
    expect(st.keys).toEqual([]);
    expect(new AuthState(local, session).keys).toEqual([]);
    st.setAdminToken(null);
    expect(session.getItem('tracellm.adminToken')).toBeNull();
    expect(calls).toBeGreaterThan(4);
  });

  test('a pasted key learns its project from the key list without reloading', () => {
    const st = new AuthState(new Mem(), new Mem());
    st.useKey({ key: K2, project: null, environment: null, source: 'entered' });
    expect(st.selection).toBe('key:' + keyPrefix(K2));
    const e = st.epoch;
    st.learnProjects([{ prefix: keyPrefix(K1), project_id: 'x', environment: 'staging' }]);
    expect(st.keys[0].project).toBeNull();
    st.learnProjects([{ prefix: keyPrefix(K2), project_id: 'secure-app', environment: 'production' }]);
    expect(st.selection).toBe('secure-app');
    expect(st.key).toBe(K2);
    expect(st.current?.environment).toBe('production');
    expect(st.epoch).toBe(e);
  });
});
