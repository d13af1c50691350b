import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../src/config.js';
import { startFailure } from '../src/start-failure.js';
import { seedPgliteDataDir } from './support/pglite-template.js';
import { trackService } from './support/process.js';
import { scaledTimeout } from './support/timing.js';

const projectRoot = fileURLToPath(new URL('../', import.meta.url));

/** `npm start` as a newcomer runs it: what it printed on stderr, and how it ended. */
async function startService(env: Record<string, string>): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const { code } = await trackService(child);
  return { code, stderr, stdout };
}

describe('a start that cannot succeed says why in one line', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('names the busy port and the setting to change, and exits non-zero', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'stepcast-busy-port-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    await seedPgliteDataDir(dataDir);
    const holder: Server = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => holder.close(resolve)));
    const port = (holder.address() as { port: number }).port;

    const { code, stderr, stdout } = await startService({ PORT: String(port), DATA_DIR: dataDir, STEPCAST_DEMO_USERS: '50' });
    expect(code).toBe(1);
    expect(stderr).toBe(`port ${port} is in use; set PORT\n`);
    // The log says it too, as one structured line without a stack trace.
    const fatal = stdout.split('\n').filter((line) => line.includes('"level":60'));
    expect(fatal).toHaveLength(1);
    expect(JSON.parse(fatal[0]!)).toMatchObject({ msg: 'stepcast failed to start', reason: `port ${port} is in use; set PORT` });
    expect(stdout).not.toMatch(/at .*\.(ts|js):\d+/);
  }, scaledTimeout(60_000));

  it('names a data directory it cannot make, and the setting to change', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stepcast-bad-data-dir-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    // A file where the directory's parent should be.
    await writeFile(join(dir, 'file'), '');
    const dataDir = join(dir, 'file', 'data');
    const { code, stderr } = await startService({ PORT: '0', DATA_DIR: dataDir });
    expect(code).toBe(1);
    expect(stderr).toBe(`cannot mkdir ${dataDir} (ENOTDIR); set DATA_DIR to a directory this process can write\n`);
  }, scaledTimeout(30_000));

  it('names a bad setting in one line', async () => {
    const { code, stderr } = await startService({ PORT: 'four thousand' });
    expect(code).toBe(1);
    expect(stderr).toMatch(/^invalid configuration: PORT: .+\n$/);
  }, scaledTimeout(30_000));
});

describe('which start failures become one line', () => {
  const config = { dataDir: '/srv/stepcast/data', demo: { apiPort: 0 } } as unknown as Config;
  const fsError = (code: string, syscall: string, path: string) => Object.assign(new Error(`${code}: ${syscall} '${path}'`), { code, syscall, path });

  it('names DATA_DIR for a path inside it, compared segment by segment', () => {
    expect(startFailure(fsError('EACCES', 'open', '/srv/stepcast/data/stepcast.key'), config)).toBe(
      'cannot open /srv/stepcast/data/stepcast.key (EACCES); set DATA_DIR to a directory this process can write',
    );
    expect(startFailure(fsError('ENOTDIR', 'mkdir', '/srv/stepcast/data'), config)).toMatch(/; set DATA_DIR/);
    // A sibling that shares its prefix is not the data directory.
    expect(startFailure(fsError('EACCES', 'open', '/srv/stepcast/data2/x'), config)).toBeUndefined();
    expect(startFailure(fsError('EACCES', 'open', '/srv/stepcast/data-old/x'), config)).toBeUndefined();
  });

  it('keeps the stack of errors nobody has explained', () => {
    expect(startFailure(fsError('ECONNRESET', 'read', '/srv/stepcast/data/x'), config)).toBeUndefined();
    expect(startFailure(fsError('EACCES', 'open', '/usr/lib/node_modules/x.js'), config)).toBeUndefined();
    expect(startFailure(new Error('bug'), config)).toBeUndefined();
    expect(startFailure(Object.assign(new Error('listen EADDRINUSE'), { code: 'EADDRINUSE', port: 4000 }), config)).toBe(
      'port 4000 is in use; set PORT',
    );
  });
});
