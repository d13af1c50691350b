import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPgCluster, throwawayClusterSkipReason, type PgCluster } from './support/pg-cluster.js';

const skipReason = await throwawayClusterSkipReason();
const projectRoot = fileURLToPath(new URL('../', import.meta.url));

/**
 * postgres.js 3.4.9 writes to the socket of a connection that closed (porsager/postgres#1154, #1208): the ROLLBACK
 * sql.begin() sends after its backend died threw from a timer and ended the process. scripts/patch-postgres.mjs
 * (npm install's postinstall) patches the driver; these run the driver in a child process, where a crash shows.
 */
describe.skipIf(skipReason !== null)(`postgres.js on a backend that goes away ${skipReason ?? ''}`, () => {
  let cluster: PgCluster;
  beforeAll(async () => {
    cluster = await createPgCluster();
  });
  afterAll(async () => {
    await cluster?.destroy();
  });

  async function driverWhile(scenario: 'transaction' | 'reserve' | 'session', cutOff: () => Promise<unknown>) {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/driver-on-dead-backend.ts', cluster.url, scenario], {
      cwd: projectRoot,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    // 'close', not 'exit': every line the child printed is read before the test looks at them.
    const exited = once(child, 'close');
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const lines: Record<string, unknown>[] = [];
    let cut: Promise<unknown> | undefined;
    createInterface({ input: child.stdout }).on('line', (line) => {
      lines.push(JSON.parse(line) as Record<string, unknown>);
      // The transaction is open and fetching: now its backend goes away.
      if (lines.length === 1) cut = cutOff().then(() => child.stdin.write('cut\n'));
    });
    const [code] = await exited;
    await cut;
    return { code: code as number | null, stderr, result: lines.at(-1) };
  }

  it('a transaction whose backend is terminated fails with CONNECTION_CLOSED, and the process lives on', async () => {
    const { code, stderr, result } = await driverWhile('transaction', () => cluster.terminateBackends());
    expect(stderr).not.toContain("Cannot read properties of null (reading 'write')");
    expect(code).toBe(0);
    expect(result).toEqual({ outcome: expect.stringMatching(/^(CONNECTION_CLOSED|57P01)$/), after: 'ok' });
  });

  it('a reserved connection used and released after its backend was terminated fails, and the pool serves again', async () => {
    const { code, stderr, result } = await driverWhile('reserve', () => cluster.terminateBackends());
    expect(stderr).not.toContain("Cannot read properties of null (reading 'write')");
    expect(code).toBe(0);
    // The statement is written after the backend died: the kernel may answer the write with a reset (ECONNRESET)
    // before the driver reads the close, depending on the machine's timing. Either way it fails, and the pool serves.
    expect(result).toEqual({ outcome: expect.stringMatching(/^(CONNECTION_CLOSED|57P01|ECONNRESET)$/), after: 'ok' });
  });

  // Not a test of the patch (the statements fail after the driver has seen the connection close, so the COMMIT goes
  // to a new one): that the single-connection client a tenant statement runs on serves again after its backend died.
  it("a tenant statement's transaction on its own connection (BEGIN sent as a statement) whose backend is terminated fails, and the connection serves again", async () => {
    const { code, stderr, result } = await driverWhile('session', () => cluster.terminateBackends());
    expect(stderr).not.toContain("Cannot read properties of null (reading 'write')");
    expect(code).toBe(0);
    expect(result).toEqual({ outcome: expect.stringMatching(/^(CONNECTION_CLOSED|57P01)$/), after: 'ok' });
  });

  it('a transaction open while the server restarts fails with CONNECTION_CLOSED, and the process lives on', async () => {
    const { code, stderr, result } = await driverWhile('transaction', () => cluster.restart());
    expect(stderr).not.toContain("Cannot read properties of null (reading 'write')");
    expect(code).toBe(0);
    expect(result).toEqual({ outcome: expect.stringMatching(/^(CONNECTION_CLOSED|57P01)$/), after: 'ok' });
  });
});

describe.skipIf(!process.env.TEST_DATABASE_URL)(
  `postgres.js when a cancel cannot be sent${process.env.TEST_DATABASE_URL ? '' : ' (skipped: TEST_DATABASE_URL is not set)'}`,
  () => {
    it('a cancel whose connection is refused leaves the query to finish, and the process lives on', async () => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/driver-cancel-unsent.ts', process.env.TEST_DATABASE_URL!], {
        cwd: projectRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const lines: string[] = [];
      createInterface({ input: child.stdout! }).on('line', (line) => lines.push(line));
      const stderr: string[] = [];
      child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
      const [code] = (await once(child, 'close')) as [number | null];
      expect({ code, stderr: stderr.join('') }).toEqual({ code: 0, stderr: '' });
      expect(JSON.parse(lines.at(-1)!)).toEqual({ outcome: 'ok' });
    });
  },
);
