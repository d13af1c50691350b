import { randomBytes } from 'node:crypto';
import { access, link, mkdir, mkdtemp, readdir, readFile, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { createServer as createNetServer } from 'node:net';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN_FILE_NAME, loadAdminToken } from '../src/admin/admin-token.js';
import { databaseIdentity, recordRunningServer, SERVER_RECORD_FILE_NAME } from '../src/admin/server-record.js';
import { apiKeys, tenants } from '../src/db/tables.js';
import { backends, createTestDatabase, postgresUrl } from './support/database.js';
import { ExecutionsQuery } from './support/operations.js';
import { seedPgliteDataDir } from './support/pglite-template.js';
import { runAdmin, startServiceProcess, stopServiceProcess } from './support/process.js';
import { overWs, startTestServer, type TestServer } from './support/server.js';
import { scaledTimeout } from './support/timing.js';

const json = <T>(text: string) => JSON.parse(text) as T;

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`npm run admin against a running server on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let dir: string;
    let dataDir: string;
    let server: TestServer | undefined;
    let testSignal: AbortSignal | undefined;
    /** The CLI as a user runs it beside the server: the same DATA_DIR, and nothing else (no DATABASE_URL, no token). */
    const admin = (args: string[], env: Record<string, string> = {}) =>
      runAdmin(args, { DATA_DIR: dataDir, ...sameDatabase(), ...env }, { signal: testSignal });
    /** The server's database as the CLI is told it: the DATABASE_URL of a server on PostgreSQL (PGlite's is DATA_DIR). */
    const sameDatabase = (): Record<string, string> => (server?.databaseUrl ? { DATABASE_URL: server.databaseUrl } : {});
    const adminUrl = (path: string) => new URL(`/admin/${path}`, server!.url).toString();

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'stepcast-admin-api-'));
      dataDir = join(dir, 'data');
      if (backend === 'pglite') await seedPgliteDataDir(dataDir);
      server = await startTestServer(backend, {
        env: {
          STEPCAST_AUTH: 'on',
          STEPCAST_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
          // Long enough that only the revocation itself can close a socket within the test.
          STEPCAST_AUTH_RECHECK_MS: '300000',
          DATA_DIR: dataDir,
        },
      });
    });
    beforeEach(({ signal }) => {
      testSignal = signal;
    });
    afterAll(async () => {
      await server?.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('keeps its admin token in the data directory, readable by its owner only', async () => {
      const { mode } = await stat(join(dataDir, ADMIN_TOKEN_FILE_NAME));
      expect(mode & 0o777).toBe(0o600);
      const record = json<{ pid: number; url: string }>(await readFile(join(dataDir, SERVER_RECORD_FILE_NAME), 'utf8'));
      const database = server!.databaseUrl ? new URL(server!.databaseUrl) : undefined;
      expect(record).toEqual({
        pid: process.pid,
        instanceId: expect.stringMatching(/^[A-Za-z0-9_-]{22}$/),
        url: server!.url,
        adminApi: true,
        database: database
          ? { kind: 'postgres', host: database.hostname, port: Number(database.port || 5432), database: database.pathname.slice(1) }
          : { kind: 'pglite', dataDir: await realpath(dataDir) },
      });
      // Who it names, not how to log in.
      if (database?.password) expect(JSON.stringify(record)).not.toContain(database.password);
    });

    it('lists tenants, creates a key that works at once, and revokes it so that the next request is refused', async () => {
      const created = await admin(['tenant', 'create', 'Acme Corp', '--json']);
      expect(created.stderr).toBe('');
      expect(created.code).toBe(0);
      expect(json(created.stdout)).toMatchObject({ id: 'acme_corp', dataSchema: 'tenant_acme_corp' });
      // Made by the server, in its database: the CLI was given neither DATABASE_URL nor a database it could open.
      const [row] = await server!.app.database.db.select().from(tenants).where(eq(tenants.id, 'acme_corp'));
      expect(row?.name).toBe('Acme Corp');

      const listed = await admin(['tenant', 'list', '--json']);
      expect(listed.code).toBe(0);
      expect(json<{ id: string; activeKeys: number }[]>(listed.stdout)).toContainEqual(
        expect.objectContaining({ id: 'acme_corp', activeKeys: 0 }),
      );
      const human = await admin(['tenant', 'list']);
      expect(human.stdout).toMatch(/^id\s+name\s+dataSchema/);
      expect(human.stdout).toMatch(/acme_corp\s+Acme Corp\s+tenant_acme_corp/);

      const key = await admin(['key', 'create', 'acme_corp', '--name', 'ci']);
      expect(key.code).toBe(0);
      expect(key.stderr).toMatch(/shown once/);
      const token = key.stdout.trim();
      expect(token).toMatch(/^sc_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/);

      const answer = await server!.as(`Bearer ${token}`).request(ExecutionsQuery, { first: 5 });
      expect(answer.errors).toBeUndefined();
      expect(answer.data?.executions.edges).toEqual([]);

      // A socket authenticated with the key: the revocation must close it now, not at the next sweep (5 minutes away).
      const ws = server!.as(`Bearer ${token}`).wsClient({ lazy: false, onNonLazyError: () => undefined });
      const connected = new Promise((resolve) => ws.on('connected', resolve));
      const closed = new Promise<{ code: number; reason: string }>((resolve) =>
        ws.on('closed', (event) => resolve(event as { code: number; reason: string })),
      );
      await connected;
      const overSocket = await overWs(ws, '{ executions(first: 1) { edges { cursor } } }');
      expect(overSocket.errors).toBeUndefined();

      const keys = await admin(['key', 'list', 'acme_corp', '--json']);
      const [stored] = json<{ id: string; name: string; revokedAt: string | null }[]>(keys.stdout);
      expect(stored).toMatchObject({ name: 'ci', revokedAt: null });

      // The whole key names its id: what `key create` printed revokes it.
      const revoked = await admin(['key', 'revoke', token]);
      expect(revoked.stderr).toBe('');
      expect(revoked.code).toBe(0);
      expect(revoked.stdout).toMatch(new RegExp(`^revoked ${stored!.id} \\(tenant acme_corp\\) at \\d{4}-`));

      const refused = await server!.as(`Bearer ${token}`).request(ExecutionsQuery, { first: 5 });
      expect(refused.errors?.map((e) => e.extensions?.code)).toEqual(['UNAUTHENTICATED']);
      expect(await closed).toMatchObject({ code: 4403 });
      const [keyRow] = await server!.app.database.db.select().from(apiKeys).where(eq(apiKeys.id, stored!.id));
      expect(keyRow?.revokedAt).toBeInstanceOf(Date);
    }, scaledTimeout(60_000));

    it.skipIf(!postgresUrl)('leaves the server alone when DATABASE_URL names another database', async () => {
      const other = await createTestDatabase();
      try {
        // The server recorded in DATA_DIR works on another database than this DATABASE_URL: the CLI opens its own.
        const env = { DATABASE_URL: other.url, STEPCAST_ENCRYPTION_KEY: randomBytes(32).toString('base64') };
        const created = await admin(['tenant', 'create', 'Elsewhere Inc', '--json'], env);
        expect(created.stderr).toBe('');
        expect(created.code).toBe(0);
        const listed = await admin(['tenant', 'list', '--json'], env);
        const ids = json<{ id: string }[]>(listed.stdout).map((tenant) => tenant.id);
        expect(ids).toContain('elsewhere_inc');
        expect(ids).not.toContain('acme_corp');
        const [onServer] = await server!.app.database.db.select().from(tenants).where(eq(tenants.id, 'elsewhere_inc'));
        expect(onServer).toBeUndefined();
      } finally {
        await other.drop();
      }
    }, scaledTimeout(60_000));

    it('forgets a recorded server that is gone though its pid lives, and works on the database', async () => {
      const elsewhere = await mkdtemp(join(tmpdir(), 'stepcast-admin-stale-'));
      try {
        // Its own database: on PGlite the server's directory is locked; on PostgreSQL it is the server's database.
        if (backend === 'pglite') await seedPgliteDataDir(elsewhere);
        const database =
          backend === 'pglite'
            ? { kind: 'pglite' as const, dataDir: elsewhere, maxMemoryMb: 256 }
            : { kind: 'postgres' as const, url: server!.databaseUrl!, poolSize: 1 };
        const closedPort = await new Promise<number>((resolve) => {
          const probe = createNetServer().listen(0, '127.0.0.1', () => {
            const { port } = probe.address() as { port: number };
            probe.close(() => resolve(port));
          });
        });
        const path = join(elsewhere, SERVER_RECORD_FILE_NAME);
        // A live pid (this test's), but nothing listens at the URL (refused), or another instance does.
        for (const url of [`http://127.0.0.1:${closedPort}/graphql`, server!.url]) {
          const stale = { pid: process.pid, instanceId: 'gone', url, adminApi: true, database: await databaseIdentity(database) };
          await writeFile(path, JSON.stringify(stale));
          const listed = await runAdmin(['tenant', 'list', '--json'], { DATA_DIR: elsewhere, ...sameDatabase() }, { signal: testSignal });
          expect(listed.stderr).toBe('');
          expect(listed.code).toBe(0);
          if (backend === 'postgres') expect(json<{ id: string }[]>(listed.stdout).map((tenant) => tenant.id)).toContain('acme_corp');
          await expect(access(path)).rejects.toMatchObject({ code: 'ENOENT' });
        }
      } finally {
        await rm(elsewhere, { recursive: true, force: true });
      }
    }, scaledTimeout(60_000));

    it('refuses a missing or wrong admin token and any tenant key, and says why', async () => {
      const key = await admin(['key', 'create', 'acme_corp', '--json']);
      const { token: tenantKey } = json<{ token: string }>(key.stdout);

      const missing = await fetch(adminUrl('tenants'));
      expect(missing.status).toBe(401);
      expect(missing.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect(await missing.json()).toEqual({
        error: { code: 'UNAUTHENTICATED', message: 'the admin API needs Authorization: Bearer <admin token>' },
      });

      const wrong = await fetch(adminUrl('tenants'), { headers: { authorization: `Bearer ${randomBytes(32).toString('base64url')}` } });
      expect(wrong.status).toBe(401);
      expect(await wrong.json()).toMatchObject({ error: { code: 'UNAUTHENTICATED', message: 'the admin token is wrong' } });

      // A tenant's key opens nothing of the admin API, not even its own tenant's keys, and revokes nothing.
      for (const [method, path] of [['GET', 'tenants'], ['GET', 'tenants/acme_corp/keys'], ['POST', `keys/${tenantKey.slice(3, 15)}/revoke`]] as const) {
        const answer = await fetch(adminUrl(path), { method, headers: { authorization: `Bearer ${tenantKey}` } });
        expect(answer.status).toBe(403);
        expect(await answer.json()).toMatchObject({ error: { code: 'FORBIDDEN' } });
      }
      const stillWorks = await server!.as(`Bearer ${tenantKey}`).request(ExecutionsQuery, { first: 1 });
      expect(stillWorks.errors).toBeUndefined();

      // The CLI with a token that is not the server's.
      const wrongCli = await admin(['tenant', 'list'], { STEPCAST_ADMIN_TOKEN: randomBytes(32).toString('base64url') });
      expect(wrongCli.code).toBe(1);
      expect(wrongCli.stderr).toMatch(/^error: the admin token is wrong: STEPCAST_ADMIN_TOKEN must be the server's/);
      expect(wrongCli.stdout).toBe('');

      // Pointed at the server (STEPCAST_URL) from elsewhere, without a token: it says where to get one.
      const elsewhere = await mkdtemp(join(tmpdir(), 'stepcast-admin-elsewhere-'));
      try {
        const noToken = await runAdmin(['tenant', 'list'], { DATA_DIR: elsewhere, STEPCAST_URL: server!.url }, { signal: testSignal });
        expect(noToken.code).toBe(1);
        expect(noToken.stderr).toMatch(/needs its admin token: set STEPCAST_ADMIN_TOKEN/);
        // With the server's token it works, from any directory: --url takes the GraphQL URL the server printed.
        const adminToken = (await readFile(join(dataDir, ADMIN_TOKEN_FILE_NAME), 'utf8')).trim();
        const withToken = await runAdmin(
          ['tenant', 'list', '--json', '--url', server!.url],
          { DATA_DIR: elsewhere, STEPCAST_ADMIN_TOKEN: adminToken },
          { signal: testSignal },
        );
        expect(withToken.code).toBe(0);
        expect(json<{ id: string }[]>(withToken.stdout).map((tenant) => tenant.id)).toContain('acme_corp');
      } finally {
        await rm(elsewhere, { recursive: true, force: true });
      }
    }, scaledTimeout(60_000));

    it('answers bad requests with their status and code', async () => {
      const adminToken = (await readFile(join(dataDir, ADMIN_TOKEN_FILE_NAME), 'utf8')).trim();
      const call = async (method: string, path: string, body?: unknown) => {
        const response = await fetch(adminUrl(path), {
          method,
          headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        return { status: response.status, body: (await response.json()) as { error?: { code: string; message: string } } };
      };
      expect(await call('POST', 'tenants', { name: 'Acme Corp' })).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT' } } });
      expect(await call('POST', 'tenants', { name: 42 })).toMatchObject({ status: 400, body: { error: { code: 'BAD_REQUEST' } } });
      expect(await call('POST', 'tenants/nobody/keys', {})).toMatchObject({ status: 404, body: { error: { code: 'NOT_FOUND' } } });
      expect(await call('POST', 'keys/nosuchkey123/revoke')).toMatchObject({
        status: 404,
        body: { error: { message: 'API key nosuchkey123 does not exist' } },
      });
      expect(await call('DELETE', 'tenants')).toMatchObject({ status: 405 });
      expect(await call('GET', 'nothing')).toMatchObject({ status: 404 });
    });

    it('answers malformed ids and NUL characters with 400, not 500', async () => {
      const adminToken = (await readFile(join(dataDir, ADMIN_TOKEN_FILE_NAME), 'utf8')).trim();
      const call = async (method: string, path: string, body?: unknown) => {
        const response = await fetch(adminUrl(path), {
          method,
          headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        return { status: response.status, body: (await response.json()) as { error?: { code: string; message: string } } };
      };
      expect(await call('GET', 'tenants/%ZZ/keys')).toEqual({
        status: 400,
        body: { error: { code: 'BAD_REQUEST', message: 'the path segment "%ZZ" is not valid percent-encoding' } },
      });
      for (const [method, path] of [['GET', 'tenants/a%00b/keys'], ['POST', 'keys/a%00b/revoke'], ['GET', 'tenants/a%20b/keys']] as const) {
        expect(await call(method, path)).toMatchObject({
          status: 400,
          body: { error: { code: 'BAD_REQUEST', message: expect.stringMatching(/is not an id: letters, digits/) } },
        });
      }
      const nul = { status: 400, body: { error: { code: 'BAD_REQUEST', message: expect.stringMatching(/must not contain a NUL character/) } } };
      expect(await call('POST', 'tenants', { name: 'x\u0000y' })).toMatchObject(nul);
      expect(await call('POST', 'tenants', { name: 'Nul Creds', credentials: { 'X-Key': 'a\u0000' } })).toMatchObject(nul);
      expect(await call('POST', 'tenants', { name: 'Nul Methods', allowedMethods: ['GE\u0000T'] })).toMatchObject(nul);
      expect(
        await call('POST', 'tenants', {
          name: 'Nul Api',
          apiBaseUrl: 'http://127.0.0.1:9',
          openapi: { openapi: '3.0.3', info: { title: 'a\u0000b', version: '1' }, paths: {} },
        }),
      ).toMatchObject(nul);
      expect(await call('POST', 'tenants/acme_corp/keys', { name: 'x\u0000y' })).toMatchObject(nul);
    });

    it('counts a chunked body as it arrives and answers 413 past the limit', async () => {
      const adminToken = (await readFile(join(dataDir, ADMIN_TOKEN_FILE_NAME), 'utf8')).trim();
      const chunk = Buffer.alloc(1_048_576, 0x20);
      const request = httpRequest(adminUrl('tenants'), {
        method: 'POST',
        // No Content-Length: 20 MiB sent chunked, past the 16 MiB limit.
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
      });
      try {
        const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
          request.once('response', (response) => {
            let body = '';
            response.on('data', (data: Buffer) => (body += data.toString()));
            response.once('end', () => resolve({ status: response.statusCode!, body }));
            response.once('error', reject);
          });
          request.once('error', reject);
        });
        for (let sent = 0; sent < 20; sent++) {
          if (!request.write(chunk)) await Promise.race([new Promise((resolve) => request.once('drain', resolve)), answered.catch(() => undefined)]);
        }
        request.end();
        const { status, body } = await answered;
        expect(status).toBe(413);
        expect(JSON.parse(body)).toMatchObject({ error: { code: 'PAYLOAD_TOO_LARGE' } });
      } finally {
        request.destroy();
      }
    }, scaledTimeout(30_000));

    it('logs an error of the listening socket instead of ending the process', async () => {
      // ws (noServer) listens for none: without the server's own listener, emit would throw (and the process end).
      server!.app.httpServer!.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' }));
      const answer = await fetch(adminUrl('instance'));
      expect(answer.status).toBe(200);
    });

    it('forgets the server when it stops, and the CLI works on the database directly again', async () => {
      await server!.close();
      server = undefined;
      await expect(access(join(dataDir, SERVER_RECORD_FILE_NAME))).rejects.toMatchObject({ code: 'ENOENT' });
      // PostgreSQL's test database went with its server; PGlite's directory stays, and the CLI opens it itself.
      if (backend === 'pglite') {
        const listed = await admin(['tenant', 'list', '--json']);
        expect(listed.stderr).toBe('');
        expect(listed.code).toBe(0);
        expect(json<{ id: string }[]>(listed.stdout).map((tenant) => tenant.id)).toContain('acme_corp');
      }
    }, scaledTimeout(60_000));
  });
}

describe('refused admin requests in the log', () => {
  it('logs the first refusal with its reason, not one line per attempt', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'stepcast-admin-log-'));
    try {
      await seedPgliteDataDir(dataDir);
      const service = await startServiceProcess({ DATA_DIR: dataDir, STEPCAST_DEMO_USERS: '50', STEPCAST_DEMO_API: 'off' });
      try {
        const tenants = new URL('/admin/tenants', service.url);
        for (let attempt = 0; attempt < 5; attempt++) {
          const answer = await fetch(tenants, { headers: { authorization: `Bearer wrong-${attempt}` } });
          expect(answer.status).toBe(401);
        }
      } finally {
        // Its log is complete once it has exited.
        await stopServiceProcess(service);
      }
      const refusals = service.logs.filter((line) => String(line.msg).startsWith('admin API request'));
      expect(refusals).toEqual([
        expect.objectContaining({ msg: 'admin API request refused', reason: 'a wrong admin token', remoteAddress: '127.0.0.1' }),
      ]);
      expect(JSON.stringify(service.logs)).not.toContain('wrong-');
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, scaledTimeout(60_000));
});

describe('the admin token file and the server record', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stepcast-admin-files-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses an empty token file rather than serving with an empty token', async () => {
    await writeFile(join(dir, ADMIN_TOKEN_FILE_NAME), '', { mode: 0o600 });
    await expect(loadAdminToken(undefined, dir, { production: false })).rejects.toThrow(/admin token file .* is empty/);
  });

  it('gives every starter the same whole token when several start at once', async () => {
    const tokens = await Promise.all(Array.from({ length: 8 }, () => loadAdminToken(undefined, dir, { production: false })));
    expect(new Set(tokens.map((loaded) => loaded!.token)).size).toBe(1);
    expect(tokens[0]!.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect((await readdir(dir)).sort()).toEqual([ADMIN_TOKEN_FILE_NAME]);
  });

  it('says in one line that the CLI cannot read the token file', async () => {
    // A directory where the file should be: unreadable whoever runs the test (root reads a mode 000 file).
    await mkdir(join(dir, ADMIN_TOKEN_FILE_NAME));
    const answer = await runAdmin(['tenant', 'list'], { DATA_DIR: dir, STEPCAST_URL: 'http://127.0.0.1:9/graphql' });
    expect(answer.code).toBe(1);
    expect(answer.stderr).toBe(
      `error: cannot read the admin token file ${join(dir, ADMIN_TOKEN_FILE_NAME)} (EISDIR): run as its owner, or set STEPCAST_ADMIN_TOKEN\n`,
    );
  }, scaledTimeout(30_000));

  it('replaces the server record whole instead of rewriting it in place', async () => {
    const path = join(dir, SERVER_RECORD_FILE_NAME);
    await writeFile(path, 'old');
    // A second name for the old file: written in place, it would change too (and a reader could see half a record).
    await link(path, join(dir, 'old-record'));
    const forget = await recordRunningServer(dir, {
      instanceId: 'one',
      url: 'http://127.0.0.1:9/graphql',
      adminApi: true,
      database: { kind: 'pglite', dataDir: dir },
    });
    expect(await readFile(join(dir, 'old-record'), 'utf8')).toBe('old');
    expect(json(await readFile(path, 'utf8'))).toMatchObject({ pid: process.pid, instanceId: 'one' });
    expect((await readdir(dir)).sort()).toEqual(['old-record', SERVER_RECORD_FILE_NAME]);
    await forget();
    await expect(access(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
