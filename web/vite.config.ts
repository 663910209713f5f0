/**
 * Builds the Command Center (web/) into dist/web, which `causeway server` serves (src/control-plane/console).
 *
 * The console's CSP is `script-src 'self'; style-src 'self'` without 'unsafe-inline', so the build
 * must put nothing inline: no module-preload polyfill (Vite would add it to the entry, but it is not
 * needed by the browsers we support), CSS in files, and assets as files rather than data: URLs for
 * anything but images (img-src allows data:).
 */
import { fileURLToPath } from 'node:url';
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

const root = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root,
  base: '/',
  plugins: [react()],
  build: {
    outDir: fileURLToPath(new URL('../dist/web', import.meta.url)),
    emptyOutDir: true,
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
    target: 'es2022',
    chunkSizeWarningLimit: 1024,
  },
  server: { host: '127.0.0.1' },
  logLevel: 'warn',
});
