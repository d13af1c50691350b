import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareResults } from '../eval/compare.js';
import { evaluate, type QuestionResult } from '../eval/harness.js';
import { loadQuestions, selectQuestions, type Question } from '../eval/questions.js';
import { summarize } from '../eval/report.js';
import { startEvalService, type EvalService } from '../eval/service.js';
import { promptOf, startScriptedLlm, type RecordedRequest, type ScriptedLlm } from './fixtures/scripted-llm.js';
import { backends, postgresUrl, tenantRolesOf } from './support/database.js';
import { seedPgliteDataDir } from './support/pglite-template.js';
import { runEvalCommand, startEvalCommand } from './support/process.js';

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

/** What the scripted model answers for one question: the planner's steps (end-to-end), then each SQL it is asked for, in order. */
interface QuestionScript {
  plan?: string[];
  sql: string[];
}

const isPlanner = (request: RecordedRequest) => request.body.response_format?.json_schema?.name === 'plan';

const all = await loadQuestions();
const pick = (...ids: string[]) => selectQuestions(all, { ids });

/**
 * A model on the scripted server: each request is for the question whose text its prompt holds, and gets that
 * question's next answer. Every answer has a usage of its own (prompt 1000 + n, completion 10 + n for the n-th
 * answer of the run), so that the tokens of each question are known.
 */
function scriptModel(llm: ScriptedLlm, questions: readonly Question[], scripts: Record<string, QuestionScript>) {
  const tokens = new Map<string, { promptTokens: number; completionTokens: number; totalTokens: number }>();
  const next = new Map<string, number>();
  let answers = 0;
  llm.script({
    when: () => true,
    repeat: true,
    replies: [
      (request) => {
        const prompt = promptOf(request);
        const question = questions.filter((q) => prompt.includes(q.question)).sort((a, b) => b.question.length - a.question.length)[0];
        const script = question && scripts[question.id];
        if (!question || !script) return { status: 400, body: { error: { message: 'no script for this question' } } };
        answers += 1;
        const usage: Usage = { prompt_tokens: 1000 + answers, completion_tokens: 10 + answers };
        const sum = tokens.get(question.id) ?? { promptTokens: 0, completionTokens: 0, totalTokens: 0 };
        tokens.set(question.id, {
          promptTokens: sum.promptTokens + usage.prompt_tokens,
          completionTokens: sum.completionTokens + usage.completion_tokens,
          totalTokens: sum.totalTokens + usage.prompt_tokens + usage.completion_tokens,
        });
        if (isPlanner(request)) {
          const steps = script.plan!.map((queryContext) => ({ kind: 'SQL', queryContext, entity: null, reasoning: null, critical: true }));
          return { content: { reasoning: 'scripted', steps }, usage };
        }
        const index = next.get(question.id) ?? 0;
        next.set(question.id, index + 1);
        const sql = script.sql[index];
        if (sql === undefined) return { status: 400, body: { error: { message: `no SQL answer ${index + 1} for ${question.id}` } } };
        return { content: { sql, explanation: 'scripted' }, usage };
      },
    ],
  });
  return { tokensOf: (id: string) => tokens.get(id) };
}

const goldOf = (id: string) => all.find((question) => question.id === id)!.gold;

const byId = (results: readonly QuestionResult[]) => Object.fromEntries(results.map((result) => [result.id, result]));

const GOLD: Record<string, QuestionScript> = {
  'sql-01': { sql: ['SELECT count(*) AS users FROM users'] },
  'sql-14': { sql: ['SELECT id, name FROM users ORDER BY created_at DESC, id LIMIT 5'] },
  'two-01': {
    sql: [
      "SELECT id FROM users WHERE email = 'hedy.turing2@example.com'",
      'SELECT g.name FROM groups g JOIN group_members m ON m.group_id = g.id JOIN step_1 s ON s.id = m.user_id',
    ],
  },
  'e2e-04': {
    plan: ['the user with that email', 'the names of the applications assigned to that user (step 1)'],
    sql: [
      "SELECT id FROM users WHERE email = 'frances.hopper4@example.com'",
      'SELECT a.name FROM applications a JOIN app_assignments x ON x.app_id = a.id JOIN step_1 s ON s.id = x.user_id',
    ],
  },
};

describe('comparing an answer with the gold answer', () => {
  const set = (columns: string[], rows: unknown[][]) => ({ columns, rows });

  it('pairs columns by the whole rows, not by the first column whose values fit', () => {
    // Each answer column holds the values of each gold column; only a = y, b = x gives the gold rows.
    const gold = set(['a', 'b'], [[1, 2], [2, 3], [3, 1]]);
    expect(compareResults(gold, set(['x', 'y'], [[2, 1], [3, 2], [1, 3]]), { ordered: false })).toMatchObject({ verdict: 'match', reason: 'columns y, x' });
    expect(compareResults(gold, set(['x', 'y'], [[1, 1], [2, 2], [3, 3]]), { ordered: false }).verdict).toBe('mismatch');
  });

  it('counts every row: the same distinct rows in other numbers do not match', () => {
    const gold = set(['name'], [['a'], ['a'], ['b']]);
    expect(compareResults(gold, set(['name'], [['a'], ['b'], ['b']]), { ordered: false }).verdict).toBe('mismatch');
    expect(compareResults(gold, set(['name'], [['b'], ['a'], ['a']]), { ordered: false }).verdict).toBe('match');
    expect(compareResults(gold, set(['name'], [['b'], ['a'], ['a']]), { ordered: true }).verdict).toBe('mismatch');
  });

  it('compares values, not how the database or the driver wrote them', () => {
    const gold = set(['n', 'share', 'at', 'ok'], [[2000, '80.0', '2023-12-31T15:01:00.000Z', true]]);
    const same = set(['n', 'share', 'at', 'ok'], [['2000', 80, '2023-12-31 16:01:00+01', true]]);
    expect(compareResults(gold, same, { ordered: false }).verdict).toBe('match');
    for (const other of [[2001, 80, '2023-12-31T15:01:00Z', true], [2000, 80.05, '2023-12-31T15:01:00Z', true], [2000, 80, '2023-12-31T15:01:00Z', 'true'], [2000, 80, null, true]]) {
      expect(compareResults(gold, set(['n', 'share', 'at', 'ok'], [other]), { ordered: false }).verdict, JSON.stringify(other)).toBe('mismatch');
    }
  });
});

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`the evaluation harness on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let llm: ScriptedLlm;
    let service: EvalService;
    let dataDir: string | undefined;
    /** A service of the developer's, running with the ports of the environment the evaluation is started in. */
    let running: Server;
    beforeAll(async () => {
      running = createServer().listen(0, '127.0.0.1');
      await once(running, 'listening');
      const busyPort = String((running.address() as AddressInfo).port);
      llm = await startScriptedLlm();
      if (backend === 'pglite') {
        dataDir = await mkdtemp(join(tmpdir(), 'stepcast-eval-test-'));
        await seedPgliteDataDir(dataDir);
      }
      service = await startEvalService({
        // 200 demo users: every gold answer is computed on the data it runs on, whatever its size.
        env: {
          OPENAI_BASE_URL: llm.baseUrl,
          OPENAI_API_KEY: 'test-key',
          STEPCAST_MODEL: 'scripted-model',
          STEPCAST_DEMO_USERS: '200',
          // Taken: the evaluation's own service listens on ports of its own.
          STEPCAST_METRICS_PORT: busyPort,
          STEPCAST_DEMO_API_PORT: busyPort,
        },
        concurrency: 2,
        stepTimeoutMs: 20_000,
        databaseUrl: backend === 'postgres' ? postgresUrl : undefined,
        dataDir,
      });
    });
    afterAll(async () => {
      await service?.close();
      await llm?.close();
      if (dataDir) await rm(dataDir, { recursive: true, force: true });
      running?.close();
    });

    const run = (questions: Question[]) =>
      evaluate({ url: service.url, questions, concurrency: 2, stepTimeoutMs: 20_000, hooks: service.hooks });

    it('scores 100 % for a model that answers the gold SQL, with the tokens the model reported', async () => {
      const questions = pick('sql-01', 'sql-14', 'two-01', 'e2e-04');
      const model = scriptModel(llm, questions, GOLD);
      const results = await run(questions);
      for (const result of results) {
        expect(result, result.reason).toMatchObject({ verdict: 'match', correct: true, status: 'SUCCEEDED', repairRounds: 0, guardRejections: 0 });
        expect(result.tokens).toEqual(model.tokensOf(result.id));
        expect(result.latencyMs).toBeGreaterThan(0);
      }
      expect(byId(results)['two-01']!.readsStep1).toBe(true);
      expect(byId(results)['e2e-04']!.steps).toHaveLength(2);
      const summary = summarize(results);
      expect(summary).toMatchObject({ questions: 4, scored: 4, correct: 4, accuracy: 1, repairRounds: 0, guardRejections: 0 });
      expect(summary.tokens.totalTokens).toBe(questions.reduce((sum, q) => sum + model.tokensOf(q.id)!.totalTokens, 0));
      // Four questions, seven model answers: one plan and six statements.
      expect(llm.requests).toHaveLength(7);
    });

    it('scores a model that answers some questions wrong exactly: columns by value in any order and name, rows in order only when asked', async () => {
      const questions = pick('sql-01', 'sql-02', 'sql-09', 'sql-12', 'sql-14', 'two-01', 'e2e-04');
      scriptModel(llm, questions, {
        'sql-01': { sql: ["SELECT count(*) AS users FROM users WHERE status = 'active'"] },
        'sql-02': { sql: ["SELECT count(*) FROM users WHERE status = 'suspended'"] },
        'sql-09': { sql: ['SELECT email AS e, name AS who FROM users WHERE id = 42'] },
        'sql-12': { sql: ['SELECT status, count(*) AS users, count(*) FILTER (WHERE mfa_enabled) AS with_mfa FROM users GROUP BY status'] },
        // The five newest, but ordered by id: the question asks for newest first.
        'sql-14': { sql: ['SELECT id, name FROM (SELECT id, name FROM users ORDER BY created_at DESC, id LIMIT 5) AS newest ORDER BY id'] },
        'two-01': GOLD['two-01']!,
        'e2e-04': { plan: GOLD['e2e-04']!.plan, sql: [GOLD['e2e-04']!.sql[0]!, 'SELECT x.app_id FROM app_assignments x JOIN step_1 s ON s.id = x.user_id'] },
      });
      const results = byId(await run(questions));
      expect(results['sql-01']).toMatchObject({ verdict: 'mismatch', correct: false, reason: 'no column holds the values of gold column 1 (users)' });
      expect(results['sql-02']).toMatchObject({ verdict: 'match', correct: true });
      expect(results['sql-09']).toMatchObject({ verdict: 'match', correct: true });
      expect(results['sql-12']).toMatchObject({ verdict: 'match-with-extra-columns', correct: false, correctWithExtraColumns: true });
      expect(results['sql-14']).toMatchObject({ verdict: 'mismatch', correct: false });
      expect(results['sql-14']!.reason).toMatch(/in that order|another order/);
      expect(results['two-01']).toMatchObject({ verdict: 'match', correct: true });
      expect(results['e2e-04']).toMatchObject({ verdict: 'mismatch', correct: false });
      const summary = summarize(Object.values(results));
      expect(summary).toMatchObject({ scored: 7, correct: 3, accuracy: 3 / 7, correctWithExtraColumns: 4, accuracyWithExtraColumns: 4 / 7, noAnswer: 0 });
    });

    it('counts repair rounds and guard refusals, and runs each refused statement to tell those that were right', async () => {
      const questions = pick('sql-01', 'sql-02', 'sql-04', 'two-01');
      const model = scriptModel(llm, questions, {
        // Refused (a system column), and right: its count is the gold count. The repair is gold.
        'sql-01': { sql: ['SELECT count(xmin) AS users FROM users', GOLD['sql-01']!.sql[0]!] },
        // Refused, and wrong: it counts every user, not the suspended ones.
        'sql-02': { sql: ['SELECT count(xmin) AS suspended FROM users', "SELECT count(*) AS suspended FROM users WHERE status = 'suspended'"] },
        // Refused twice (another schema, then a system column; the second was right): the step fails.
        'sql-04': {
          sql: ['SELECT count(*) AS n FROM pg_catalog.pg_class', "SELECT count(xmin) AS security_groups FROM groups WHERE type = 'security'"],
        },
        // Step 2 refused while it reads step_1, and right when run on step 1's records.
        'two-01': {
          sql: [
            GOLD['two-01']!.sql[0]!,
            'SELECT g.name FROM groups g JOIN group_members m ON m.group_id = g.id JOIN step_1 s ON s.id = m.user_id WHERE m.xmin IS NOT NULL',
            GOLD['two-01']!.sql[1]!,
          ],
        },
      });
      const results = byId(await run(questions));
      expect(results['sql-01']).toMatchObject({ verdict: 'match', repairRounds: 1, guardRejections: 1, guardRejectionsOfCorrect: 1 });
      expect(results['sql-01']!.refused).toEqual([
        expect.objectContaining({ step: 1, attempt: 1, sql: 'SELECT count(xmin) AS users FROM users', wouldHaveBeen: 'correct' }),
      ]);
      expect(results['sql-02']).toMatchObject({ verdict: 'match', repairRounds: 1, guardRejections: 1, guardRejectionsOfCorrect: 0 });
      expect(results['sql-02']!.refused[0]).toMatchObject({ wouldHaveBeen: 'wrong' });
      expect(results['sql-04']).toMatchObject({ verdict: 'no-answer', correct: false, status: 'FAILED', repairRounds: 1, guardRejections: 2, guardRejectionsOfCorrect: 1 });
      expect(results['sql-04']!.refused.map((refused) => [refused.attempt, refused.wouldHaveBeen])).toEqual([
        [1, 'wrong'],
        [2, 'correct'],
      ]);
      expect(results['sql-04']!.reason).toMatch(/SQL_REJECTED/);
      expect(results['two-01']).toMatchObject({ verdict: 'match', repairRounds: 1, guardRejections: 1, guardRejectionsOfCorrect: 1 });
      expect(results['two-01']!.refused[0]).toMatchObject({ step: 2, attempt: 1, wouldHaveBeen: 'correct' });
      for (const question of questions) expect(results[question.id]!.tokens).toEqual(model.tokensOf(question.id));
      expect(summarize(Object.values(results))).toMatchObject({
        correct: 3,
        noAnswer: 1,
        repairRounds: 4,
        guardRejections: 5,
        guardRejectionsOfCorrect: 3,
        guardRejectionsUnchecked: 0,
      });
    });

    it("leaves unchecked the refused statements it must not run: a volatile function (set_config would give it the service's own role), or SQL the log kept only the start of", async () => {
      const questions = pick('sql-02', 'sql-07', 'sql-21');
      // Right, but over STEPCAST_MAX_SQL_CHARS (20,000): the log line keeps its first 20,000 characters.
      const long = `${goldOf('sql-02')} /* ${'x'.repeat(20_000)} */`;
      scriptModel(llm, questions, {
        'sql-02': { sql: [long, goldOf('sql-02')] },
        // Right, if run; but set_config('role', ...) ends the tenant's role for the session's (the service's).
        'sql-07': { sql: ["SELECT count(*) AS mfa_users FROM users WHERE mfa_enabled AND set_config('role', session_user, true) IS NOT NULL", goldOf('sql-07')] },
        // date() is not allowed either, but it is stable: run, and right.
        'sql-21': {
          sql: ["SELECT count(*) AS users FROM users WHERE date(last_login_at AT TIME ZONE 'UTC') BETWEEN '2024-12-01' AND '2024-12-31'", goldOf('sql-21')],
        },
      });
      const results = byId(await run(questions));
      expect(results['sql-07']).toMatchObject({ verdict: 'match', guardRejections: 1, guardRejectionsOfCorrect: 0 });
      expect(results['sql-07']!.refused).toEqual([expect.objectContaining({ wouldHaveBeen: 'unchecked', note: expect.stringMatching(/set_config.*not run/) })]);
      expect(results['sql-21']).toMatchObject({ verdict: 'match', guardRejections: 1, guardRejectionsOfCorrect: 1 });
      expect(results['sql-02']).toMatchObject({ verdict: 'match', guardRejections: 1, guardRejectionsOfCorrect: 0 });
      expect(results['sql-02']!.refused).toEqual([
        expect.objectContaining({ sql: long.slice(0, 20_000), wouldHaveBeen: 'unchecked', note: `the log keeps the first 20000 of its ${long.length} characters: not run` }),
      ]);
      expect(summarize(Object.values(results))).toMatchObject({ guardRejections: 3, guardRejectionsOfCorrect: 1, guardRejectionsUnchecked: 2 });
    });
  });
}

describe('npm run eval', () => {
  let llm: ScriptedLlm;
  let dir: string;
  /**
   * TMPDIR of the commands that start a service: where they make their directory (the PGlite database), so that
   * a test can see it is gone, and so that it goes with `dir` should a command be killed.
   */
  let tmp: string;
  const evalDirectories = async () => (await readdir(tmp)).filter((name) => name.startsWith('stepcast-eval-'));
  beforeAll(async () => {
    llm = await startScriptedLlm();
    dir = await mkdtemp(join(tmpdir(), 'stepcast-eval-test-'));
    tmp = join(dir, 'tmp');
    await mkdir(tmp);
  });
  afterAll(async () => {
    await llm?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('prints the table and writes the JSON report for comparing models', async ({ signal }) => {
    const questions = pick('sql-01', 'two-01');
    const model = scriptModel(llm, questions, {
      'sql-01': { sql: ['SELECT count(xmin) AS users FROM users', GOLD['sql-01']!.sql[0]!] },
      'two-01': GOLD['two-01']!,
    });
    const report = join(dir, 'report.json');
    const log = join(dir, 'service.log');
    const { code, stdout, stderr } = await runEvalCommand(
      ['--ids', 'sql-01,two-01', '--log', log],
      {
        OPENAI_BASE_URL: llm.baseUrl,
        OPENAI_API_KEY: 'test-key',
        STEPCAST_MODEL: 'scripted-model',
        STEPCAST_SQL_REPAIR_ROUNDS: '2',
        STEPCAST_DEMO_USERS: '200',
        EVAL_REPORT: report,
        TMPDIR: tmp,
      },
      { signal },
    );
    expect(code, stderr).toBe(0);
    // Its PGlite directory is removed at the end.
    expect(await evalDirectories()).toEqual([]);
    expect(stdout).toMatch(/^question +kind +difficulty +result +refused \(correct\) +repairs +tokens +latency/m);
    expect(stdout).toMatch(/^sql-01 +sql +easy +ok +1 \(1\) +1 +\d+ +[\d.]+ s$/m);
    expect(stdout).toMatch(/^two-01 +two-step +easy +ok +0 \(0\) +0 /m);
    expect(stdout).toMatch(/^total +2 +100\.0 % \(2\) +100\.0 % \(2\) +1 \(1\) +1 /m);
    expect(stderr).toContain(`report: ${report}`);

    const written = JSON.parse(await readFile(report, 'utf8')) as {
      model: { models: Record<string, string>; baseUrlHost: string; settings: Record<string, unknown>; environment: Record<string, string> };
      run: Record<string, unknown>;
      summary: { total: Record<string, unknown> };
      questions: QuestionResult[];
    };
    expect(written.model.models).toEqual({ sql: 'scripted-model', api: 'scripted-model', planner: 'scripted-model' });
    expect(written.model.baseUrlHost).toBe(new URL(llm.baseUrl).host);
    expect(written.model.settings).toMatchObject({ sqlRepairRounds: 2 });
    // The settings that shape the model's answers, and no other (STEPCAST_DEMO_USERS is in run.demoUsers).
    expect(written.model.environment).toEqual({ STEPCAST_MODEL: 'scripted-model', STEPCAST_SQL_REPAIR_ROUNDS: '2' });
    expect(JSON.stringify(written)).not.toContain('test-key');
    expect(written.run).toMatchObject({ backend: 'pglite', demoUsers: 200, concurrency: 1 });
    const tokens = questions.reduce((sum, q) => sum + model.tokensOf(q.id)!.totalTokens, 0);
    expect(written.summary.total).toMatchObject({ scored: 2, correct: 2, accuracy: 1, guardRejections: 1, guardRejectionsOfCorrect: 1, repairRounds: 1 });
    expect(written.summary.total.tokens).toMatchObject({ totalTokens: tokens });
    expect(written.questions.map((q) => [q.id, q.verdict, q.tokens.totalTokens])).toEqual(
      questions.map((q) => [q.id, 'match', model.tokensOf(q.id)!.totalTokens]),
    );
    const logLines = (await readFile(log, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { level: number; msg: string; sql?: string });
    // At debug: the statement and the database's error may hold tenant data.
    expect(logLines.find((line) => line.msg === 'agent-written statement failed')).toMatchObject({ level: 20, sql: 'SELECT count(xmin) AS users FROM users' });
  });

  it.skipIf(!postgresUrl)('stops at SIGINT with 130, and removes its database, its tenant roles and its directory first', async ({ signal }) => {
    let asked!: () => void;
    const asking = new Promise<void>((resolve) => (asked = resolve));
    llm.script({
      when: () => true,
      repeat: true,
      replies: [
        () => {
          asked();
          return { hang: true };
        },
      ],
    });
    const before = await evalDirectories();
    const ownDirectories = async () => (await evalDirectories()).filter((name) => !before.includes(name));
    const report = join(dir, 'stopped.json');
    const command = startEvalCommand(
      ['--ids', 'sql-01', '--database-url', postgresUrl!, '--report', report],
      { OPENAI_BASE_URL: llm.baseUrl, OPENAI_API_KEY: 'test-key', STEPCAST_MODEL: 'scripted-model', STEPCAST_DEMO_USERS: '200', TMPDIR: tmp },
      { signal },
    );
    const admin = postgres(postgresUrl!, { max: 1, onnotice: () => undefined });
    let database: string | undefined;
    try {
      // Stopped while the model is asked its question: the gold answers are in, the question is not.
      await Promise.race([
        asking,
        command.exited.then(({ stderr }) => {
          throw new Error(`it exited before it asked the model: ${stderr}`);
        }),
      ]);
      const rows = await admin<{ datname: string }[]>`SELECT datname FROM pg_database WHERE datname LIKE ${`stepcast_eval_%_${command.child.pid}`}`;
      expect(rows).toHaveLength(1);
      database = rows[0]!.datname;
      expect(await tenantRolesOf(admin, database)).not.toEqual([]);
      expect(await ownDirectories()).toHaveLength(1);

      command.child.kill('SIGINT');
      const { code, stderr } = await command.exited;
      expect(code, stderr).toBe(130);
      expect(stderr).toContain("SIGINT: stopping; removing the evaluation's database first");
      expect(await admin`SELECT 1 FROM pg_database WHERE datname = ${database}`).toHaveLength(0);
      expect(await tenantRolesOf(admin, database)).toEqual([]);
      expect(await ownDirectories()).toEqual([]);
      await expect(readFile(report)).rejects.toThrow(/ENOENT/);
    } finally {
      // Whatever the command left, should the test fail before it cleaned up.
      if (command.child.exitCode === null && command.child.signalCode === null) command.child.kill('SIGKILL');
      await command.exited.catch(() => undefined);
      if (database) {
        await admin.unsafe(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
        for (const role of await tenantRolesOf(admin, database)) await admin.unsafe(`DROP ROLE IF EXISTS "${role}"`);
      }
      await admin.end();
    }
  });

  it('exits 64 with a clear message when EVAL_DATABASE_URL is not a PostgreSQL URL', async ({ signal }) => {
    const { code, stderr } = await runEvalCommand(['--ids', 'sql-01'], { EVAL_DATABASE_URL: 'localhost:5432/postgres' }, { signal });
    expect(code).toBe(64);
    expect(stderr).toBe('error: --database-url (EVAL_DATABASE_URL) must be a postgres:// or postgresql:// URL\n');
  });

  it('says which settings to make, and exits 1, when no model is configured', async ({ signal }) => {
    const report = join(dir, 'not-written.json');
    const { code, stderr } = await runEvalCommand(['--ids', 'sql-01', '--report', report], {}, { signal });
    expect(code).toBe(1);
    expect(stderr).toMatch(/no model is configured: set OPENAI_BASE_URL .* or OPENAI_API_KEY/);
    await expect(readFile(report)).rejects.toThrow(/ENOENT/);
  });
});
