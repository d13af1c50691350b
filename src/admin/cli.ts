// stepcast's admin CLI: `npm run admin -- <command>`. It reads the same settings as the service (DATABASE_URL or
// DATA_DIR, STEPCAST_ENCRYPTION_KEY). With a server running on them (found in DATA_DIR, or named by --url or
// STEPCAST_URL) it goes through the server's admin API; with none, it opens the database itself.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { parseApiKey } from '../auth/api-keys.js';
import { loadSecretBox } from '../auth/secrets.js';
import { ConfigError, loadConfig, type Config } from '../config.js';
import { openDatabase } from '../db/client.js';
import { DataDirInUseError } from '../db/data-dir-lock.js';
import { adminApiBase, httpAdmin, serverInstance } from './admin-client.js';
import { readAdminToken } from './admin-token.js';
import { databaseIdentity, findRunningServer, forgetServer, sameDatabase, type ServerRecord } from './server-record.js';
import { AdminError, databaseAdmin, type AdminOperations } from './tenants.js';

const USAGE = `usage: npm run admin -- <command>

  tenant create <name> [--id <id>] [--api-base-url <url> --openapi <file.json>]
                       [--credential "<Header>: <value>"]... [--allow-method <METHOD>]...
  tenant list
  key create <tenant id> [--name <label>]      prints the key once; only its hash is stored
  key list <tenant id>
  key revoke <key id or the key itself>

add --json for machine-readable output. With a server recorded in this DATA_DIR running on the same database (or
at --url / STEPCAST_URL), the commands go through its admin API, with STEPCAST_ADMIN_TOKEN or the token file the
server keeps in DATA_DIR.`;

class UsageError extends Error {}

const write = (text: string) => process.stdout.write(`${text}\n`);

function table(rows: Record<string, unknown>[]): string {
  if (rows.length === 0) return '(none)';
  const columns = Object.keys(rows[0]!);
  const cell = (value: unknown) => (value instanceof Date ? value.toISOString() : value === null ? '-' : String(value));
  const widths = columns.map((column) => Math.max(column.length, ...rows.map((row) => cell(row[column]).length)));
  const line = (values: string[]) => values.map((value, i) => value.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(columns), ...rows.map((row) => line(columns.map((column) => cell(row[column]))))].join('\n');
}

function parseCredential(text: string): [string, string] {
  const colon = text.indexOf(':');
  if (colon <= 0) throw new UsageError(`--credential "${text}" must read "<Header>: <value>"`);
  return [text.slice(0, colon).trim(), text.slice(colon + 1).trim()];
}

async function run(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      id: { type: 'string' },
      name: { type: 'string' },
      'api-base-url': { type: 'string' },
      openapi: { type: 'string' },
      credential: { type: 'string', multiple: true },
      'allow-method': { type: 'string', multiple: true },
      url: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const [noun, verb, argument, ...extra] = positionals;
  if (values.help || !noun) {
    write(USAGE);
    return;
  }
  const command = `${noun} ${verb ?? ''}`.trim();
  const needsArgument = ['tenant create', 'key create', 'key list', 'key revoke'].includes(command);
  if (!['tenant create', 'tenant list', 'key create', 'key list', 'key revoke'].includes(command)) {
    throw new UsageError(`unknown command "${command}"`);
  }
  if (needsArgument && !argument) throw new UsageError(`"${command}" needs an argument`);
  if (extra.length > 0) throw new UsageError(`unexpected arguments: ${extra.join(' ')}`);

  const config = loadConfig();
  const serverUrl = values.url ?? config.admin.serverUrl ?? (await runningServerUrl(config));
  if (serverUrl) {
    adminApiBase(serverUrl);
    const token = await readAdminToken(config.admin.token, config.dataDir);
    if (!token) {
      throw new AdminError(
        `the server at ${serverUrl} needs its admin token: set STEPCAST_ADMIN_TOKEN, or DATA_DIR to the server's (it keeps the token there)`,
      );
    }
    await dispatch(command, argument!, values, httpAdmin(serverUrl, token));
    return;
  }
  const database = await openDatabase(config.database, { tenantStatements: 1 });
  try {
    const secrets = async () => (await loadSecretBox(config.encryptionKey, config.dataDir)).box;
    await dispatch(command, argument!, values, databaseAdmin(database, secrets));
  } finally {
    await database.close();
  }
}

/**
 * A server recorded in DATA_DIR with its admin API on, on the database this configuration names (DATABASE_URL's,
 * or DATA_DIR's embedded one), and still there: the same instance answers at its URL. A server on another database
 * is not this command's; one without its admin API leaves the CLI on the database (PGlite refuses, locked).
 */
async function runningServerUrl(config: Config): Promise<string | undefined> {
  const server = await findRunningServer(config.dataDir);
  if (!server?.adminApi || !sameDatabase(server.database, await databaseIdentity(config.database))) return undefined;
  const state = await recordedInstanceState(server);
  if (state === 'running') return server.url;
  // Gone, though its pid lives on in another process (pid 1 of a container after a SIGKILL): forget it. One that
  // does not answer in time is left recorded; the CLI tries the database (a PGlite directory still held says so).
  if (state === 'gone') await forgetServer(config.dataDir, server).catch(() => undefined);
  return undefined;
}

/** running: that instance answers at the URL; gone: the connection is refused, or another instance or program answers. */
async function recordedInstanceState(server: ServerRecord): Promise<'running' | 'gone' | 'unknown'> {
  try {
    const answered = await serverInstance(server.url);
    if (answered === undefined) return 'gone';
    return answered === server.instanceId ? 'running' : 'gone';
  } catch (error) {
    const cause = (error as { cause?: { code?: string; errors?: { code?: string }[] } }).cause;
    return (cause?.code ?? cause?.errors?.[0]?.code) === 'ECONNREFUSED' ? 'gone' : 'unknown';
  }
}

async function readJsonFile(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new AdminError(code === 'ENOENT' ? `${what} ${path} does not exist` : `cannot read ${what} ${path} (${code ?? String(error)})`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new AdminError(`${what} ${path} is not JSON: ${(error as Error).message}`);
  }
}

async function dispatch(
  command: string,
  argument: string,
  values: {
    id?: string;
    name?: string;
    'api-base-url'?: string;
    openapi?: string;
    credential?: string[];
    'allow-method'?: string[];
    json?: boolean;
  },
  admin: AdminOperations,
): Promise<void> {
  const output = (human: string, json: unknown) => write(values.json ? JSON.stringify(json) : human);
  switch (command) {
    case 'tenant create': {
      const openapi = values.openapi ? await readJsonFile(values.openapi, 'the OpenAPI document') : undefined;
      const tenant = await admin.createTenant({
        name: argument,
        id: values.id,
        apiBaseUrl: values['api-base-url'],
        openapi,
        credentials: values.credential ? Object.fromEntries(values.credential.map(parseCredential)) : undefined,
        allowedMethods: values['allow-method'],
      });
      output(
        `created tenant ${tenant.id} (schema ${tenant.dataSchema}, role ${tenant.dbRole ?? '-'}); load its data into that schema`,
        tenant,
      );
      return;
    }
    case 'tenant list': {
      const tenants = await admin.listTenants();
      output(table(tenants as unknown as Record<string, unknown>[]), tenants);
      return;
    }
    case 'key create': {
      const key = await admin.createApiKey(argument, values.name);
      if (!values.json) process.stderr.write('store this key now: it is shown once and cannot be recovered\n');
      output(key.token, key);
      return;
    }
    case 'key list': {
      const keys = await admin.listApiKeys(argument);
      output(table(keys as unknown as Record<string, unknown>[]), keys);
      return;
    }
    case 'key revoke': {
      // The whole key names its id too: `key revoke "$KEY"` works with what `key create` printed.
      const key = await admin.revokeApiKey(parseApiKey(argument)?.id ?? argument);
      const revokedAt = new Date(key.revokedAt!).toISOString();
      output(`revoked ${key.id} (tenant ${key.tenantId}) at ${revokedAt}`, { id: key.id, tenantId: key.tenantId, revokedAt });
      return;
    }
  }
}

try {
  await run(process.argv.slice(2));
} catch (error) {
  if (error instanceof UsageError || (error instanceof TypeError && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS'))) {
    process.stderr.write(`${error.message}\n\n${USAGE}\n`);
    process.exitCode = 2;
  } else if (error instanceof AdminError || error instanceof ConfigError || error instanceof DataDirInUseError) {
    process.stderr.write(`error: ${error.message}\n`);
    process.exitCode = 1;
  } else {
    process.stderr.write(`error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  }
}
