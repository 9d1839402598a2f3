// Screenshot pages of a running dashboard by hand: node tests/shoot.mjs http://127.0.0.1:3000 /traces ...
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launchBrowser, WEB_DIR } from './harness.mjs';

const base = process.argv[2];
const paths = process.argv.slice(3);
const theme = process.env.THEME ?? 'light';
const out = join(WEB_DIR, 'test-artifacts', 'manual');
mkdirSync(out, { recursive: true });
const ctx = await launchBrowser({ colorScheme: theme, viewport: { width: Number(process.env.W ?? 1440), height: Number(process.env.H ?? 900) } });
const page = ctx.pages()[0] ?? (await ctx.newPage());
page.on('console', (m) => m.type() === 'error' && console.log('console:', m.text()));
page.on('pageerror', (e) => console.log('pageerror:', e.message));
for (const p of paths) {
  await page.goto(base + p, { waitUntil: 'networkidle' });
  await page.waitForTimeout(600);
  const file = join(out, (p.replace(/[^a-z0-9]+/gi, '_') || 'root') + `-${theme}.png`);
  await page.screenshot({ path: file });
  console.log(file);
}
await ctx.close();
