// The committed bundle in web/dist is what the binary embeds. Rebuild it from source into a
// temp dir and require the two to match byte for byte, so source and bundle never drift.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { build } from 'vite';
import { WEB_DIR } from './harness.mjs';

function listFiles(dir) {
  const out = [];
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

test('web/dist matches a fresh build of web/ source', async () => {
  const committed = join(WEB_DIR, 'dist');
  const fresh = mkdtempSync(join(tmpdir(), 'tracellm-dist-'));
  try {
    await build({ root: WEB_DIR, logLevel: 'warn', build: { outDir: fresh, emptyOutDir: true } });
    const want = listFiles(fresh);
    const have = listFiles(committed);
    assert.deepEqual(have, want, 'web/dist has the same files as a fresh build (run `npm run build` in web/ and commit web/dist)');
    for (const f of want) {
      const same = readFileSync(join(fresh, f)).equals(readFileSync(join(committed, f)));
      assert.ok(same, `web/dist/${f} differs from a fresh build (run \`npm run build\` in web/ and commit web/dist)`);
    }
  } finally {
    rmSync(fresh, { recursive: true, force: true });
  }
});
