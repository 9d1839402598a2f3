// Shared by the browser tests and the benchmark: find free ports, start a real `tracellm
// start` on a temp data dir, post traces to it, and drive Debian's Chromium headless.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const WEB_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = resolve(WEB_DIR, '..');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const defaultBin = () => process.env.TRACELLM_BIN ?? join(REPO_DIR, 'target/debug/tracellm');

/**
 * Start the server binary; resolves once GET / on the API port answers. `args` are added to
 * `tracellm start` (e.g. `--require-auth`), `env` to its environment (e.g. TRACELLM_ADMIN_TOKEN).
 */
export async function startServer({ bin = defaultBin(), args = [], env = {} } = {}) {
  if (!existsSync(bin)) throw new Error(`tracellm binary not found at ${bin} (set TRACELLM_BIN or build it)`);
  const dataDir = mkdtempSync(join(tmpdir(), 'tracellm-web-'));
  const apiPort = await freePort();
  const dashPort = await freePort();
  const api = `http://127.0.0.1:${apiPort}`;
  const dashboard = `http://127.0.0.1:${dashPort}`;
  let output = '';
  let proc = null;

  async function launch() {
    const child = spawn(bin, ['start', '--host', '127.0.0.1', '--port', String(apiPort), '--dashboard-port', String(dashPort), '--data-dir', dataDir, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TRACELLM_LOG: process.env.TRACELLM_LOG ?? 'warn', ...env },
    });
    const state = { child, exited: null };
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('exit', (code, sig) => (state.exited = { code, sig }));
    proc = state;
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (state.exited) throw new Error(`tracellm exited early (${JSON.stringify(state.exited)}):\n${output}`);
      try {
        const r = await fetch(api + '/');
        if (r.ok) return;
      } catch {
        /* not up yet */
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`tracellm did not answer on ${api} within 20 s:\n${output}`);
      }
      await sleep(100);
    }
  }

  async function halt() {
    const state = proc;
    if (!state || state.exited) return;
    state.child.kill('SIGTERM');
    for (let i = 0; i < 50 && !state.exited; i++) await sleep(100);
    if (!state.exited) state.child.kill('SIGKILL');
    for (let i = 0; i < 20 && !state.exited; i++) await sleep(50);
  }

  await launch();
  return {
    bin,
    api,
    dashboard,
    dataDir,
    output: () => output,
    /** Post traces; with `key`, as that API key. */
    async post(docs, { key } = {}) {
      const body = Array.isArray(docs) ? { traces: docs } : docs;
      const headers = { 'content-type': 'application/json' };
      if (key) headers.authorization = 'Bearer ' + key;
      const r = await fetch(api + '/traces', { method: 'POST', headers, body: JSON.stringify(body) });
      const text = await r.text();
      if (r.status !== 202 && r.status !== 200) throw new Error(`POST /traces answered ${r.status}: ${text.slice(0, 500)}`);
      return JSON.parse(text);
    },
    async get(path) {
      const r = await fetch(api + path);
      if (!r.ok) throw new Error(`GET ${path} answered ${r.status}: ${(await r.text()).slice(0, 300)}`);
      return r.json();
    },
    /** Call the API with a method and headers; resolves to { status, body }. */
    async call(method, path, { headers = {} } = {}) {
      const r = await fetch(api + path, { method, headers });
      const text = await r.text();
      let body = null;
      try {
        body = text ? JSON.parse(text) : null;
      } catch {
        body = text;
      }
      return { status: r.status, body };
    },
    /** Stop and start again on the same ports and data dir. */
    async restart() {
      await halt();
      await launch();
    },
    async stop() {
      await halt();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A persistent Chromium context on a fresh profile directory (Playwright takes the profile
 * as userDataDir rather than a --user-data-dir flag). Returns the context; close() also
 * removes the profile.
 */
export async function launchBrowser({ viewport = { width: 1440, height: 900 }, colorScheme = 'light' } = {}) {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}`);
  const profile = mkdtempSync(join(tmpdir(), 'tracellm-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport,
    colorScheme,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const close = context.close.bind(context);
  context.close = async () => {
    await close();
    rmSync(profile, { recursive: true, force: true });
  };
  return context;
}

/**
 * The origin the browser opens. Normally the binary's own dashboard port. With
 * TRACELLM_WEB_PREVIEW=1 the committed web/dist is served by Vite's preview server in front
 * of the same real API instead (for a binary built before web/dist could be embedded).
 */
export async function dashboardOrigin(server) {
  if (process.env.TRACELLM_WEB_PREVIEW === '1') {
    const { preview } = await import('vite');
    const port = await freePort();
    const pv = await preview({
      root: WEB_DIR,
      logLevel: 'warn',
      preview: {
        port,
        strictPort: true,
        host: '127.0.0.1',
        proxy: { '/api': { target: server.api, ws: true, changeOrigin: true, rewrite: (p) => p.replace(/^\/api/, '') || '/' } },
      },
    });
    return {
      origin: `http://127.0.0.1:${port}`,
      close: async () => {
        pv.httpServer.closeAllConnections?.();
        await pv.close();
      },
    };
  }
  const r = await fetch(server.dashboard + '/');
  const body = await r.text();
  if (!r.ok || !body.includes('<div id="app">'))
    throw new Error(
      `the dashboard port ${server.dashboard} does not serve web/dist (HTTP ${r.status}: ${body.slice(0, 160)}). ` +
        'The binary must embed web/dist (a debug build reads it at run time from the checkout it was built in); ' +
        'TRACELLM_WEB_PREVIEW=1 serves it beside the real API instead.',
    );
  // A release build embeds the bundle it was built with, and a debug build reads web/dist at run
  // time from the checkout it was built in, which need not be this one. Either way the pages
  // under test must be this web/dist.
  const ours = readFileSync(join(WEB_DIR, 'dist/index.html'), 'utf8');
  if (body !== ours)
    throw new Error(
      `${server.bin} serves a different dashboard bundle than ${join(WEB_DIR, 'dist')} (built from another ` +
        'web/dist, or a debug build from another checkout). Build tracellm here, or point TRACELLM_BIN at one that serves this bundle.',
    );
  return { origin: server.dashboard, close: async () => {} };
}
