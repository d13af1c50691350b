import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../src/admin/tenants.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import { promptOf, startScriptedLlm, type ScriptedLlm } from './fixtures/scripted-llm.js';
import type { PlanInput } from './generated/graphql.js';
import { backends } from './support/database.js';
import { ApproveStepMutation, ExecutionsQuery, StepUpdatesSubscription } from './support/operations.js';
import { fetchExecution, sqlStep, submitPlan } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

const projectRoot = fileURLToPath(new URL('../', import.meta.url));
const bin = join(projectRoot, 'bin', 'stepcast.mjs');

const TWO_STEPS: PlanInput = {
  query: 'Which groups do the first five active users belong to?',
  steps: [
    { kind: 'SQL', queryContext: 'the first five active users', entity: 'users', sql: "SELECT id, email FROM users WHERE status = 'active' ORDER BY id LIMIT 5" },
    { kind: 'SQL', queryContext: 'how many of them', sql: 'SELECT count(*) AS n FROM step_1' },
  ],
};

const WITH_APPROVAL: PlanInput = {
  query: 'count the users once somebody agrees',
  steps: [
    sqlStep('SELECT id FROM users ORDER BY id LIMIT 3'),
    sqlStep('SELECT count(*) AS n FROM step_1', { approval: true }),
    sqlStep('SELECT n * 2 AS twice FROM step_2'),
  ],
};

interface JsonUpdate {
  executionId: string;
  sequence: number;
  type: string;
  status: string;
  step: { index: number; status: string; error: { code: string } | null } | null;
}

/** A `stepcast` process: what it printed so far, and its end. */
interface CliProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves once stdout matches; rejects if the process ends first. */
  waitForOutput(pattern: RegExp): Promise<RegExpExecArray>;
  exited: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

const started = new Set<ChildProcess>();

function startCli(args: string[], { env = {}, stdin }: { env?: Record<string, string>; stdin?: string } = {}): CliProcess {
  const child = spawn(process.execPath, [bin, ...args], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  started.add(child);
  let stdout = '';
  let stderr = '';
  const waiters: (() => void)[] = [];
  child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    for (const waiter of [...waiters]) waiter();
  });
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdin!.end(stdin ?? '');
  // 'close', not 'exit': the child's stdout and stderr are read to their end before the test looks at them.
  const exited = once(child, 'close').then(([code]) => {
    started.delete(child);
    return { code: code as number | null, stdout, stderr };
  });
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    waitForOutput(pattern) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = pattern.exec(stdout);
          if (!match) return;
          waiters.splice(waiters.indexOf(check), 1);
          resolve(match);
        };
        waiters.push(check);
        check();
        void exited.then(({ code }) => reject(new Error(`stepcast exited with ${code} before printing ${pattern}:\n${stdout}\n${stderr}`)));
      });
    },
  };
}

/** Runs `stepcast <args>` to its end. */
function cli(args: string[], options: { env?: Record<string, string>; stdin?: string } = {}) {
  return startCli(args, options).exited;
}

// util-linux `script` runs a command on a pseudo-terminal: the CLI sees a TTY as in a user's terminal.
const scriptBinary = ['/usr/bin/script', '/bin/script'].find((path) => existsSync(path));

/** Runs `stepcast <args>` on a pseudo-terminal and collects what the terminal received. */
async function cliOnTerminal(args: string[], env: Record<string, string>) {
  const command = [process.execPath, bin, ...args].map((word) => `'${word.replaceAll("'", "'\\''")}'`).join(' ');
  const child = spawn(scriptBinary!, ['-qefc', command, '/dev/null'], { cwd: projectRoot, env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  started.add(child);
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  started.delete(child);
  // Escape sequences spelled out, so that the assertions read them.
  return { code, output: output.replaceAll('\u001b', '<ESC>') };
}

const jsonLines = <T>(text: string): T[] =>
  text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as T);

afterEach(async () => {
  await Promise.all(
    [...started].map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    }),
  );
});

/** A TCP proxy in front of the server whose connections the test can cut, and refuse until resumed. */
async function startCuttableProxy(
  target: URL,
): Promise<{ url: string; cut(): void; resume(): void; retarget(to: URL): void; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let refusing = false;
  const proxy: Server = createServer((inbound) => {
    if (refusing) return inbound.destroy();
    const outbound = connect(Number(target.port), target.hostname);
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    inbound.pipe(outbound).pipe(inbound);
    inbound.on('close', () => outbound.destroy());
    outbound.on('close', () => inbound.destroy());
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  const url = new URL(target);
  url.port = String((proxy.address() as AddressInfo).port);
  return {
    url: url.toString(),
    cut() {
      refusing = true;
      for (const socket of sockets) socket.destroy();
    },
    resume() {
      refusing = false;
    },
    retarget(to) {
      target = to;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      proxy.close();
      await once(proxy, 'close');
    },
  };
}

describe('stepcast without a server', () => {
  it('answers bad usage with one line and exit code 64', async () => {
    const [unknown, missing, badStep, badStatus, noFile, notJson] = await Promise.all([
      cli(['bogus']),
      cli(['run']),
      cli(['approve', 'some-id', 'two']),
      cli(['ls', '--status', 'DONE']),
      cli(['run', 'no-such-plan.json']),
      cli(['run', '-'], { stdin: '{ "query": ' }),
    ]);
    expect(unknown.stderr.trim()).toBe("error: unknown command 'bogus'");
    expect(missing.stderr.trim()).toBe("error: missing required argument 'file'");
    expect(badStep.stderr.trim()).toBe("error: command-argument value 'two' is invalid for argument 'step'. expected a whole number");
    expect(badStatus.stderr.trim()).toBe("error: option '--status <statuses>' argument 'DONE' is invalid. unknown status DONE; one of QUEUED, RUNNING, WAITING, SUCCEEDED, FAILED, CANCELLED");
    expect(noFile.stderr.trim()).toBe('error: cannot read plan no-such-plan.json: no such file');
    expect(notJson.stderr).toMatch(/^error: plan from stdin is not JSON: [^\n]+\n$/);
    for (const result of [unknown, missing, badStep, badStatus, noFile, notJson]) {
      expect(result.code).toBe(64);
      expect(result.stdout).toBe('');
    }
  });

  it('says in one line that it cannot reach the server, with exit code 4', async () => {
    // A port that was free a moment ago: nothing listens on it.
    const probe = createServer().listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const port = (probe.address() as AddressInfo).port;
    probe.close();
    await once(probe, 'close');
    const result = await cli(['ls', '--url', `http://127.0.0.1:${port}`]);
    expect(result.code).toBe(4);
    expect(result.stderr.trim()).toBe(`error: cannot reach stepcast at http://127.0.0.1:${port}/graphql: connect ECONNREFUSED 127.0.0.1:${port}`);
    expect(result.stdout).toBe('');
  });
});

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`stepcast CLI on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let llm: ScriptedLlm;
    let server: TestServer;
    let dir: string;
    let env: Record<string, string>;
    let succeededId: string;
    // Printing and parsing are the CLI's own, the same on either database: once, on PGlite. Following runs on both.
    const onPgliteOnly = it.skipIf(backend !== 'pglite');

    beforeAll(async () => {
      llm = await startScriptedLlm();
      server = await startTestServer(backend, {
        env: { OPENAI_BASE_URL: llm.baseUrl, STEPCAST_PLANNER_MODEL: 'planner-model', STEPCAST_LLM_MAX_RETRIES: '0', STEPCAST_DEMO_API: 'off' },
      });
      dir = await mkdtemp(join(tmpdir(), 'stepcast-cli-'));
      await writeFile(join(dir, 'plan.json'), JSON.stringify(TWO_STEPS));
      env = { STEPCAST_URL: server.url };
    });
    afterAll(async () => {
      await server?.close();
      await llm?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('runs a plan file to SUCCEEDED: a line per step, a summary, exit code 0', async () => {
      const result = await cli(['run', join(dir, 'plan.json'), '--correlation-id', `cli-ok-${backend}`], { env });
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      const lines = result.stdout.trimEnd().split('\n');
      expect(lines[0]).toMatch(/^execution [0-9a-f-]{36} \(correlation cli-ok-\w+\): Which groups do the first five active users belong to\?$/);
      expect(lines[1]).toMatch(/^step 1\/2 SQL the first five active users \(users\) {2}SUCCEEDED {2}5 records {2}\d+(\.\d)? m?s$/);
      expect(lines[2]).toMatch(/^step 2\/2 SQL how many of them {2}SUCCEEDED {2}1 record {2}\d+(\.\d)? m?s$/);
      expect(lines[3]).toMatch(/^SUCCEEDED in \d+(\.\d)? m?s: 2 of 2 steps succeeded$/);
      expect(lines).toHaveLength(4);
      // Piped, not a terminal: no spinner frames and no colours.
      expect(result.stdout).not.toContain("\r");
      expect(result.stdout).not.toContain("\u001b");
      succeededId = /^execution (\S+)/.exec(lines[0]!)![1]!;
      expect((await fetchExecution(server, succeededId)).status).toBe('SUCCEEDED');
    });

    it('reads the plan from stdin with -, and --json prints one JSON object per update, in sequence', async () => {
      const result = await cli(['run', '-', '--json'], { env, stdin: JSON.stringify(TWO_STEPS) });
      expect(result.code).toBe(0);
      const updates = jsonLines<JsonUpdate>(result.stdout);
      expect(updates.map((u) => u.sequence)).toEqual(updates.map((_, i) => i + 1));
      expect(updates.map((u) => (u.step ? `${u.type}:${u.step.index}` : u.type))).toEqual([
        'EXECUTION_STARTED',
        'STEP_STARTED:1',
        'STEP_SUCCEEDED:1',
        'STEP_STARTED:2',
        'STEP_SUCCEEDED:2',
        'EXECUTION_SUCCEEDED',
      ]);
      expect(new Set(updates.map((u) => u.executionId)).size).toBe(1);
    });

    it.skipIf(backend !== 'pglite' || !scriptBinary)(
      `on a terminal, shows a spinner while a step runs and colours, but no colours with NO_COLOR${scriptBinary ? '' : ' (skipped: util-linux script is not installed)'}`,
      async () => {
        const [coloured, plain] = await Promise.all([
          cliOnTerminal(['run', join(dir, 'plan.json')], env),
          cliOnTerminal(['run', join(dir, 'plan.json')], { ...env, NO_COLOR: '1' }),
        ]);
        for (const { code, output } of [coloured, plain]) {
          expect(code).toBe(0);
          // The spinner's line, rewritten in place, then cleared for the step's own line.
          expect(output).toMatch(/\r<ESC>\[2K[|/\\-] step 1\/2 SQL the first five active users \(users\) \d+\.\d s/);
          expect(output).toMatch(/\r<ESC>\[2Kstep 2\/2 SQL how many of them {2}.*SUCCEEDED/);
        }
        expect(coloured.output).toContain('<ESC>[32mSUCCEEDED<ESC>[39m  5 records');
        expect(plain.output).not.toMatch(/<ESC>\[\d+m/);
        expect(plain.output).toContain('SUCCEEDED  5 records');
      },
    );

    it('exits 1 for a plan that FAILED, with the error code shown', async () => {
      const plan = { query: 'a plan that fails', steps: [sqlStep('SELECT no_such_column FROM users'), sqlStep('SELECT 1 AS one')] };
      const result = await cli(['run', '-'], { env, stdin: JSON.stringify(plan) });
      expect(result.code).toBe(1);
      expect(result.stdout).toMatch(/^step 1\/2 SQL .* {2}FAILED/m);
      expect(result.stdout).toMatch(/^ {4}SQL_ERROR: .*no_such_column/m);
      expect(result.stdout).toMatch(/^step 2\/2 SQL .* {2}SKIPPED$/m);
      expect(result.stdout).toMatch(/^FAILED in .*: 0 of 2 steps succeeded, 1 failed\nSQL_ERROR: /m);
    });

    it('exits 2 for an execution cancelled with `stepcast cancel` from another process', async () => {
      const following = startCli(['run', '-', '--json'], { env, stdin: JSON.stringify(WITH_APPROVAL) });
      const [, id] = await following.waitForOutput(/"executionId":"([^"]+)","sequence":\d+,"type":"STEP_WAITING"/);
      const cancel = await cli(['cancel', id!], { env });
      expect(cancel.stdout.trim()).toBe(`${id} CANCELLED`);
      expect(cancel.code).toBe(0);
      const result = await following.exited;
      expect(result.code).toBe(2);
      const updates = jsonLines<JsonUpdate>(result.stdout);
      expect(updates.map((u) => u.sequence)).toEqual(updates.map((_, i) => i + 1));
      expect(updates.at(-1)).toMatchObject({ type: 'EXECUTION_CANCELLED', status: 'CANCELLED' });
      expect((await fetchExecution(server, id!)).status).toBe('CANCELLED');
    });

    onPgliteOnly('--detach prints the id and returns at once; watch follows it later', async () => {
      const detached = await cli(['run', join(dir, 'plan.json'), '--detach'], { env });
      expect(detached.code).toBe(0);
      const id = detached.stdout.trim();
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
      const [watched, asJson] = await Promise.all([
        cli(['watch', id], { env }),
        cli(['--json', 'run', join(dir, 'plan.json'), '--detach'], { env }),
      ]);
      expect(watched.code).toBe(0);
      expect(watched.stdout).toMatch(/^SUCCEEDED in .*: 2 of 2 steps succeeded$/m);

      expect(JSON.parse(asJson.stdout)).toMatchObject({ id: expect.any(String), totalSteps: 2 });
    });

    it('watch replays a finished execution, and from a sequence on', async () => {
      const [replay, fromThree, fromTheEnd, unknown] = await Promise.all([
        cli(['watch', succeededId], { env }),
        cli(['watch', succeededId, '--after', '3', '--json'], { env }),
        cli(['watch', succeededId, '--after', '6'], { env }),
        cli(['watch', '7b0e8c4e-6f0d-4c2a-9a51-8d6f5a1f0c33'], { env }),
      ]);
      expect(replay.code).toBe(0);
      const lines = replay.stdout.trimEnd().split('\n');
      expect(lines.slice(1).map((line) => line.replace(/(?: {2}| in )\d+(\.\d)? m?s/g, ''))).toEqual([
        'step 1/2 SQL the first five active users (users)  SUCCEEDED  5 records',
        'step 2/2 SQL how many of them  SUCCEEDED  1 record',
        'SUCCEEDED: 2 of 2 steps succeeded',
      ]);

      expect(fromThree.code).toBe(0);
      expect(jsonLines<JsonUpdate>(fromThree.stdout).map((u) => u.sequence)).toEqual([4, 5, 6]);

      // After its last update a finished execution has nothing more to show than its summary.
      expect(fromTheEnd.code).toBe(0);
      expect(fromTheEnd.stdout.trimEnd().split('\n').slice(1)).toEqual([expect.stringMatching(/^SUCCEEDED in .*: 2 of 2 steps succeeded$/)]);

      expect(unknown.code).toBe(3);
      expect(unknown.stderr).toMatch(/^error: .* \(NOT_FOUND\)\n$/);
    });

    onPgliteOnly('ls filters by status and pages with --after', async () => {
      const [failed, firstPage, text] = await Promise.all([
        cli(['ls', '--status', 'FAILED', '--json'], { env }),
        cli(['ls', '--first', '2', '--json'], { env }),
        cli(['ls', '--first', '2', '--status', 'SUCCEEDED,FAILED'], { env }),
      ]);
      expect(failed.code).toBe(0);
      const failedPage = JSON.parse(failed.stdout) as { executions: { id: string; status: string }[] };
      expect(failedPage.executions.length).toBeGreaterThan(0);
      expect(failedPage.executions.every((e) => e.status === 'FAILED')).toBe(true);

      const all = (await server.request(ExecutionsQuery, { first: 100 })).data!.executions.edges.map((e) => e.node.id);
      expect(all.length).toBeGreaterThanOrEqual(4);
      const first = JSON.parse(firstPage.stdout) as {
        executions: { id: string }[];
        pageInfo: { hasNextPage: boolean; endCursor: string };
      };
      expect(first.executions.map((e) => e.id)).toEqual(all.slice(0, 2));
      expect(first.pageInfo.hasNextPage).toBe(true);
      const second = JSON.parse((await cli(['ls', '--first', '2', '--after', first.pageInfo.endCursor, '--json'], { env })).stdout) as {
        executions: { id: string }[];
      };
      expect(second.executions.map((e) => e.id)).toEqual(all.slice(2, 4));

      const lines = text.stdout.trimEnd().split('\n');
      expect(lines[0]).toMatch(/^ID +STATUS +CREATED +DURATION +STEPS +QUERY$/);
      expect(lines.slice(1, 3).every((line) => /^[0-9a-f-]{36} +(SUCCEEDED|FAILED) /.test(line))).toBe(true);
      expect(lines[3]).toMatch(/^next page: npx stepcast ls --after \S+$/);
    });

    onPgliteOnly('show prints the steps, their SQL and samples as tables', async () => {
      const [shown, shownJson] = await Promise.all([cli(['show', succeededId], { env }), cli(['show', succeededId, '--json'], { env })]);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toContain("    SELECT id, email FROM users WHERE status = 'active' ORDER BY id LIMIT 5\n");
      expect(shown.stdout).toMatch(/ {2}sample \(3 of 5 records\):\n {4}id +email\n {4}\d+ +\S+@\S+\n/);
      expect(shown.stdout).toMatch(/ {2}sample \(1 of 1 records\):\n {4}n\n {4}5\n/);
      const asJson = JSON.parse(shownJson.stdout) as { status: string; steps: { sample: unknown[] }[] };
      expect(asJson.status).toBe('SUCCEEDED');
      expect(asJson.steps[0]!.sample).toHaveLength(3);
    });

    it('approve lets a waiting step run; reject fails it', async () => {
      const approveFlow = async () => {
        const following = startCli(['run', '-'], { env, stdin: JSON.stringify(WITH_APPROVAL) });
        const [, id] = await following.waitForOutput(/WAITING for approval: npx stepcast approve (\S+) 2 /);
        const approve = await cli(['approve', id!, '2', '--comment', 'looks right'], { env });
        expect(approve.code).toBe(0);
        expect(approve.stdout.trim()).toMatch(new RegExp(`^approved step 2 of ${id}; the execution is (RUNNING|SUCCEEDED)$`));
        const done = await following.exited;
        expect(done.code).toBe(0);
        expect(done.stdout).toContain('step 2/3 approved by anonymous: looks right\n');
        expect(done.stdout).toMatch(/^SUCCEEDED in .*: 3 of 3 steps succeeded$/m);
      };
      const rejectFlow = async () => {
        const following = startCli(['run', '-'], { env, stdin: JSON.stringify(WITH_APPROVAL) });
        const [, id] = await following.waitForOutput(/WAITING for approval: npx stepcast approve (\S+) 2 /);
        const reject = await cli(['reject', id!, '2', '--comment', 'not now'], { env });
        expect(reject.code).toBe(0);
        const done = await following.exited;
        expect(done.code).toBe(1);
        expect(done.stdout).toContain('step 2/3 rejected by anonymous: not now\n');
        expect(done.stdout).toMatch(/^ {4}REJECTED: /m);
        const again = await cli(['approve', id!, '2'], { env });
        expect(again.code).toBe(3);
        expect(again.stderr).toMatch(/\(BAD_USER_INPUT\)\n$/);
      };
      await Promise.all([approveFlow(), rejectFlow()]);
    });

    onPgliteOnly('ask has the planner write the plan and follows it', async () => {
      const isPlanner = (request: { body: { response_format?: { json_schema?: { name: string } } } }) =>
        request.body.response_format?.json_schema?.name === 'plan';
      llm.script(
        {
          when: isPlanner,
          replies: [{ content: { reasoning: 'count the suspended users', steps: [{ kind: 'SQL', queryContext: 'suspended users', entity: 'users', reasoning: null, critical: true }] } }],
        },
        {
          when: (request) => !isPlanner(request) && promptOf(request).includes('What this step must find: suspended users'),
          replies: [{ content: { sql: "SELECT count(*) AS suspended FROM users WHERE status = 'suspended'", explanation: '' } }],
        },
      );
      const result = await cli(['ask', 'How', 'many users are suspended?'], { env });
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(/^planned 1 step:\n {2}1\. SQL suspended users\nexecution \S+ \(correlation \S+\): How many users are suspended\?\n/);
      expect(result.stdout).toMatch(/^step 1\/1 SQL suspended users \(users\) {2}SUCCEEDED {2}1 record/m);
      expect(result.stdout).toMatch(/^SUCCEEDED in .*: 1 of 1 steps succeeded, \d+ tokens$/m);
    });

    it('reconnects after the connection is cut while following, and misses and repeats no update', async () => {
      const proxy = await startCuttableProxy(new URL(server.url));
      try {
        const following = startCli(['run', '-', '--json', '--url', proxy.url], { stdin: JSON.stringify(WITH_APPROVAL) });
        const [, id] = await following.waitForOutput(/"executionId":"([^"]+)","sequence":\d+,"type":"STEP_WAITING"/);
        proxy.cut();
        // While the CLI cannot connect, the run goes on to its end.
        const ended = server.subscribeWs(StepUpdatesSubscription, { executionId: id! });
        expect((await server.request(ApproveStepMutation, { executionId: id!, index: 2 })).errors).toBeUndefined();
        const all = (await ended).map((result) => result.data!.stepUpdates.sequence);
        proxy.resume();
        const result = await following.exited;
        expect(result.code).toBe(0);
        expect(result.stderr).toMatch(/connection lost .*; reconnecting in .* after update \d+/);
        const seen = jsonLines<JsonUpdate>(result.stdout).map((u) => u.sequence);
        expect(seen).toEqual(all.length > 0 ? Array.from({ length: Math.max(...all) }, (_, i) => i + 1) : []);
        expect(jsonLines<JsonUpdate>(result.stdout).at(-1)).toMatchObject({ type: 'EXECUTION_SUCCEEDED' });
      } finally {
        await proxy.close();
      }
    });

    it('follows on across a restart of the server, with no update missed or repeated', async () => {
      const proxy = await startCuttableProxy(new URL(server.url));
      try {
        const following = startCli(['run', '-', '--json', '--url', proxy.url], { stdin: JSON.stringify(WITH_APPROVAL) });
        const [, id] = await following.waitForOutput(/"executionId":"([^"]+)","sequence":\d+,"type":"STEP_WAITING"/);
        // The server completes open subscriptions as it stops: the CLI must take that for a lost connection, not an end.
        await server.restart();
        // The restarted server listens on a new port: the proxy, and the later tests, go there.
        proxy.retarget(new URL(server.url));
        env.STEPCAST_URL = server.url;
        expect((await server.request(ApproveStepMutation, { executionId: id!, index: 2 })).errors).toBeUndefined();
        const result = await following.exited;
        expect(result.stderr).toMatch(/connection lost .*; reconnecting in /);
        expect(result.code).toBe(0);
        const updates = jsonLines<JsonUpdate>(result.stdout);
        expect(updates.map((u) => u.sequence)).toEqual(updates.map((_, i) => i + 1));
        expect(updates.at(-1)).toMatchObject({ type: 'EXECUTION_SUCCEEDED' });
        expect(updates.at(-1)!.sequence).toBe((await fetchExecution(server, id!)).lastSequence);
      } finally {
        await proxy.close();
      }
    });

    onPgliteOnly('Ctrl-C while following detaches without cancelling, and says how to re-attach', async () => {
      const following = startCli(['run', '-'], { env, stdin: JSON.stringify(WITH_APPROVAL) });
      const [, id] = await following.waitForOutput(/WAITING for approval: npx stepcast approve (\S+) 2 /);
      following.child.kill('SIGINT');
      const result = await following.exited;
      expect(result.code).toBe(130);
      expect(result.stderr).toMatch(new RegExp(`^detached from ${id} after update (\\d+); it goes on\\. Re-attach with:\\n {2}npx stepcast watch ${id} --after \\1\\n$`));
      expect((await fetchExecution(server, id!)).status).toBe('WAITING');
      expect((await cli(['cancel', id!], { env })).code).toBe(0);
    });
  });

  // The credential is the server's to check, on either database; the CLI's part (a header, connectionParams) is tested once.
  describe.skipIf(skipReason !== null || backend !== 'pglite')(`stepcast CLI with authentication on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    let key: string;
    beforeAll(async () => {
      server = await startTestServer(backend, { env: { STEPCAST_AUTH: 'on', STEPCAST_DEMO: 'on', STEPCAST_DEMO_API: 'off' } });
      key = (await createApiKey(server.app.database, DEMO_TENANT_ID, 'cli')).token;
    });
    afterAll(async () => {
      await server?.close();
    });

    it('refuses without a key (exit 3), and runs and follows with --key or STEPCAST_API_KEY', async () => {
      const plan = JSON.stringify({ query: 'one step', steps: [sqlStep('SELECT count(*) AS n FROM users')] });
      const id = await submitPlan(server.as(`Bearer ${key}`), JSON.parse(plan) as PlanInput);
      const [refused, withFlag, withEnv, wrongKey] = await Promise.all([
        cli(['run', '-', '--url', server.url], { stdin: plan }),
        cli(['run', '-', '--url', server.url, '--key', key], { stdin: plan }),
        cli(['watch', id], { env: { STEPCAST_URL: server.url, STEPCAST_API_KEY: key } }),
        cli(['watch', id, '--key', 'sc_nope_nope'], { env: { STEPCAST_URL: server.url } }),
      ]);
      expect(refused.code).toBe(3);
      expect(refused.stderr).toMatch(/^error: .*\(UNAUTHENTICATED\)\n$/);

      expect(withFlag.stderr).toBe('');
      expect(withFlag.code).toBe(0);
      expect(withFlag.stdout).toMatch(/^SUCCEEDED in .*: 1 of 1 steps succeeded$/m);

      expect(withEnv.code).toBe(0);
      expect(withEnv.stdout).toMatch(/^SUCCEEDED in .*: 1 of 1 steps succeeded$/m);
      expect(wrongKey.code).toBe(3);
      expect(wrongKey.stderr).toMatch(/\(UNAUTHENTICATED\)\n$/);
    });
  });
}
