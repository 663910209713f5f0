#!/usr/bin/env node
// The causeway executable: runs the built JavaScript when present (published package),
// otherwise the TypeScript sources directly (development, Node >= 22.18 strips types).
// The build keeps the repository layout (dist/src/…, and dist/test/kit/… for the quickstart's demo
// Kubernetes API), so relative imports between src and test/kit hold in both.
import { existsSync } from 'node:fs';
const built = new URL('../dist/src/main.js', import.meta.url);
await import(existsSync(built) ? built.href : new URL('../src/main.ts', import.meta.url).href);
