/** The QuickJS engine: compiled once, then instantiated per run against a WebAssembly memory of its own. */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import releaseSync from '@jitl/quickjs-wasmfile-release-sync';
import {
  newQuickJSWASMModuleFromVariant,
  newVariant,
  type EmscriptenModuleLoaderOptions,
  type QuickJSSyncVariant,
  type QuickJSWASMModule,
} from 'quickjs-emscripten-core';

const WASM_PAGE_BYTES = 65_536;
/** The build's INITIAL_MEMORY (16 MiB): an instance cannot start with less. */
const MIN_PAGES = 256;
/** The build's MAXIMUM_MEMORY (2 GiB). */
const MAX_PAGES = 32_768;
/** Below the heap sit the static data and the 5 MiB C stack; the runtime's own structures need a little more. */
const ENGINE_RESERVED_BYTES = 6 * 1_048_576;

// TypeScript reads the package's CommonJS typings (a `default` property); Node's ESM import is the variant itself.
const releaseSyncVariant: QuickJSSyncVariant = 'default' in releaseSync ? releaseSync.default : releaseSync;

let compiledEngine: Promise<WebAssembly.Module> | undefined;

async function compileEngine(): Promise<WebAssembly.Module> {
  const require = createRequire(import.meta.url);
  const bytes = await readFile(require.resolve('@jitl/quickjs-wasmfile-release-sync/wasm'));
  return WebAssembly.compile(bytes);
}

function loadCompiledEngine(): Promise<WebAssembly.Module> {
  compiledEngine ??= compileEngine().catch((error: unknown) => {
    compiledEngine = undefined;
    throw error;
  });
  return compiledEngine;
}

/** WebAssembly pages for a program heap of `memoryBytes`, on top of what the engine itself occupies. */
function enginePagesFor(memoryBytes: number): number {
  const pages = Math.ceil((ENGINE_RESERVED_BYTES + memoryBytes) / WASM_PAGE_BYTES);
  return Math.min(MAX_PAGES, Math.max(MIN_PAGES, pages));
}

/** Emscripten reads print/printErr from the loader options; its typings leave them out. */
interface QuietLoaderOptions extends EmscriptenModuleLoaderOptions {
  print(text: string): void;
  printErr(text: string): void;
}

// An engine abort would otherwise write to the service's stderr; the run reports the failure instead.
const quietLoader: QuietLoaderOptions = { print: () => {}, printErr: () => {} };

/**
 * A fresh QuickJS module whose whole heap is capped at `memoryBytes` (plus the engine's fixed share).
 * QuickJS's own setMemoryLimit cannot do this in this build: with malloc_usable_size unavailable under
 * Emscripten it checks each allocation against the limit but adds only 8 bytes per allocation to the total.
 * The memory never grows: quickjs-emscripten keeps typed-array views of the heap across calls, and growing
 * detaches them (executePendingJobs then misreads its context pointer and leaks a stray context).
 */
export async function newSandboxEngine(memoryBytes: number): Promise<QuickJSWASMModule> {
  const wasmModule = await loadCompiledEngine();
  const pages = enginePagesFor(memoryBytes);
  const wasmMemory = new WebAssembly.Memory({ initial: pages, maximum: pages });
  const variant = newVariant(releaseSyncVariant, {
    wasmModule,
    wasmMemory,
    emscriptenModule: quietLoader,
  });
  return newQuickJSWASMModuleFromVariant(variant);
}
