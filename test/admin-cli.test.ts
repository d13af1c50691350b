import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { tenants } from '../src/db/tables.js';
import { backends } from './support/database.js';
import { ExecutionsQuery } from './support/operations.js';
import { seedPgliteDataDir } from './support/pglite-template.js';
import { runAdmin } from './support/process.js';
import { startTestServer, type TestServer } from './support/server.js';
import { scaledTimeout } from './support/timing.js';

const ENCRYPTION_KEY = randomBytes(32).toString('base64');
const OPENAPI = {
  openapi: '3.0.3',
  info: { title: 'Acme', version: '1' },
  paths: { '/ping': { get: { operationId: 'ping', responses: { '200': { description: 'pong' } } } } },
};

const json = <T>(text: string) => JSON.parse(text) as T;

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`npm run admin on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let dir: string;
    let server: TestServer | undefined;
    // The start in progress, so that a test that timed out during it can still close what it started.
    let starting: Promise<TestServer> | undefined;
    let cliEnv: Record<string, string>;
    // Aborted when the running test times out: its commands and server starts stop instead of running on into the next test.
    let testSignal: AbortSignal | undefined;
    const admin = (args: string[]) => runAdmin(args, cliEnv, { signal: testSignal });
    const serverEnv = () => ({
      STEPCAST_AUTH: 'on',
      STEPCAST_ENCRYPTION_KEY: ENCRYPTION_KEY,
      STEPCAST_AUTH_RECHECK_MS: '100',
      ...(backend === 'pglite' ? { DATA_DIR: join(dir, 'data') } : {}),
    });

    const openServer = async (): Promise<TestServer> => {
      server = await (starting ??= startTestServer(backend, { env: serverEnv() }));
      testSignal?.throwIfAborted();
      return server;
    };
    /** Closes the server, one still starting too: on PGlite it holds the data directory the CLI needs. */
    const closeServer = async () => {
      const started = await starting?.catch(() => undefined);
      starting = undefined;
      server = undefined;
      await started?.close();
    };

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'stepcast-admin-'));
      await writeFile(join(dir, 'openapi.json'), JSON.stringify(OPENAPI));
      if (backend === 'postgres') {
        // PostgreSQL is shared: the CLI works beside a running server.
        server = await openServer();
        // No DATA_DIR: a server someone runs in the project's ./data works on another database, and the CLI leaves it alone.
        cliEnv = { DATABASE_URL: server.databaseUrl!, STEPCAST_ENCRYPTION_KEY: ENCRYPTION_KEY };
      } else {
        await seedPgliteDataDir(join(dir, 'data'));
        cliEnv = { DATA_DIR: join(dir, 'data'), STEPCAST_ENCRYPTION_KEY: ENCRYPTION_KEY };
      }
    });
    beforeEach(({ signal }) => {
      testSignal = signal;
    });
    // On PGlite each test begins with the data directory free (the CLI commands it ran were stopped by test/support/setup.ts).
    afterEach(async () => {
      if (backend === 'pglite') await closeServer();
    });
    afterAll(async () => {
      await closeServer();
      await rm(dir, { recursive: true, force: true });
    });

    it('creates a tenant with its schema and encrypted API credentials, and a key that works once the server runs', async () => {
      const created = await admin(
        ['tenant', 'create', 'Acme Corp', '--api-base-url', 'http://127.0.0.1:9', '--openapi', join(dir, 'openapi.json'),
          '--credential', 'X-Api-Key: acme-s3cret', '--json'],
      );
      expect(created.stderr).toBe('');
      expect(created.code).toBe(0);
      expect(json(created.stdout)).toMatchObject({
        id: 'acme_corp',
        name: 'Acme Corp',
        dataSchema: 'tenant_acme_corp',
        dbRole: expect.stringMatching(/^stepcast_[0-9a-f]{10}_tenant_acme_corp_[0-9a-f]{8}$/),
      });

      const again = await admin(['tenant', 'create', 'Acme Corp']);
      expect(again.code).toBe(1);
      expect(again.stderr).toMatch(/already exists/);

      const key = await admin(['key', 'create', 'acme_corp', '--name', 'ci']);
      expect(key.code).toBe(0);
      expect(key.stderr).toMatch(/shown once/);
      const token = key.stdout.trim();
      expect(token).toMatch(/^sc_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/);
      // Everything after the key's id: the secret is base64url, which may itself hold underscores.
      const secret = token.slice('sc_'.length + 12 + 1);

      const listed = await admin(['tenant', 'list', '--json']);
      expect(json<{ id: string; activeKeys: number }[]>(listed.stdout)).toContainEqual(
        expect.objectContaining({ id: 'acme_corp', activeKeys: 1 }),
      );
      const keys = await admin(['key', 'list', 'acme_corp', '--json']);
      const [stored] = json<{ id: string; name: string; revokedAt: string | null }[]>(keys.stdout);
      expect(stored).toMatchObject({ name: 'ci', revokedAt: null });
      // Neither the secret nor any part of it long enough not to occur by chance (a leak of half of it fails too).
      for (const part of [secret, secret.slice(0, 16), secret.slice(-16)]) expect(keys.stdout).not.toContain(part);

      server = await openServer();
      const [row] = await server.app.database.db.select().from(tenants).where(eq(tenants.id, 'acme_corp'));
      expect(row!.apiCredentialsEncrypted).not.toContain('acme-s3cret');
      expect(server.app.secrets.openJson(row!.apiCredentialsEncrypted!, 'acme_corp')).toEqual({ 'X-Api-Key': 'acme-s3cret' });

      const answer = await server.as(`Bearer ${token}`).request(ExecutionsQuery, { first: 5 });
      expect(answer.errors).toBeUndefined();
      expect(answer.data?.executions.edges).toEqual([]);

      if (backend === 'pglite') {
        // An embedded database belongs to one process: under a running server the CLI goes through its admin API
        // (test/admin-api.test.ts); stopped, the CLI opens the database itself.
        const throughServer = await admin(['key', 'list', 'acme_corp']);
        expect(throughServer.code).toBe(0);
        await closeServer();
      }
      const revoked = await admin(['key', 'revoke', stored!.id]);
      expect(revoked.code).toBe(0);
      expect(revoked.stdout).toMatch(new RegExp(`revoked ${stored!.id} \\(tenant acme_corp\\)`));

      server = await openServer();
      const refused = await server.as(`Bearer ${token}`).request(ExecutionsQuery, { first: 5 });
      expect(refused.errors?.map((e) => e.extensions?.code)).toEqual(['UNAUTHENTICATED']);
    }, scaledTimeout(60_000));

    it('explains bad usage with exit code 2 and unknown names with exit code 1', async () => {
      const unknownCommand = await admin(['tenant', 'delete', 'x']);
      expect(unknownCommand.code).toBe(2);
      expect(unknownCommand.stderr).toMatch(/unknown command "tenant delete"[\s\S]*usage:/);
      const missing = await admin(['key', 'create']);
      expect(missing.code).toBe(2);
      const noFile = await admin(['tenant', 'create', 'X', '--api-base-url', 'http://127.0.0.1:9', '--openapi', join(dir, 'missing.json')]);
      expect(noFile.code).toBe(1);
      expect(noFile.stderr).toBe(`error: the OpenAPI document ${join(dir, 'missing.json')} does not exist\n`);
      const badId = await admin(['tenant', 'create', 'X', '--id', 'Bad-Id']);
      expect(badId.code).toBe(1);
      expect(badId.stderr).toMatch(/tenant id "Bad-Id"/);
      {
        const unknownKey = await admin(['key', 'revoke', 'nosuchkey123']);
        expect(unknownKey.code).toBe(1);
        expect(unknownKey.stderr).toMatch(/does not exist/);
      }
    }, scaledTimeout(60_000));
  });
}
