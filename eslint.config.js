// Lint rules for the whole tree (src, test, bench, config files): typescript-eslint's strict and
// stylistic type-checked sets, formatting left to Prettier, and a 120-column limit that also covers
// the strings, comments and template literals Prettier cannot break.
import eslint from '@eslint/js';
import stylistic from '@stylistic/eslint-plugin';
import prettier from 'eslint-config-prettier';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  { ignores: ['node_modules/', 'dist/', 'coverage/', '.tap/', 'bench-results/', 'data/'] },
  eslint.configs.recommended,
  tseslint.configs.strictTypeChecked,
  tseslint.configs.stylisticTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        // tsconfig.json covers src, test and bench; the config files outside it get the default project.
        projectService: { allowDefaultProject: ['*.js'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // Log lines and error messages interpolate counts, sizes and flags; numbers and booleans print plainly.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      // `() => emitter.emit(x)` and `return callback(err)` in a void function are the codebase's idiom for
      // "do this and stop"; the rule still catches a void value used as a value.
      '@typescript-eslint/no-confusing-void-expression': [
        'error',
        { ignoreArrowShorthand: true, ignoreVoidReturningFunctions: true },
      ],
      // An empty string means unset in Kubernetes fields, environment variables and flags, so `||` is meant.
      '@typescript-eslint/prefer-nullish-coalescing': ['error', { ignorePrimitives: { string: true } }],
      // A leading `_` marks a binding left unused on purpose (a rest sibling left out, a loop that only drains).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // Fights no-non-null-assertion from the strict set: a checked `m[1] as string` is preferred to `m[1]!`.
      '@typescript-eslint/non-nullable-type-assertion-style': 'off',
    },
  },
  {
    // The benchmark is a script like the tests: fakes async like the APIs they stand in for, and `!` on
    // what it just built (a missing value fails the run anyway).
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      // Subtests are written `async (t) =>` whether they await or not, and fakes are async like the APIs
      // they stand in for (a throw rejects); an async function without await is harmless here.
      '@typescript-eslint/require-await': 'off',
      // A test asserting on what it just built reaches in with `!`: a missing value fails the test anyway.
      '@typescript-eslint/no-non-null-assertion': 'off',
      // tap's t.test() and t.rejects() return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: '@tapjs/test', name: ['test', 'rejects', 'resolves', 'resolveMatch'] },
          ],
        },
      ],
    },
  },
  {
    files: ['src/kube/**/*.ts', 'test/kube/**/*.ts'],
    rules: {
      // @kubernetes/client-node's models (V1Secret...) are classes only as data holders: the client
      // serializes by type name, and its API takes plain objects, which is how this code writes them.
      '@typescript-eslint/no-unsafe-class-instance-assignment': 'off',
      '@typescript-eslint/no-misused-spread': [
        'error',
        { allow: [{ from: 'package', package: '@kubernetes/client-node', name: ['V1Secret', 'V1ObjectMeta'] }] },
      ],
    },
  },
  {
    files: ['**/*.js'],
    extends: [tseslint.configs.disableTypeChecked],
  },
  // Switches off every rule that would fight Prettier's formatting (max-len among them, set again below).
  prettier,
  {
    plugins: { '@stylistic': stylistic },
    rules: {
      // Prettier wraps code at 120 but cannot break strings, comments or template literals; this catches those.
      '@stylistic/max-len': ['error', { code: 120, tabWidth: 2, ignoreUrls: true, ignoreRegExpLiterals: true }],
    },
  },
);
