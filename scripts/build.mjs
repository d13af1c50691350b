// Compiles src/ to JavaScript in dist/ (same layout), so that `npm start` runs no TypeScript compiler.
// Each file is transpiled on its own (TypeScript's transpileModule, which tsconfig's isolatedModules allows):
// no type checking here, that is `npm run typecheck`. Files of src/ that are not TypeScript (the worker
// threads' .mjs entries, assets) are copied as they are. Beside the code it keeps a pristine PGlite cluster
// (dist/pglite-initdb, PGlite's initdb and nothing else), which a new data directory starts as a copy of: initdb
// is most of a first start's work and the same for everyone. Migrations and the demo data still run at start.
//   node scripts/build.mjs             builds
//   node scripts/build.mjs --if-stale  builds only when dist/ is missing or older than a file of src/, or its
//                                      cluster was made by another PGlite version
//   node scripts/build.mjs --prepare   builds, or says why not and succeeds when typescript is not installed
//                                      (npm ci --omit=dev runs prepare too; what it installs is then built elsewhere)
// Run by `npm install` (prepare) and before `npm start` (prestart, --if-stale: a few milliseconds when fresh).
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const sourceDir = join(root, 'src');
const outDir = join(root, 'dist');
const stampFile = join(outDir, '.built');
const initdbDir = 'pglite-initdb';
const initdbVersionFile = 'pglite-initdb.json';
/** Besides src/, what the build depends on: a change to either makes it stale. */
const inputs = [join(root, 'tsconfig.json'), fileURLToPath(import.meta.url)];

async function walk(dir) {
  const entries = await readdir(dir, { withFileTypes: true });
  const found = [{ path: dir, isFile: false }];
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...(await walk(path)));
    else if (entry.isFile()) found.push({ path, isFile: true });
  }
  return found;
}

/** A directory's own time changes when a file in it is added, removed or renamed, so deletions count too. */
async function isStale() {
  if ((await initdbVersion(outDir)) !== (await installedPgliteVersion())) return true;
  let builtAt;
  try {
    builtAt = (await stat(stampFile)).mtimeMs;
  } catch {
    return true;
  }
  const paths = [...(await walk(sourceDir)).map((entry) => entry.path), ...inputs];
  for (const path of paths) {
    if ((await stat(path)).mtimeMs > builtAt) return true;
  }
  return false;
}

async function installedPgliteVersion() {
  const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite');
  const packageRoot = /^(.*[\\/]@electric-sql[\\/]pglite)[\\/]/.exec(entry)[1];
  return JSON.parse(await readFile(join(packageRoot, 'package.json'), 'utf8')).version;
}

async function initdbVersion(dir) {
  try {
    return JSON.parse(await readFile(join(dir, initdbVersionFile), 'utf8')).pgliteVersion;
  } catch {
    return undefined;
  }
}

/** Kept from the last build when the same PGlite made it; made anew (initdb, seconds) when not. */
async function makeInitdbTemplate(into) {
  const version = await installedPgliteVersion();
  if ((await initdbVersion(outDir)) === version) {
    await rename(join(outDir, initdbDir), join(into, initdbDir));
  } else {
    const { PGlite } = await import('@electric-sql/pglite');
    const database = await PGlite.create(join(into, initdbDir));
    await database.close();
  }
  await writeFile(join(into, initdbVersionFile), `${JSON.stringify({ pgliteVersion: version })}\n`);
}

class TypeScriptMissing extends Error {}

async function loadTypeScript() {
  try {
    return (await import('typescript')).default;
  } catch {
    throw new TypeScriptMissing('the build needs the devDependency typescript: run `npm install` (without --omit=dev), then `npm run build`');
  }
}

async function build() {
  const ts = await loadTypeScript();
  const parsed = ts.getParsedCommandLineOfConfigFile(join(root, 'tsconfig.json'), {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (diagnostic) => {
      throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'));
    },
  });
  // The package is "type": "module": every file is an ES module (transpileModule cannot read package.json to tell).
  const compilerOptions = {
    ...parsed.options,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    noEmit: false,
    sourceMap: false,
    declaration: false,
  };
  // Built beside dist/ and swapped in at the end: a process starting meanwhile never loads half a build.
  const staging = `${outDir}.${process.pid}.tmp`;
  await rm(staging, { recursive: true, force: true });
  let files = 0;
  for (const entry of await walk(sourceDir)) {
    if (!entry.isFile) continue;
    const target = join(staging, relative(sourceDir, entry.path));
    await mkdir(dirname(target), { recursive: true });
    if (entry.path.endsWith('.d.ts') || !entry.path.endsWith('.ts')) {
      await copyFile(entry.path, target);
      continue;
    }
    const source = await readFile(entry.path, 'utf8');
    const { outputText, diagnostics = [] } = ts.transpileModule(source, {
      compilerOptions,
      fileName: entry.path,
      reportDiagnostics: true,
    });
    if (diagnostics.length > 0) {
      const messages = diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
      throw new Error(`${relative(root, entry.path)}: ${messages.join('; ')}`);
    }
    await writeFile(target.replace(/\.ts$/, '.js'), outputText);
    files += 1;
  }
  await makeInitdbTemplate(staging);
  await writeFile(join(staging, '.built'), `${new Date().toISOString()}\n`);
  await rm(outDir, { recursive: true, force: true });
  await rename(staging, outDir);
  return files;
}

const ifStale = process.argv.includes('--if-stale');
try {
  if (ifStale && !(await isStale())) process.exit(0);
  const started = performance.now();
  const files = await build();
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  process.stderr.write(`built ${files} files of src/ into dist/ in ${seconds} s\n`);
} catch (error) {
  if (error instanceof TypeScriptMissing && process.argv.includes('--prepare')) {
    process.stderr.write(`not building dist/: ${error.message}\n`);
    process.exit(0);
  }
  process.stderr.write(`build failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
}
