// Benchmark: time from navigation to the waterfall painted, for traces of 100, 1,000 and
// 10,000 spans, against a real `tracellm start`; plus the gzipped size of web/dist.
//   node bench/waterfall.mjs            (TRACELLM_BIN as for the tests; RUNS=5 by default;
//                                        SIZES=30000 PAYLOADS=0 for bigger traces)
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { dashboardOrigin, launchBrowser, startServer, WEB_DIR } from '../tests/harness.mjs';
import { bigTrace } from '../tests/fixtures.mjs';

const RUNS = Number(process.env.RUNS ?? 5);
const SIZES = (process.env.SIZES ?? '100,1000,10000').split(',').map(Number);
// PAYLOADS=0 leaves out span inputs/outputs (a 30,000-span trace with them exceeds the default
// 10 MB request body limit)
const PAYLOADS = process.env.PAYLOADS !== '0';

function bundleSize() {
  const dist = join(WEB_DIR, 'dist');
  let raw = 0;
  let gz = 0;
  const walk = (d) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else {
        const b = readFileSync(p);
        raw += b.length;
        gz += gzipSync(b, { level: 9 }).length;
      }
    }
  };
  walk(dist);
  return { raw, gz };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const server = await startServer();
const dash = await dashboardOrigin(server);
const ctx = await launchBrowser({ viewport: { width: 1440, height: 900 } });
const page = ctx.pages()[0] ?? (await ctx.newPage());
const results = [];
try {
  for (const n of SIZES) {
    const doc = bigTrace(n, { withPayloads: PAYLOADS });
    await server.post(doc);
    const bytes = JSON.stringify(await server.get('/traces/' + doc.id)).length;
    const paint = [];
    const fetchMs = [];
    let requests = '';
    // one warm-up load so every size runs with the bundle in the HTTP cache
    await page.goto(`${dash.origin}/traces/${doc.id}`);
    await page.waitForSelector('.wf[data-painted="true"]', { timeout: 60_000 });
    for (let r = 0; r < RUNS; r++) {
      await page.goto('about:blank');
      await page.goto(`${dash.origin}/traces/${doc.id}`);
      await page.waitForSelector('.wf[data-painted="true"]', { timeout: 60_000 });
      // performance.now() is measured from navigation start
      // opened by URL a trace is first fetched without payloads; a small one is then fetched
      // whole while the waterfall is already painted (not counted in "of which API fetch")
      await page.waitForLoadState('networkidle');
      const m = await page.evaluate(() => {
        const painted = window.__tracellmWaterfallPainted;
        const api = performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/traces/'));
        const before = api.filter((e) => e.responseEnd <= painted);
        return {
          painted,
          fetch: before.length ? before.reduce((a, e) => a + (e.responseEnd - e.startTime), 0) : null,
          requests: api.map((e) => (new URL(e.name).search || 'whole') + (e.responseEnd <= painted ? '' : ' (after paint)')),
        };
      });
      paint.push(m.painted);
      if (m.fetch != null) fetchMs.push(m.fetch);
      requests = m.requests.join(' + ');
    }
    // scrolling: time to scroll the whole list in 40 steps, one frame each
    const scroll = await page.evaluate(async () => {
      const el = document.querySelector('.wf-scroll');
      const frames = [];
      let last = performance.now();
      for (let k = 1; k <= 40; k++) {
        el.scrollTop = (el.scrollHeight * k) / 40;
        await new Promise((r) => requestAnimationFrame(() => r()));
        const now = performance.now();
        frames.push(now - last);
        last = now;
      }
      frames.sort((a, b) => a - b);
      return { p50: frames[20], max: frames[frames.length - 1] };
    });
    results.push({ spans: n, jsonKB: Math.round(bytes / 1024), paintMs: median(paint), fetchMs: fetchMs.length ? median(fetchMs) : null, requests, scroll });
  }
} finally {
  await ctx.close();
  await dash.close();
  await server.stop();
}

const size = bundleSize();
console.log(`Waterfall: navigation -> first paint of the waterfall (median of ${RUNS} loads, Chromium headless, 1440x900)`);
console.log('spans     trace JSON   painted    of which API fetch   scroll frame p50 / max   requests');
for (const r of results)
  console.log(
    `${String(r.spans).padEnd(9)} ${(r.jsonKB + ' KB').padEnd(12)} ${(r.paintMs.toFixed(0) + ' ms').padEnd(10)} ${(
      (r.fetchMs?.toFixed(0) ?? '?') + ' ms'
    ).padEnd(20)} ${(r.scroll.p50.toFixed(1) + ' / ' + r.scroll.max.toFixed(1) + ' ms').padEnd(24)} ${r.requests}`,
  );
console.log(`Bundle web/dist: ${(size.raw / 1024).toFixed(1)} KB raw, ${(size.gz / 1024).toFixed(1)} KB gzipped`);
