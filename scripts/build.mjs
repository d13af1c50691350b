// Compiles src/ to JavaScript in dist/ (same layout), so that `npm start` runs no TypeScript compiler.
// Each file is transpiled on its own (TypeScript's transpileModule, which tsconfig's isolatedModules allows):
// no type checking here, that is `npm run typecheck`. Files of src/ that are not TypeScript (the worker
// threads' .mjs entries, assets) are copied as they are. Beside the code it keeps a pristine PGlite cluster
// (dist/pglite-initdb, PGlite's initdb and nothing else), which a new data directory starts as a copy of: initdb
// is most of a first start's work and the same for everyone. Migrations and the demo data still run at start.
//   node scripts/build.mjs             builds
//   node scripts/build.mjs             builds
//   node scripts/build.mjs --if-stale  builds only when dist/ is missing, when src/ (or tsconfig.json, or this
//                                      script) differs from what the last build read (a hash of every file's path
//                                      and content, taken when that build started), or when its cluster was made by
//                                      another PGlite version
//   node scripts/build.mjs --prepare   builds, or says why not and succeeds when typescript is not installed
//                                      (npm ci --omit=dev runs prepare too)
//   --start (with --if-stale, as prestart runs it): without typescript, says what `npm start` will run instead
//     (dist/ as it is, even stale, or src/ through tsx when there is no dist/main.js) and succeeds
// Run by `npm install` (prepare) and before `npm start` (prestart, --if-stale: a few milliseconds when fresh).
import { createHash } from 'node:crypto';
import { existsSync, renameSync, rmSync } from 'node:fs';
import { copyFile, link, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const sourceDir = join(root, 'src');
const outDir = join(root, 'dist');
const stampFile = join(outDir, '.built');
/** dist/'s siblings while a build runs (.gitignore and eslint ignore dist.*): removed when it ends, however it ends. */
const staging = `${outDir}.${process.pid}.tmp`;
const replaced = `${outDir}.${process.pid}.old`;
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

/**
 * A hash of the build's inputs: every file's path and content (src/ is small: about 10 ms here). Times would miss
 * files copied with their older times (rsync -a, a tarball) and edits made while a build runs.
 */
async function inputsHash() {
  const files = [...(await walk(sourceDir)).filter((entry) => entry.isFile).map((entry) => entry.path), ...inputs].sort();
  const hash = createHash('sha256');
  for (const path of files) {
    const content = await readFile(path);
    hash.update(`${relative(root, path)}\0${content.length}\0`);
    hash.update(content);
  }
  return hash.digest('hex');
}

async function isStale() {
  if ((await initdbVersion(outDir)) !== (await installedPgliteVersion())) return true;
  if (!isCluster(join(outDir, initdbDir))) return true;
  const built = await readFile(stampFile, 'utf8').then(
    (text) => JSON.parse(text).inputs,
    () => undefined,
  );
  return built !== (await inputsHash());
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

/** A cluster is whole once PG_VERSION is in it (PGlite writes it, and a copy copies it, last). */
function isCluster(dir) {
  return existsSync(join(dir, 'PG_VERSION'));
}

/** Hard links (or copies, across file systems) a directory tree: the original stays where it is, whole. */
async function linkTree(from, to) {
  await mkdir(to, { recursive: true });
  const entries = await readdir(from, { withFileTypes: true });
  const files = entries.filter((entry) => !entry.isDirectory() && entry.name !== 'PG_VERSION');
  for (const entry of entries) if (entry.isDirectory()) await linkTree(join(from, entry.name), join(to, entry.name));
  await Promise.all(files.map((entry) => link(join(from, entry.name), join(to, entry.name)).catch(() => copyFile(join(from, entry.name), join(to, entry.name)))));
  if (entries.some((entry) => entry.name === 'PG_VERSION')) await copyFile(join(from, 'PG_VERSION'), join(to, 'PG_VERSION'));
}

/**
 * Kept from the last build (linked, not moved: dist/ stays whole if this build is cut short) when the same PGlite
 * made it and it is whole; made anew (initdb, seconds) when not.
 */
async function makeInitdbTemplate(into) {
  const version = await installedPgliteVersion();
  const previous = join(outDir, initdbDir);
  if ((await initdbVersion(outDir)) === version && isCluster(previous)) {
    await linkTree(previous, join(into, initdbDir));
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
  // Taken before reading any source: a file edited while this build runs makes the next --if-stale build again.
  const hash = await inputsHash();
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
  await removeOrphans();
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
  await writeFile(join(staging, '.built'), `${JSON.stringify({ builtAt: new Date().toISOString(), inputs: hash })}\n`);
  // The old dist/ aside, the new one in, then the old one removed: there is a whole dist/ (or, for the instant
  // between the two renames, none) at every moment, never half of one.
  const hadOne = existsSync(outDir);
  if (hadOne) await rename(outDir, replaced);
  await rename(staging, outDir);
  if (hadOne) await rm(replaced, { recursive: true, force: true });
  return files;
}

/** What builds killed outright (SIGKILL, a power cut) left beside dist/: their process is gone. */
async function removeOrphans() {
  for (const name of await readdir(root)) {
    const pid = /^dist\.(\d+)\.(tmp|old)$/.exec(name)?.[1];
    if (pid === undefined || Number(pid) === process.pid) continue;
    try {
      process.kill(Number(pid), 0);
    } catch (error) {
      if (error.code === 'ESRCH') await rm(join(root, name), { recursive: true, force: true });
    }
  }
}

/**
 * Synchronous, so that on a signal the build's own code (which goes on writing into the staging directory between
 * its awaits) cannot run while it is removed.
 */
function removeLeftovers() {
  rmSync(staging, { recursive: true, force: true, maxRetries: 3 });
  // Only if the swap got as far as putting the new dist/ in place; otherwise the old one goes back.
  if (existsSync(replaced)) {
    if (existsSync(outDir)) rmSync(replaced, { recursive: true, force: true, maxRetries: 3 });
    else renameSync(replaced, outDir);
  }
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    try {
      removeLeftovers();
    } finally {
      process.kill(process.pid, signal);
    }
  });
}

/** What prestart says, and lets `npm start` do, when it cannot build: npm start runs dist/ as it is, or src/ through tsx. */
async function startWithoutBuilding(reason) {
  if (!existsSync(join(outDir, 'main.js'))) {
    process.stderr.write(`not building dist/ (${reason}); npm start runs src/ through tsx instead (slower start)\n`);
  } else if (await isStale()) {
    process.stderr.write(`warning: dist/ is stale (src/ changed since it was built), and not rebuilt (${reason}); npm start runs it as it is\n`);
  }
}

const ifStale = process.argv.includes('--if-stale');
let status = 0;
try {
  if (ifStale && !(await isStale())) process.exit(0);
  const started = performance.now();
  const files = await build();
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  process.stderr.write(`built ${files} files of src/ into dist/ in ${seconds} s\n`);
} catch (error) {
  if (error instanceof TypeScriptMissing && process.argv.includes('--prepare')) {
    process.stderr.write(`not building dist/: ${error.message}\n`);
  } else if (error instanceof TypeScriptMissing && process.argv.includes('--start')) {
    await startWithoutBuilding(error.message);
  } else {
    process.stderr.write(`build failed: ${error instanceof Error ? error.message : String(error)}\n`);
    status = 1;
  }
} finally {
  removeLeftovers();
}
process.exit(status);
