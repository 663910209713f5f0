// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** The parts of DESIGN.md §6. A part never imports another part; shared code lives in src/lib. */
const parts = ['control-plane', 'access-tier', 'connector', 'kube-proxy', 'client'];

/** @param {string} part */
const boundary = (part) => ({
  files: [`src/${part}/**/*.ts`],
  rules: {
    'no-restricted-imports': ['error', {
      patterns: parts.filter((p) => p !== part).map((other) => ({
        group: [`**/${other}/**`, `**/${other}`],
        message: `src/${part} must not import src/${other}: parts never import each other; move shared code to src/lib (DESIGN.md §6).`,
      })),
    }],
  },
});

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'web/dist/**', '.cache/**', 'bench/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: { URL: 'readonly', URLSearchParams: 'readonly', process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly', AbortController: 'readonly', AbortSignal: 'readonly', TextEncoder: 'readonly', TextDecoder: 'readonly', structuredClone: 'readonly', queueMicrotask: 'readonly', performance: 'readonly', fetch: 'readonly' },
      parserOptions: { projectService: { allowDefaultProject: ['eslint.config.js', 'bin/*.js'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': 'off',
    },
  },
  // src/lib is shared and free of process state: it never imports a part.
  {
    files: ['src/lib/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: parts.map((p) => ({ group: [`**/${p}/**`, `**/${p}`], message: `src/lib must not import src/${p} (DESIGN.md §6).` })),
      }],
    },
  },
  ...parts.map(boundary),
);
