// Browser tests: Debian's Chromium (headless, via playwright-core) against a real
// `tracellm start` on free ports with a temp data dir. Data goes in through the real API.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { dashboardOrigin, launchBrowser, startServer, WEB_DIR } from './harness.mjs';
import { agentTrace, bigTrace, failingTrace } from './fixtures.mjs';

const ARTIFACTS = join(WEB_DIR, 'test-artifacts');
mkdirSync(ARTIFACTS, { recursive: true });
const run = promisify(execFile);

let server;
let dash;
let ctx;
let page;
const pageErrors = [];

async function shot(name) {
  await page.waitForTimeout(250); // let transitions settle
  await page.screenshot({ path: join(ARTIFACTS, name + '.png') });
}

/** Navigate inside the app without a page load, as a click on a link would. */
async function clientNav(path) {
  await page.evaluate((p) => {
    history.pushState(null, '', p);
    dispatchEvent(new PopStateEvent('popstate'));
  }, path);
}

async function waitLive() {
  await page.waitForSelector('.sidebar [data-live-state="open"]', { timeout: 10_000 });
}

const rowSel = (id) => `tr[data-trace-id="${id}"]`;
const listedIds = () => page.$$eval('[data-testid="traces-table"] tbody tr', (rows) => rows.map((r) => r.getAttribute('data-trace-id')));

before(async () => {
  server = await startServer();
  dash = await dashboardOrigin(server);
  ctx = await launchBrowser({ viewport: { width: 1440, height: 900 } });
  page = ctx.pages()[0] ?? (await ctx.newPage());
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await ctx?.close();
  await dash?.close();
  await server?.stop();
});

const T = Date.now();
const alpha = agentTrace({
  name: 'support-agent',
  model: 'gpt-4o',
  question: 'How do I rotate my kangaroo API key?',
  answer: 'Create a new key, deploy it, then revoke the old one.',
  session_id: 'sess-42',
  user_id: 'alice',
  tags: ['prod'],
  t0: T - 60_000,
});
const beta = agentTrace({
  name: 'research-agent',
  model: 'claude-3-5-sonnet-20241022',
  question: 'Summarize the incident report',
  answer: 'Failover took four minutes; no data was lost.',
  session_id: 'sess-7',
  user_id: 'bob',
  tags: ['staging'],
  t0: T - 50_000,
});
const gamma = agentTrace({ name: 'translate-agent', model: 'gpt-4o-mini', question: 'Translate good morning', answer: 'Bonjour', user_id: 'carol', t0: T - 40_000 });
const broken = failingTrace({ name: 'billing-agent', model: 'gpt-4o-mini', t0: T - 30_000, reason: 'Rate limit reached for requests' });

describe('dashboard against a real server', () => {
  test('with no traces yet, the pages say how to send the first one', async () => {
    await page.goto(dash.origin + '/traces');
    await page.waitForSelector('[data-state="no-traces"]');
    const text = await page.textContent('[data-state="no-traces"]');
    assert.match(text, /No traces yet/);
    assert.match(text, /curl -X POST/);
    await shot('empty-traces');
    await page.goto(dash.origin + '/');
    await page.waitForSelector('[data-state="no-traces"]');
    await shot('empty-overview');
  });

  test('the curl example of the empty state really ingests a trace, which appears live', async () => {
    await page.goto(dash.origin + '/traces');
    await waitLive();
    const code = await page.textContent('[data-state="no-traces"] pre');
    await run('sh', ['-c', code.replace(/^curl /, 'curl -sf ')]);
    await page.waitForSelector('[data-testid="traces-table"] tbody tr', { timeout: 10_000 });
    const names = await page.$$eval('.trace-name', (els) => els.map((e) => e.textContent));
    assert.deepEqual(names, ['hello-tracellm']);
  });

  test('the list shows ingested traces, newest first', async () => {
    const res = await server.post([alpha, beta, gamma, broken]);
    assert.equal(res.accepted, 4);
    await page.goto(dash.origin + '/traces');
    await page.waitForSelector(rowSel(broken.id));
    const ids = await listedIds();
    for (const t of [alpha, beta, gamma, broken]) assert.ok(ids.includes(t.id), `${t.id} listed`);
    assert.ok(ids.indexOf(broken.id) < ids.indexOf(alpha.id), 'newest first');
    const row = await page.textContent(rowSel(alpha.id));
    assert.match(row, /support-agent/);
    assert.match(row, /gpt-4o/);
    assert.match(row, /kangaroo/);
    await shot('traces');
  });

  test('a trace posted while the page is open appears without reload', async () => {
    await page.goto(dash.origin + '/traces');
    await waitLive();
    await page.evaluate(() => ((window).__sameDocument = true));
    const late = agentTrace({ name: 'late-arrival', question: 'Are you live?', answer: 'Yes.', t0: Date.now() - 1000 });
    await server.post(late);
    await page.waitForSelector(rowSel(late.id), { timeout: 10_000 });
    assert.equal(await page.evaluate(() => (window).__sameDocument), true, 'no reload happened');
    assert.equal((await listedIds())[0], late.id, 'the new trace is at the top');
  });

  test('after a server restart the list catches up with traces stored meanwhile', async () => {
    await page.goto(dash.origin + '/traces');
    await waitLive();
    await server.restart();
    const meanwhile = agentTrace({ name: 'stored-while-reconnecting', t0: Date.now() - 500 });
    await server.post(meanwhile);
    await page.waitForSelector(rowSel(meanwhile.id), { timeout: 15_000 });
    await waitLive();
  });

  test('filters and search narrow the list, and live in the URL', async () => {
    await page.goto(dash.origin + '/traces?status=error');
    await page.waitForSelector(rowSel(broken.id));
    assert.deepEqual(await listedIds(), [broken.id]);

    await page.goto(dash.origin + '/traces');
    await page.waitForSelector(rowSel(alpha.id));
    await page.selectOption('select[name="model"]', 'claude-3-5-sonnet-20241022');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="traces-table"] tbody tr').length === 1);
    assert.deepEqual(await listedIds(), [beta.id]);
    assert.match(page.url(), /model=claude-3-5-sonnet-20241022/);

    await page.goto(dash.origin + '/traces');
    await page.waitForSelector(rowSel(alpha.id));
    await page.fill('input[name="user_id"]', 'carol');
    await page.press('input[name="user_id"]', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="traces-table"] tbody tr').length === 1);
    assert.deepEqual(await listedIds(), [gamma.id]);

    await page.goto(dash.origin + '/traces?tag=staging');
    await page.waitForSelector(rowSel(beta.id));
    assert.deepEqual(await listedIds(), [beta.id]);

    await page.goto(dash.origin + '/traces?session_id=sess-42');
    await page.waitForSelector(rowSel(alpha.id));
    assert.deepEqual(await listedIds(), [alpha.id]);

    await page.goto(dash.origin + '/traces');
    await page.waitForSelector(rowSel(alpha.id));
    await page.keyboard.press('/');
    await page.keyboard.type('kangaroo');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="traces-table"] tbody tr').length === 1, null, { timeout: 5000 });
    assert.deepEqual(await listedIds(), [alpha.id]);
    assert.match(page.url(), /q=kangaroo/);
    await shot('traces-search');

    await page.goto(dash.origin + '/traces?q=zzzznomatch');
    await page.waitForSelector('text=No traces match these filters');
  });

  test('keyset paging visits every trace once', async () => {
    const many = [];
    for (let k = 0; k < 60; k++) many.push(agentTrace({ name: `paging-${k}`, tags: ['paging'], t0: T - 3_600_000 - k * 1000 }));
    await server.post(many);
    await page.goto(dash.origin + '/traces?tag=paging');
    await page.waitForSelector('[data-testid="traces-table"] tbody tr');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="traces-table"] tbody tr').length === 50);
    // The next page loads when the list's end scrolls into view (the "Load more" button is the
    // fallback for when it does not); clicking the button raced with that load and could find
    // it gone. Scroll like a reader does.
    await page.locator('.list-foot').scrollIntoViewIfNeeded();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="traces-table"] tbody tr').length === 60);
    const ids = await listedIds();
    assert.equal(new Set(ids).size, 60);
    assert.match(await page.textContent('.list-foot'), /end of list/);
  });

  test('keyboard: j/k move through the list and Enter opens a trace', async () => {
    await page.goto(dash.origin + '/traces?tag=prod');
    await page.waitForSelector(rowSel(alpha.id));
    await page.keyboard.press('j');
    await page.waitForSelector('tr.selected');
    await page.keyboard.press('Enter');
    await page.waitForURL(/\/traces\/tr_/);
    await page.waitForSelector('.wf-row');
  });

  test('the inspector shows one waterfall bar per span and the conversation of an LLM span', async () => {
    const full = await server.get('/traces/' + alpha.id);
    await page.goto(dash.origin + '/traces/' + alpha.id);
    await page.waitForSelector('.wf[data-painted="true"]');
    const bars = await page.$$('.wf-bar');
    assert.equal(bars.length, full.spans.length);
    assert.equal(bars.length, alpha.spans.length);
    const facts = await page.textContent('[data-testid="trace-facts"]');
    assert.match(facts, new RegExp(alpha.id));

    // the second LLM call holds the whole conversation
    const llm = alpha.spans[4];
    await page.click(`.wf-row[data-span-id="${llm.id}"]`);
    await page.waitForSelector(`[data-testid="span-detail"][data-span-id="${llm.id}"]`);
    assert.match(page.url(), new RegExp(`span=${llm.id}`));
    const convo = page.locator('[data-testid="conversation"]');
    assert.match(await convo.locator('.msg[data-role="system"]').textContent(), /concise support agent/);
    assert.match(await convo.locator('.msg[data-role="user"]').textContent(), /kangaroo API key/);
    assert.match(await convo.locator('.msg[data-role="tool"]').textContent(), /kb-12/);
    assert.match(await convo.locator('.msg-output[data-role="assistant"]').textContent(), /revoke the old one/);
    const detail = await page.textContent('[data-testid="span-detail"]');
    assert.match(detail, /180/); // 142 + 38 tokens
    assert.match(detail, /gpt-4o/);
    await shot('inspector-llm');

    // a tool span shows its arguments and result
    await page.click(`.wf-row[data-span-id="${alpha.spans[3].id}"]`);
    await page.waitForSelector('[data-testid="tool-arguments"]');
    assert.match(await page.textContent('[data-testid="tool-result"]'), /kb-12/);

    // zoom the shared time axis to the selected tool span: spans outside the window lose their bar
    await page.keyboard.press('z');
    await page.waitForSelector('[data-testid="zoom-reset"]');
    assert.equal(await page.$$eval('.wf-off', (r) => r.length), 1, 'retrieve_docs lies before the window');
    await page.keyboard.press('0');
    await page.waitForSelector('[data-testid="zoom-reset"]', { state: 'detached' });
    // or drag across the axis; double-click shows the whole trace again
    const box = await page.locator('[data-testid="wf-axis"]').boundingBox();
    await page.mouse.move(box.x + box.width * 0.1, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2, { steps: 4 });
    await page.mouse.up();
    await page.waitForSelector('[data-testid="zoom-reset"]');
    assert.ok((await page.$$eval('.wf-off', (r) => r.length)) >= 1);
    await page.dblclick('[data-testid="wf-axis"]');
    await page.waitForSelector('[data-testid="zoom-reset"]', { state: 'detached' });

    // keyboard: up moves to the previous span; the URL follows (shareable)
    await page.keyboard.press('k');
    await page.waitForURL(new RegExp(`span=${alpha.spans[2].id}`));
    // a shared link opens with that span selected
    await page.goto(dash.origin + `/traces/${alpha.id}?span=${llm.id}`);
    await page.waitForSelector(`[data-testid="span-detail"][data-span-id="${llm.id}"]`);
  });

  test('the inspector highlights errors and retries of a failed run', async () => {
    await page.goto(dash.origin + '/traces/' + broken.id);
    await page.waitForSelector('.wf[data-painted="true"]');
    assert.match(await page.textContent('[data-testid="failure-reason"]'), /Rate limit reached/);
    assert.equal(await page.$$eval('.wf-row.is-retry', (r) => r.length), 2);
    await page.keyboard.press('n');
    await page.waitForSelector('[data-testid="span-error"]');
    assert.match(await page.textContent('[data-testid="span-error"]'), /RateLimitError/);
    await shot('inspector-failure');

    // find spans by name: matches are counted and Enter walks through them
    await page.keyboard.press('Escape'); // back to the trace summary
    await page.keyboard.press('/');
    await page.keyboard.type('get_invoice');
    assert.equal(await page.textContent('[data-testid="find-count"]'), '–/3');
    assert.equal(await page.$$eval('.wf-row.is-match', (r) => r.length), 3);
    await page.keyboard.press('Enter');
    await page.waitForURL(new RegExp(`span=${broken.spans[2].id}`));
    assert.equal(await page.textContent('[data-testid="find-count"]'), '1/3');
    await page.keyboard.press('Enter');
    await page.waitForURL(new RegExp(`span=${broken.spans[3].id}`));
  });

  test('analytics charts render with values from the API', async () => {
    const since = new Date(Date.now() - 86_400_000 - 60_000);
    await page.goto(dash.origin + '/analytics');
    await page.waitForSelector('[data-chart="volume"] canvas');
    const data = await server.get(`/analytics?since=${since.toISOString().replace(/\.\d+Z$/, 'Z')}&bucket=1h`);
    for (const id of ['volume', 'latency', 'tokens', 'cost']) assert.ok(await page.$(`[data-chart="${id}"] canvas`), `${id} chart drawn`);
    assert.equal(await page.textContent('[data-stat="traces"] .stat-value'), data.totals.traces.toLocaleString('en-US'));
    assert.equal(await page.textContent('[data-stat="errors"] .stat-value'), data.totals.errors.toLocaleString('en-US'));
    // the chart's data table holds the API's per-bucket counts
    const plotted = await page.$$eval('[data-chart-values="volume"] tbody tr', (rows) =>
      rows.map((r) => Number(r.querySelectorAll('td')[1].getAttribute('data-value'))),
    );
    assert.equal(plotted.reduce((a, b) => a + b, 0), data.timeseries.reduce((a, p) => a + p.traces, 0));
    assert.equal(plotted.reduce((a, b) => a + b, 0), data.totals.traces);
    // one row per model, with the API's trace counts
    for (const m of data.by_model) {
      const cell = await page.textContent(`[data-testid="by-model"] tr[data-model="${m.model ?? ''}"] [data-col="traces"]`);
      assert.equal(cell, m.traces.toLocaleString('en-US'));
    }
    await shot('analytics');
  });

  test('failures lists a failed trace with its reason', async () => {
    const api = await server.get('/failures');
    const entry = api.failures.find((f) => f.id === broken.id);
    assert.ok(entry, 'the API lists the failed trace');
    await page.goto(dash.origin + '/failures');
    await page.waitForSelector(`[data-testid="failures"] [data-trace-id="${broken.id}"]`);
    const text = await page.textContent(`[data-trace-id="${broken.id}"]`);
    assert.ok(text.includes(entry.failure_reason), `shows "${entry.failure_reason}"`);
    assert.match(text, /billing-agent/);
    await shot('failures');
    await page.click(`[data-trace-id="${broken.id}"]`);
    await page.waitForURL(new RegExp(`/traces/${broken.id}`));
  });

  test('the overview sums up the API figures and the latest traces', async () => {
    await page.goto(dash.origin + '/');
    await page.waitForSelector('[data-testid="overview-stats"]');
    const data = await server.get(`/analytics?since=${new Date(Date.now() - 86_400_000).toISOString().replace(/\.\d+Z$/, 'Z')}&bucket=1h`);
    assert.equal(await page.textContent('[data-stat="traces"] .stat-value'), data.totals.traces.toLocaleString('en-US'));
    await page.waitForSelector('[data-chart="overview-volume"] canvas');
    await page.waitForSelector('[data-testid="traces-table"] tbody tr');
    await shot('overview');
  });

  test('live logs show the WebSocket stream as it happens', async () => {
    await page.goto(dash.origin + '/live-logs');
    await page.waitForSelector('[data-live-state="open"]');
    await page.waitForSelector('.log-line[data-type="system.connected"]');
    const t = failingTrace({ name: 'live-log-check', t0: Date.now() - 500 });
    await server.post(t);
    await page.waitForSelector(`.log-line[data-type="trace.created"] >> text=live-log-check`, { timeout: 10_000 });
    await page.click('.log-line[data-type="trace.created"]');
    await page.waitForSelector('.logs-detail');
    await shot('live-logs');
  });

  test('settings show the store information from the server', async () => {
    const health = await server.get('/');
    await page.goto(dash.origin + '/settings');
    await page.waitForSelector('[data-testid="server-info"]');
    assert.equal(await page.textContent('[data-field="store"]'), health.store);
    assert.equal(await page.textContent('[data-field="version"]'), String(health.version));
    await shot('settings');
  });

  test('light and dark themes', async () => {
    await page.goto(dash.origin + '/traces/' + alpha.id + '?span=' + alpha.spans[2].id);
    await page.waitForSelector('.wf[data-painted="true"]');
    const before = await page.evaluate(() => document.documentElement.dataset.theme);
    await page.click('[data-testid="theme-toggle"]');
    const afterToggle = await page.evaluate(() => document.documentElement.dataset.theme);
    assert.notEqual(before, afterToggle);
    await page.evaluate(() => localStorage.setItem('tracellm.theme', 'dark'));
    await page.reload();
    await page.waitForSelector('.wf[data-painted="true"]');
    assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'dark');
    await shot('inspector-dark');
    await page.goto(dash.origin + '/analytics');
    await page.waitForSelector('[data-chart="volume"] canvas');
    await shot('analytics-dark');
    await page.evaluate(() => localStorage.setItem('tracellm.theme', 'light'));
  });

  test('a big trace comes without payloads; a span\'s content loads when it is opened', async () => {
    const big = bigTrace(1500, { name: 'big-agent-payloads' });
    await server.post(big);
    const llm = big.spans.find((sp) => sp.kind === 'llm');
    const tool = big.spans.find((sp) => sp.kind === 'tool');
    const spanPath = (sid) => `/api/traces/${big.id}/spans/${sid}`;
    const reqs = [];
    const onReq = (r) => {
      const u = new URL(r.url());
      if (u.pathname.startsWith('/api/traces/' + big.id)) reqs.push(u.pathname + u.search);
    };
    page.on('request', onReq);
    try {
      // opened by URL: the span count is unknown, so the trace is fetched without payloads first
      await page.goto(dash.origin + '/traces/' + big.id);
      await page.waitForSelector('.wf[data-painted="true"]', { timeout: 30_000 });
      assert.deepEqual(reqs, [`/api/traces/${big.id}?payloads=false`], 'one fetch, without payloads');
      assert.match(await page.textContent('.wf-toolbar'), /1,500 spans.*content loads per span/);

      // opening an LLM span loads it whole; its conversation, events and JSON show the content
      await page.click(`.wf-row[data-span-id="${llm.id}"]`);
      await page.waitForSelector(`[data-testid="span-detail"][data-span-id="${llm.id}"][data-payload="ready"]`);
      assert.ok(reqs.includes(spanPath(llm.id)), `requested ${spanPath(llm.id)}`);
      const convo = page.locator('[data-testid="conversation"]');
      assert.match(await convo.locator('.msg[data-role="user"]').textContent(), /Step 3: decide the next action\./);
      assert.match(await convo.locator('.msg-output[data-role="assistant"]').textContent(), /Call tool_3\./);
      assert.match(await page.textContent('[data-testid="span-detail"]'), /gpt-4o-mini/);
      await page.click('[role="tab"]:has-text("Events (1)")');
      assert.match(await page.textContent('.events'), /first_token/);
      await page.click('[role="tab"]:has-text("JSON")');
      const json = await page.textContent('[data-testid="span-detail"] .tab-body');
      assert.match(json, /"input": \{.*"messages": \[ 1 item \]/);
      assert.match(json, /"events": \[.*\{ 3 keys \}/);
      await shot('inspector-big-llm');

      // a tool span shows its arguments and result
      await page.click(`.wf-row[data-span-id="${tool.id}"]`);
      await page.waitForSelector(`[data-testid="span-detail"][data-span-id="${tool.id}"] [data-testid="tool-arguments"]`);
      assert.match(await page.textContent('[data-testid="tool-result"]'), /ok/);

      // back to the LLM span: it comes from the cache, without another request
      await page.click(`.wf-row[data-span-id="${llm.id}"]`);
      await page.waitForSelector(`[data-testid="span-detail"][data-span-id="${llm.id}"] [data-testid="conversation"]`);
      assert.equal(reqs.filter((u) => u === spanPath(llm.id)).length, 1);

      // holding the down arrow moves the selection at once but does not fetch every span
      const before = reqs.length;
      for (let k = 0; k < 30; k++) await page.keyboard.press('ArrowDown');
      const landed = new URL(page.url()).searchParams.get('span');
      assert.notEqual(landed, llm.id);
      await page.waitForSelector(`[data-testid="span-detail"][data-span-id="${landed}"][data-payload="ready"]`);
      const during = reqs.slice(before).filter((u) => u.includes('/spans/'));
      assert.ok(during.length <= 5, `30 key presses made ${during.length} span requests`);
      assert.ok(during.includes(spanPath(landed)), 'the span the keys stopped on was loaded');

      // a span the server does not have (404) says so readably, and can be tried again
      const other = big.spans.filter((sp) => sp.kind === 'llm')[5];
      const pattern = '**' + spanPath(other.id);
      await page.route(pattern, (route) => route.continue({ url: route.request().url().replace(other.id, 'sp_not_stored') }));
      await page.goto(dash.origin + `/traces/${big.id}?span=${other.id}`);
      await page.waitForSelector('[data-testid="payload-error"]');
      assert.match(await page.textContent('[data-testid="payload-error"]'), /no stored content for this span/);
      await shot('inspector-big-span-404');
      await page.unroute(pattern);
      await page.click('[data-testid="payload-error"] button');
      await page.waitForSelector(`[data-testid="span-detail"][data-span-id="${other.id}"] [data-testid="conversation"]`);

      // find span still searches names, kinds, models and ids
      await page.keyboard.press('Escape');
      await page.keyboard.press('/');
      await page.keyboard.type('gpt-4o-mini');
      const nLlm = big.spans.filter((sp) => sp.kind === 'llm').length;
      assert.equal(await page.textContent('[data-testid="find-count"]'), `–/${nLlm}`);
      await page.keyboard.press('Enter');
      await page.waitForURL(new RegExp(`span=${llm.id}`));
      await page.waitForSelector(`[data-testid="span-detail"][data-span-id="${llm.id}"] [data-testid="conversation"]`);

      // opened from the list, whose summary gives the span count: one request of the right kind
      await page.goto(dash.origin + '/traces');
      await page.waitForSelector(rowSel(big.id));
      reqs.length = 0;
      await page.click(rowSel(big.id));
      await page.waitForSelector('.wf[data-painted="true"]', { timeout: 30_000 });
      assert.deepEqual(reqs, [`/api/traces/${big.id}?payloads=false`]);
    } finally {
      page.off('request', onReq);
      await page.unrouteAll();
    }
  });

  test('a small trace is fetched whole: once from the list, after a light probe by URL', async () => {
    const reqs = [];
    const onReq = (r) => {
      const u = new URL(r.url());
      if (u.pathname.startsWith('/api/traces/' + gamma.id)) reqs.push(u.pathname + u.search);
    };
    page.on('request', onReq);
    try {
      await page.goto(dash.origin + '/traces');
      await page.waitForSelector(rowSel(gamma.id));
      await page.click(rowSel(gamma.id));
      await page.waitForSelector('.wf[data-painted="true"]');
      assert.deepEqual(reqs, [`/api/traces/${gamma.id}`]);
      assert.equal(await page.$('[data-testid="payloads-per-span"]'), null);

      reqs.length = 0;
      await page.goto(dash.origin + `/traces/${gamma.id}?span=${gamma.spans[2].id}`);
      await page.waitForSelector('[data-testid="conversation"] .msg[data-role="user"]');
      assert.match(await page.textContent('[data-testid="conversation"]'), /Translate good morning/);
      assert.deepEqual(reqs, [`/api/traces/${gamma.id}?payloads=false`, `/api/traces/${gamma.id}`]);
    } finally {
      page.off('request', onReq);
    }
  });

  test('a 10,000-span trace opens, stays virtualized and scrolls to its last span', async () => {
    const big = bigTrace(10_000);
    await server.post(big);
    const t0 = Date.now();
    await page.goto(dash.origin + '/traces/' + big.id);
    await page.waitForSelector('.wf[data-painted="true"]', { timeout: 30_000 });
    const openMs = Date.now() - t0;
    const rows = await page.$$eval('.wf-row', (r) => r.length);
    assert.ok(rows > 10 && rows < 200, `only visible rows are in the DOM (${rows})`);
    assert.match(await page.textContent('.wf-toolbar'), /10,000 spans/);
    await page.$eval('.wf-scroll', (el) => (el.scrollTop = el.scrollHeight));
    await page.waitForFunction(() => document.querySelectorAll('.wf-row').length > 0 && [...document.querySelectorAll('.wf-row')].some((r) => r.getAttribute('aria-level')));
    await page.keyboard.press('End');
    // the selection is drawn on the next render, not by the key press itself
    await page.waitForSelector('.wf-row.selected', { timeout: 10_000 });
    const lastRow = await page.$eval('.wf-row.selected', (r) => r.getAttribute('data-span-id'));
    assert.ok(lastRow, 'End selects the last visible span');
    await shot('inspector-10k');
    console.log(`# 10,000-span trace painted ${openMs} ms after navigation (includes fetch)`);
  });

  test('when the server stops, pages say so and how to start it', async () => {
    const other = await startServer();
    const otherDash = await dashboardOrigin(other);
    try {
      await page.goto(otherDash.origin + '/traces');
      await page.waitForSelector('[data-state="no-traces"]');
      await other.stop();
      await clientNav('/failures');
      await page.waitForSelector('[data-state="server-down"]', { timeout: 10_000 });
      assert.match(await page.textContent('[data-state="server-down"]'), /tracellm start/);
      await page.waitForSelector('.sidebar [data-live-state="closed"], .sidebar [data-live-state="connecting"]');
      await shot('server-down');
    } finally {
      await otherDash.close();
      await other.stop();
    }
  });

  test('no page threw an uncaught error', () => {
    assert.deepEqual(pageErrors, []);
  });
});
