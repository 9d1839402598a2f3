import { defineConfig } from 'vitest/config';

// The API runs on :8000 without the /api prefix; the binary serves it under /api on the
// dashboard port, so the app always calls relative /api/... URLs and dev mirrors that.
const apiTarget = process.env.TRACELLM_API ?? 'http://127.0.0.1:8000';

export default defineConfig({
  esbuild: {
    jsx: 'automatic',
    jsxImportSource: 'preact',
    legalComments: 'none',
  },
  server: {
    port: 5173,
    proxy: {
      '/api': {
        target: apiTarget,
        ws: true,
        changeOrigin: true,
        rewrite: (p) => p.replace(/^\/api/, '') || '/',
      },
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2020',
    // The bundle is committed and embedded in the binary, and a test rebuilds it and compares
    // byte for byte. Names carry a content hash (deterministic for the same source) because the
    // server caches /assets/* as immutable: a new binary must never be shadowed by an old cache.
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    rollupOptions: {
      output: {
        entryFileNames: 'assets/app-[hash].js',
        chunkFileNames: 'assets/[name]-[hash].js',
        assetFileNames: 'assets/[name]-[hash][extname]',
        inlineDynamicImports: true,
      },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
