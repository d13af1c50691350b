import { isAbsolute, relative, resolve, sep } from 'node:path';
import type { Config } from './config.js';
import { DataDirInUseError } from './db/data-dir-lock.js';

/** What a data directory that cannot be made or written fails with: the user mends these by choosing another. */
const DATA_DIR_CODES = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'EISDIR', 'ENOSPC', 'EDQUOT']);

/** Whether path is dataDir or inside it, segment by segment (./data2 is not inside ./data). */
export function isInside(path: string, dataDir: string): boolean {
  const rel = relative(resolve(dataDir), resolve(path));
  return rel === '' || (!isAbsolute(rel) && rel.split(sep)[0] !== '..');
}

/**
 * A start that failed for a reason the user can mend: one line saying how, instead of a stack trace. undefined for
 * anything else, which keeps its stack (a bug, or a failure nobody has explained yet).
 */
export function startFailure(error: unknown, config: Config | undefined): string | undefined {
  if (error instanceof DataDirInUseError) return error.message;
  const { code, port, address } = error as { code?: string; port?: number; address?: string };
  const setting = port !== undefined && port === config?.demo.apiPort ? 'STEPCAST_DEMO_API_PORT' : 'PORT';
  if (code === 'EADDRINUSE') return `port ${port} is in use; set ${setting}`;
  if (code === 'EACCES' && port !== undefined) return `port ${port} needs privileges this process lacks; set ${setting}`;
  if (code === 'EADDRNOTAVAIL') return `${address ?? 'HOST'} is not an address of this machine; set HOST`;
  const { path, syscall } = error as { path?: string; syscall?: string };
  if (config && code && DATA_DIR_CODES.has(code) && typeof path === 'string' && syscall && isInside(path, config.dataDir)) {
    return `cannot ${syscall} ${path} (${code}); set DATA_DIR to a directory this process can write`;
  }
  return undefined;
}
