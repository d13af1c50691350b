// stepcast's admin CLI: `npm run admin -- <command>`. It reads the same settings as the service
// (DATABASE_URL or DATA_DIR, STEPCAST_ENCRYPTION_KEY) and talks to the database directly.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { loadSecretBox } from '../auth/secrets.js';
import { ConfigError, loadConfig } from '../config.js';
import { openDatabase, type Database } from '../db/client.js';
import { DataDirInUseError } from '../db/data-dir-lock.js';
import { AdminError, createApiKey, createTenant, listApiKeys, listTenants, revokeApiKey } from './tenants.js';

const USAGE = `usage: npm run admin -- <command>

  tenant create <name> [--id <id>] [--api-base-url <url> --openapi <file.json>]
                       [--credential "<Header>: <value>"]... [--allow-method <METHOD>]...
  tenant list
  key create <tenant id> [--name <label>]      prints the key once; only its hash is stored
  key list <tenant id>
  key revoke <key id>

add --json for machine-readable output.`;

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
  const database = await openDatabase(config.database, { tenantStatements: 1 });
  try {
    await dispatch(command, argument, values, database, config);
  } finally {
    await database.close();
  }
}

async function dispatch(
  command: string,
  argument: string | undefined,
  values: {
    id?: string;
    name?: string;
    'api-base-url'?: string;
    openapi?: string;
    credential?: string[];
    'allow-method'?: string[];
    json?: boolean;
  },
  database: Database,
  config: ReturnType<typeof loadConfig>,
): Promise<void> {
  const output = (human: string, json: unknown) => write(values.json ? JSON.stringify(json) : human);
  switch (command) {
    case 'tenant create': {
      const { box } = await loadSecretBox(config.encryptionKey, config.dataDir);
      const openapi = values.openapi ? (JSON.parse(await readFile(values.openapi, 'utf8')) as unknown) : undefined;
      const tenant = await createTenant(
        database,
        box,
        {
          name: argument!,
          id: values.id,
          apiBaseUrl: values['api-base-url'],
          openapi,
          credentials: values.credential ? Object.fromEntries(values.credential.map(parseCredential)) : undefined,
          allowedMethods: values['allow-method'],
        },
      );
      const summary = { id: tenant.id, name: tenant.name, dataSchema: tenant.dataSchema, dbRole: tenant.dbRole };
      output(
        `created tenant ${tenant.id} (schema ${tenant.dataSchema}, role ${tenant.dbRole ?? '-'}); load its data into that schema`,
        summary,
      );
      return;
    }
    case 'tenant list': {
      const tenants = await listTenants(database);
      output(table(tenants as unknown as Record<string, unknown>[]), tenants);
      return;
    }
    case 'key create': {
      const key = await createApiKey(database, argument!, values.name);
      if (!values.json) process.stderr.write('store this key now: it is shown once and cannot be recovered\n');
      output(key.token, key);
      return;
    }
    case 'key list': {
      const keys = await listApiKeys(database, argument!);
      output(table(keys as unknown as Record<string, unknown>[]), keys);
      return;
    }
    case 'key revoke': {
      const key = await revokeApiKey(database, argument!);
      output(`revoked ${key.id} (tenant ${key.tenantId}) at ${key.revokedAt!.toISOString()}`, {
        id: key.id,
        tenantId: key.tenantId,
        revokedAt: key.revokedAt,
      });
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
