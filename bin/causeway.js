#!/usr/bin/env node
// The causeway executable: runs the built JavaScript when present (published package),
// otherwise the TypeScript sources directly (development, Node >= 22.18 strips types).
import { existsSync } from 'node:fs';
const built = new URL('../dist/main.js', import.meta.url);
await import(existsSync(built) ? built.href : new URL('../src/main.ts', import.meta.url).href);
