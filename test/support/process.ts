import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const projectRoot = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Every process these helpers start, until it has exited: a test that fails or times out must not leave one
 * behind, holding a PGlite data directory (its lock) or a port while the next test starts.
 * test/support/setup.ts stops what is left after each test (commands) and after each file (services).
 */
const running = { commands: new Set<ChildProcess>(), services: new Set<ChildProcess>() };

function track(child: ChildProcess, kind: keyof typeof running): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  running[kind].add(child);
  return once(child, 'exit').then(([code, signal]) => {
    running[kind].delete(child);
    return { code: code as number | null, signal: signal as NodeJS.Signals | null };
  });
}

/** Tracks a service started some other way (a redis-server): stopped after the file if it is still running. */
export function trackService(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return track(child, 'services');
}

/** Kills (SIGKILL) the processes of that kind that are still running, and waits until they have exited. */
export async function killLeftoverProcesses(kind: keyof typeof running): Promise<void> {
  await Promise.all(
    [...running[kind]].map(async (child) => {
      const exited = once(child, 'exit');
      // A child that exited between the check and now has no listener left to fire: exitCode tells.
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    }),
  );
}

export interface ServiceProcess {
  child: ChildProcess;
  url: string;
  logs: Record<string, unknown>[];
  /** Resolves with the exit code (or signal) once the process has ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts `src/main.ts` through tsx (as `npm run dev` does), and waits for the line that says where it listens.
 * `nodeArgs` go to node itself (e.g. `--max-old-space-size=320`).
 */
export async function startServiceProcess(
  env: Record<string, string>,
  nodeArgs: string[] = [],
  /** The log line that says the process is ready: a worker (STEPCAST_ROLE=worker) serves no GraphQL and says so. */
  readyMessage = 'stepcast is listening',
): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'src/main.ts'], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? '', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = track(child, 'services');
  const logs: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry.msg === readyMessage) resolve(String(entry.url ?? ''));
      } catch {
        logs.push({ raw: line });
      }
    });
    void exited.then(({ code }) =>
      reject(new Error(`service exited with ${code} before listening: ${stderr.join('')} ${JSON.stringify(logs)}`)),
    );
  });
  return { child, url, logs, exited };
}

/** Peak (VmHWM) and current (VmRSS) resident memory of a process, in bytes, from Linux's /proc. */
export async function residentMemory(pid: number): Promise<{ peak: number; current: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kilobytes = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN) * 1024;
  return { peak: kilobytes('VmHWM'), current: kilobytes('VmRSS') };
}

/** Starts a new peak: VmHWM goes back to the current resident memory (Linux, writing 5 to clear_refs). */
export async function resetPeakMemory(pid: number): Promise<void> {
  await writeFile(`/proc/${pid}/clear_refs`, '5');
}

/** Stops the service with SIGTERM (SIGKILL if it does not stop within graceMs) and waits for it to exit. */
export async function stopServiceProcess(service: ServiceProcess, graceMs = 15_000): Promise<void> {
  if (service.child.exitCode !== null || service.child.signalCode !== null) return;
  service.child.kill('SIGTERM');
  const timer = setTimeout(() => service.child.kill('SIGKILL'), graceMs);
  await service.exited;
  clearTimeout(timer);
}

/**
 * Runs `npm run admin -- <args>` as a user would (without npm's own output), and collects what it printed.
 * With `signal` (a test's context.signal), a timed-out test kills the command and goes no further.
 */
export function runAdmin(
  args: string[],
  env: Record<string, string>,
  { signal }: { signal?: AbortSignal } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runTsxCommand('src/admin/cli.ts', args, { LOG_LEVEL: 'silent', ...env }, signal);
}

/** Runs `npm run eval -- <args>` as a user would (without npm's own output), as runAdmin does. */
export function runEvalCommand(
  args: string[],
  env: Record<string, string>,
  { signal }: { signal?: AbortSignal } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runTsxCommand('eval/run.ts', args, env, signal);
}

export interface RunningCommand {
  child: ChildProcess;
  /** Once it has exited: its exit code (null when a signal ended it) and what it printed. */
  exited: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/** Starts `npm run eval -- <args>` and returns at once, for a test that acts on it while it runs (a signal). */
export function startEvalCommand(args: string[], env: Record<string, string>, { signal }: { signal?: AbortSignal } = {}): RunningCommand {
  return startTsxCommand('eval/run.ts', args, env, signal);
}

function startTsxCommand(entry: string, args: string[], env: Record<string, string>, signal: AbortSignal | undefined): RunningCommand {
  signal?.throwIfAborted();
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = track(child, 'commands');
  // Its output is read to the end ('close') before it is handed over: 'exit' can come before the last of it.
  const closed = once(child, 'close');
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const kill = () => child.kill('SIGKILL');
  signal?.addEventListener('abort', kill, { once: true });
  return {
    child,
    exited: Promise.all([exited, closed]).then(([{ code }]) => {
      signal?.removeEventListener('abort', kill);
      signal?.throwIfAborted();
      return { code, stdout, stderr };
    }),
  };
}

async function runTsxCommand(
  entry: string,
  args: string[],
  env: Record<string, string>,
  signal: AbortSignal | undefined,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return startTsxCommand(entry, args, env, signal).exited;
}
