import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, cp, mkdir, mkdtemp, readdir, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { trackService } from './support/process.js';
import { scaledTimeout } from './support/timing.js';

// scripts/build.mjs run on a copy of the project (its src/, tsconfig.json and the script, node_modules linked), so
// that these tests can break builds without touching the dist/ the other tests run.
const projectRoot = fileURLToPath(new URL('../', import.meta.url));

describe('scripts/build.mjs', () => {
  let root: string;

  function build(...args: string[]): Promise<{ code: number | null; stderr: string }> {
    return new Promise((resolve) => {
      execFile(process.execPath, [join(root, 'scripts', 'build.mjs'), ...args], { cwd: root }, (error, _stdout, stderr) => {
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stderr });
      });
    });
  }

  const leftovers = async () => (await readdir(root)).filter((name) => name.startsWith('dist.'));

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'stepcast-build-'));
    await mkdir(join(root, 'scripts'));
    await cp(join(projectRoot, 'scripts', 'build.mjs'), join(root, 'scripts', 'build.mjs'));
    await cp(join(projectRoot, 'src'), join(root, 'src'), { recursive: true });
    await cp(join(projectRoot, 'tsconfig.json'), join(root, 'tsconfig.json'));
    await cp(join(projectRoot, 'package.json'), join(root, 'package.json'));
    await symlink(join(projectRoot, 'node_modules'), join(root, 'node_modules'));
    // A first build runs PGlite's initdb (seconds); later ones keep its cluster.
    expect((await build()).code).toBe(0);
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('--if-stale sees a change by content, even one with an older time (rsync -a, a tarball)', async () => {
    expect(await build('--if-stale')).toEqual({ code: 0, stderr: '' });
    const file = join(root, 'src', 'config.ts');
    await appendFile(file, '// changed\n');
    await utimes(file, new Date('2000-01-01'), new Date('2000-01-01'));
    const rebuilt = await build('--if-stale');
    expect(rebuilt.stderr).toMatch(/^built \d+ files/);
    expect(await build('--if-stale')).toEqual({ code: 0, stderr: '' });
  });

  it('builds again after a build was killed with the old cluster out of dist/, and removes what killed builds left', async () => {
    // What the build before this fix left when killed between moving the cluster out of dist/ and the swap.
    await rm(join(root, 'dist', 'pglite-initdb'), { recursive: true });
    await mkdir(join(root, 'dist.999999999.tmp'));
    const rebuilt = await build('--if-stale');
    expect(rebuilt).toMatchObject({ code: 0 });
    expect(existsSync(join(root, 'dist', 'pglite-initdb', 'PG_VERSION'))).toBe(true);
    expect(await leftovers()).toEqual([]);
  });

  it('a build that fails leaves dist/ as it was and nothing beside it', async () => {
    const broken = join(root, 'src', 'zz-broken.ts');
    await writeFile(broken, 'const x: = 1;\n');
    try {
      const failed = await build();
      expect(failed.code).toBe(1);
      expect(failed.stderr).toContain('zz-broken.ts');
      expect(existsSync(join(root, 'dist', 'main.js'))).toBe(true);
      expect(await leftovers()).toEqual([]);
    } finally {
      await rm(broken, { force: true });
    }
  });

  it('a build interrupted (SIGTERM) removes its staging directory', { timeout: scaledTimeout(60_000) }, async () => {
    const child = spawn(process.execPath, [join(root, 'scripts', 'build.mjs')], { cwd: root, stdio: 'ignore' });
    const exited = trackService(child);
    try {
      await vi.waitFor(() => expect(existsSync(join(root, `dist.${child.pid}.tmp`))).toBe(true), { timeout: scaledTimeout(20_000), interval: 5 });
      child.kill('SIGTERM');
      expect(await exited).toMatchObject({ signal: 'SIGTERM' });
      expect(await leftovers()).toEqual([]);
      expect(existsSync(join(root, 'dist', 'main.js'))).toBe(true);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
  });
});
