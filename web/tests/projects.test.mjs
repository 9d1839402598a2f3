// Projects and API keys in the dashboard, against real servers: one on a loopback bind (admin
// routes open to the person at the machine) and one started with --require-auth.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { dashboardOrigin, launchBrowser, startServer, WEB_DIR } from './harness.mjs';
import { agentTrace } from './fixtures.mjs';

const ARTIFACTS = join(WEB_DIR, 'test-artifacts');
mkdirSync(ARTIFACTS, { recursive: true });
const KEY_RE = /^tlm_sk_[A-Za-z0-9]{32}$/;

async function shot(page, name) {
  await page.waitForTimeout(250);
  await page.screenshot({ path: join(ARTIFACTS, name + '.png') });
}

async function clientNav(page, path) {
  await page.evaluate((p) => {
    history.pushState(null, '', p);
    dispatchEvent(new PopStateEvent('popstate'));
  }, path);
}

const listedIds = (page) =>
  page.$$eval('[data-testid="traces-table"] tbody tr', (rows) => rows.map((r) => r.getAttribute('data-trace-id')));

describe('projects on a loopback server', () => {
  let server, dash, ctx, page;
  const errors = [];
  before(async () => {
    server = await startServer();
    dash = await dashboardOrigin(server);
    ctx = await launchBrowser({ viewport: { width: 1440, height: 900 } });
    page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on('pageerror', (e) => errors.push(e.message));
  });
  after(async () => {
    await ctx?.close();
    await dash?.close();
    await server?.stop();
  });

  test('create a project, see its key once, switch to it, see only its traces, revoke a key', async () => {
    const T = Date.now();
    const inDefault = agentTrace({ name: 'default-agent', t0: T - 40_000 });
    await server.post([inDefault]);

    await page.goto(dash.origin + '/settings');
    await page.waitForSelector('[data-testid="projects-table"] tr[data-project-id="default"]');
    await page.fill('[data-testid="create-project"] input[name="name"]', 'Checkout Bot');
    await page.selectOption('[data-testid="create-project"] select[name="environment"]', 'development');
    await page.fill('[data-testid="create-project"] input[name="description"]', 'The checkout assistant');
    await page.click('[data-testid="create-project"] button[type="submit"]');
    await page.waitForSelector('[data-testid="new-key"]');
    const secret = (await page.textContent('[data-testid="new-key-secret"]')).trim();
    assert.match(secret, KEY_RE);
    assert.match(await page.textContent('[data-testid="new-key"]'), /will not be shown again/);
    assert.ok(await page.$('[data-testid="new-key"] button[title="Copy key"]'), 'a copy button');
    await page.waitForSelector('[data-testid="projects-table"] tr[data-project-id="checkout-bot"]');
    await page.evaluate(() => document.querySelector('[data-testid="projects-card"]').scrollIntoView({ block: 'start' }));
    await shot(page, 'settings-new-key');
    await page.click('[data-testid="new-key-done"]');
    await page.waitForSelector('[data-testid="new-key"]', { state: 'detached' });
    assert.ok(!(await page.content()).includes(secret), 'the secret is gone from the page');

    // Switching makes the dashboard a key of its own for the project.
    await page.selectOption('[data-testid="project-select"]', 'checkout-bot');
    await page.waitForFunction(() => document.querySelector('[data-testid="project-key"]')?.textContent?.includes('development'));
    const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('tracellm.keys') ?? '[]'));
    assert.equal(stored.length, 1);
    assert.equal(stored[0].project, 'checkout-bot');
    assert.equal(stored[0].source, 'dashboard');
    assert.notEqual(stored[0].key, secret);

    const mine = agentTrace({ name: 'checkout-agent', model: 'gpt-4o-mini', question: 'Where is my order?', t0: T - 20_000 });
    await server.post([mine], { key: secret });
    await clientNav(page, '/traces');
    await page.waitForSelector(`tr[data-trace-id="${mine.id}"]`);
    assert.deepEqual(await listedIds(page), [mine.id]);

    // The live stream follows the project: its new trace appears, default's does not.
    await page.waitForSelector('.sidebar [data-live-state="open"]');
    const mine2 = agentTrace({ name: 'checkout-agent', question: 'Cancel my order', t0: T - 5_000 });
    const other2 = agentTrace({ name: 'default-agent', t0: T - 4_000 });
    await server.post([other2]);
    await server.post([mine2], { key: secret });
    await page.waitForSelector(`tr[data-trace-id="${mine2.id}"]`);
    await page.waitForTimeout(400);
    const ids = await listedIds(page);
    assert.ok(!ids.includes(other2.id) && !ids.includes(inDefault.id), `only checkout-bot traces listed: ${ids}`);
    await shot(page, 'project-switched-traces');

    // Revoke the project's first key in Settings.
    const keys = await server.call('GET', '/api-keys?project=checkout-bot');
    const first = keys.body.api_keys.find((k) => k.prefix === secret.slice(0, 11));
    await clientNav(page, '/settings');
    const row = `[data-testid="keys-table"] tr[data-key-id="${first.id}"]`;
    await page.waitForSelector(row + '[data-key-status="active"]');
    assert.equal(await page.$$eval('[data-testid="keys-table"] tbody tr', (r) => r.length), 2);
    await page.click(row + ' button:has-text("Revoke…")');
    await page.waitForSelector(row + ' [data-testid="revoke-confirm"]');
    await page.evaluate(() => document.querySelector('[data-testid="keys-card"]').scrollIntoView({ block: 'center' }));
    await shot(page, 'settings-revoke-confirm');
    await page.click(row + ' [data-testid="revoke-confirm"] button:has-text("Revoke")');
    await page.waitForSelector(row + '[data-key-status="revoked"]');
    assert.match(await page.textContent(row + ' [data-field="status"]'), /revoked/);
    await page.evaluate(() => document.querySelector('[data-testid="projects-card"]').scrollIntoView({ block: 'start' }));
    await shot(page, 'settings-keys');
    const refused = await fetch(server.api + '/traces', { headers: { authorization: 'Bearer ' + secret } });
    assert.equal(refused.status, 401);

    // Revoking the dashboard's own key: the traces page asks for a key rather than showing
    // default's traces, and the dashboard can make itself a new one.
    const ownRow = '[data-testid="keys-table"] tr:has-text("used here")';
    await page.click(ownRow + ' button:has-text("Revoke…")');
    await page.click(ownRow + ' [data-testid="revoke-confirm"] button:has-text("Revoke")');
    await page.waitForFunction(() => JSON.parse(localStorage.getItem('tracellm.keys') ?? '[]').length === 0);
    await clientNav(page, '/traces');
    await page.waitForSelector('[data-testid="key-entry"]');
    assert.match(await page.textContent('[data-testid="key-entry"]'), /No key of project checkout-bot/);
    assert.match(await page.textContent('[data-testid="key-entry"] h2'), /A key of checkout-bot is needed/);
    assert.equal(await page.$(`tr[data-trace-id="${inDefault.id}"]`), null);
    await shot(page, 'key-missing-for-project');
    await page.click('[data-testid="key-create-own"]');
    await page.waitForSelector(`tr[data-trace-id="${mine.id}"]`);
    assert.ok(!(await listedIds(page)).includes(inDefault.id));

    // Forgetting keys goes back to default.
    await page.click('[data-testid="forget-keys"]');
    await page.waitForFunction(() => document.querySelector('[data-testid="project-select"]')?.value === 'default');
    assert.equal(await page.evaluate(() => localStorage.getItem('tracellm.keys')), null);
    assert.deepEqual(errors, []);
  });
});

describe('a server started with --require-auth', () => {
  const TOKEN = 'web-test-admin-token-' + Math.random().toString(36).slice(2);
  let server, dash, ctx, page, key, trace;
  const errors = [];
  before(async () => {
    server = await startServer({ args: ['--require-auth'], env: { TRACELLM_ADMIN_TOKEN: TOKEN } });
    dash = await dashboardOrigin(server);
    const created = await server.call('POST', '/projects?name=secure-app&environment=production', { headers: { 'X-Admin-Token': TOKEN } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    key = created.body.api_key.key;
    trace = agentTrace({ name: 'secure-agent', question: 'Summarize the audit log' });
    await server.post([trace], { key });
    ctx = await launchBrowser({ viewport: { width: 1440, height: 900 } });
    page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on('pageerror', (e) => errors.push(e.message));
  });
  after(async () => {
    await ctx?.close();
    await dash?.close();
    await server?.stop();
  });

  test('the page asks for a key, refuses a malformed one and shows the traces with a valid one', async () => {
    await page.goto(dash.origin + '/traces');
    await page.waitForSelector('[data-testid="key-entry"]');
    assert.match(await page.textContent('[data-testid="key-entry"] h2'), /This server requires an API key/);
    await shot(page, 'key-required');

    await page.fill('[data-testid="key-input"]', 'tlm_sk_tooShort');
    await page.click('[data-testid="key-submit"]');
    await page.waitForSelector('[data-testid="key-problem"]');
    assert.match(await page.textContent('[data-testid="key-problem"]'), /32 letters and digits/);
    assert.equal(await page.evaluate(() => localStorage.getItem('tracellm.keys')), null, 'a malformed key is not kept');
    await shot(page, 'key-malformed');

    // Well formed but unknown to the server: refused with its message.
    await page.fill('[data-testid="key-input"]', 'tlm_sk_' + 'x'.repeat(32));
    await page.click('[data-testid="key-submit"]');
    await page.waitForFunction(() => document.querySelector('[data-testid="key-entry"]')?.textContent?.includes('was refused'));

    await page.fill('[data-testid="key-input"]', key);
    await page.click('[data-testid="key-submit"]');
    await page.waitForSelector(`tr[data-trace-id="${trace.id}"]`);
    assert.equal(await page.$('[data-testid="key-entry"]'), null);
    assert.match(await page.textContent('[data-testid="project-key"]'), new RegExp(key.slice(0, 11)));
    const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('tracellm.keys') ?? '[]'));
    assert.deepEqual(stored.map((k) => k.key), [key], 'the refused key was dropped, the valid one kept');
    await page.waitForSelector('.sidebar [data-live-state="open"]');
    await shot(page, 'key-accepted-traces');
  });

  test('Settings ask for the admin token, then list projects', async () => {
    await clientNav(page, '/settings');
    await page.waitForSelector('[data-testid="admin-token-form"]');
    await page.evaluate(() => document.querySelector('[data-testid="projects-card"]').scrollIntoView({ block: 'start' }));
    await shot(page, 'settings-admin-token');
    await page.fill('[data-testid="admin-token-input"]', TOKEN);
    await page.click('[data-testid="admin-token-form"] button[type="submit"]');
    await page.waitForSelector('[data-testid="projects-table"] tr[data-project-id="secure-app"]');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tracellm.adminToken')), TOKEN);
    assert.equal(await page.evaluate(() => localStorage.getItem('tracellm.adminToken')), null);
    // With the admin token the pasted key's project is known: the switcher and the keys list name it.
    await page.waitForFunction(() => document.querySelector('[data-testid="project-select"]')?.value === 'secure-app');
    await page.waitForSelector(`[data-testid="keys-table"] tr[data-key-status="active"]`);
    assert.match(await page.textContent('[data-testid="keys-card"] h2'), /secure-app/);
    await shot(page, 'settings-admin-projects');
    assert.deepEqual(errors, []);
  });
});
