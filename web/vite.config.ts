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
    // Stable file names: the bundle is committed and embedded in the binary, and a test
    // rebuilds it and compares byte for byte, so the output must not depend on hashes.
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    rollupOptions: {
      output: {
        entryFileNames: 'assets/app.js',
        chunkFileNames: 'assets/[name].js',
        assetFileNames: 'assets/[name][extname]',
        inlineDynamicImports: true,
      },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
