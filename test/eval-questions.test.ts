import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareResults } from '../eval/compare.js';
import { runGolds, type GoldAnswer } from '../eval/harness.js';
import { DIFFICULTIES, KINDS, loadQuestions } from '../eval/questions.js';
import { backends } from './support/database.js';
import { startTestServer, type TestServer } from './support/server.js';

type SelectNode = { SelectStmt?: { sortClause?: unknown[]; limitCount?: unknown; larg?: unknown } };

/** The top-level SELECT of a statement, as the real Postgres parser reads it. */
async function topSelect(sql: string) {
  const parser = await import('libpg-query');
  await parser.loadModule();
  const tree = (await parser.parse(sql)) as { stmts: { stmt: SelectNode }[] };
  expect(tree.stmts).toHaveLength(1);
  return tree.stmts[0]!.stmt.SelectStmt!;
}

/** The keys of an ORDER BY list, split at the commas outside parentheses. */
function sortKeys(list: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < list.length; i++) {
    if (list[i] === '(') depth++;
    else if (list[i] === ')') depth--;
    else if (list[i] === ',' && depth === 0) {
      keys.push(list.slice(start, i).trim());
      start = i + 1;
    }
  }
  return [...keys, list.slice(start).trim()];
}

/**
 * A gold `... ORDER BY a, b LIMIT n` as `... ORDER BY a FETCH FIRST n ROWS WITH TIES`: every key but the last
 * (the tie-breaker), or the only key. More than n rows means rows tie across the cut, and which of them the
 * question asks for would depend on a tie-breaker a model need not choose as the gold SQL did.
 */
function withTiesAtCut(gold: string): { sql: string; limit: number } | null {
  const match = /^(.*)\bORDER BY\s+(.+?)\s+LIMIT\s+(\d+)\s*$/is.exec(gold);
  if (!match) return null;
  const keys = sortKeys(match[2]!);
  const cutKeys = keys.length > 1 ? keys.slice(0, -1) : keys;
  return { sql: `${match[1]}ORDER BY ${cutKeys.join(', ')} FETCH FIRST ${match[3]} ROWS WITH TIES`, limit: Number(match[3]) };
}

const questions = await loadQuestions();
/** Gold answers by backend, to check that both give the same (a gold answer that depends on the database is no gold). */
const answers = new Map<string, Map<string, GoldAnswer>>();

describe('the evaluation question set', () => {
  it('has at least 40 questions, with every kind at every difficulty', () => {
    expect(questions.length).toBeGreaterThanOrEqual(40);
    for (const kind of KINDS) {
      for (const difficulty of DIFFICULTIES) {
        expect(questions.filter((q) => q.kind === kind && q.difficulty === difficulty).length, `${kind}/${difficulty}`).toBeGreaterThan(0);
      }
    }
  });

  it('orders each gold answer that asks for an order, and never cuts an unordered result with LIMIT', async () => {
    for (const question of questions) {
      const select = await topSelect(question.gold);
      const ordered = Array.isArray(select.sortClause) && select.sortClause.length > 0;
      if (question.ordered) expect(ordered, `${question.id} asks for an order; its gold has no ORDER BY`).toBe(true);
      if (select.limitCount !== undefined) {
        expect(ordered, `${question.id} has LIMIT without ORDER BY`).toBe(true);
        expect(withTiesAtCut(question.gold), `${question.id}: write LIMIT n last, right after the ORDER BY`).not.toBeNull();
      }
    }
  });
});

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`gold answers on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    const golds = new Map<string, GoldAnswer>();
    beforeAll(async () => {
      // The dataset the evaluation runs on: the demo tenant at its default size.
      server = await startTestServer(backend, {
        env: { STEPCAST_DEMO_USERS: '2000' },
      });
      answers.set(backend, golds);
    });
    afterAll(async () => {
      await server?.close();
    });

    it('runs every gold SQL through the guard and the service, each with a non-empty, whole result', async () => {
      for (const [id, gold] of await runGolds(server.url, questions, 10_000)) {
        if (gold instanceof Error) throw new Error(`${id}: ${gold.message}`);
        expect(gold.recordCount, id).toBeGreaterThan(0);
        expect(gold.result.rows, id).toHaveLength(gold.recordCount);
        golds.set(id, gold);
      }
      expect(golds.size).toBe(questions.length);
    });

    it('cuts no tie with LIMIT: the rows a "top n" question asks for do not depend on a tie-breaker', async () => {
      const cut = questions.flatMap((question) => {
        const variant = withTiesAtCut(question.gold);
        return variant ? [{ ...question, gold: variant.sql, limit: variant.limit }] : [];
      });
      expect(cut.length).toBeGreaterThan(0);
      const answers = await runGolds(server.url, cut, 10_000);
      for (const question of cut) {
        const answer = answers.get(question.id)!;
        if (answer instanceof Error) throw new Error(`${question.id}: ${answer.message}`);
        expect(answer.recordCount, `${question.id}: rows tie with its last row under ${question.gold}`).toBe(question.limit);
      }
    });
  });
}

describe.skipIf(backends.some(({ skipReason }) => skipReason !== null))('gold answers on both backends', () => {
  it('are the same: no gold answer depends on the database it runs on', () => {
    const [pglite, postgres] = [answers.get('pglite')!, answers.get('postgres')!];
    for (const question of questions) {
      const [a, b] = [pglite.get(question.id)!, postgres.get(question.id)!];
      expect(compareResults(a.result, b.result, { ordered: question.ordered }).verdict, question.id).toBe('match');
      expect(b.result.columns, question.id).toEqual(a.result.columns);
    }
  });
});
